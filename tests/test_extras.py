"""Optional dependencies say what they are: vitlens works without each extra and says what is
missing when a feature needs one; `[dev]` installs all of them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from vitlens.errors import VitlensError

ROOT = Path(__file__).resolve().parents[1]


def test_dev_installs_every_optional_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert {"timm", "hf", "pandas", "tensorboard"} <= set(extras)
    dev = " ".join(extras["dev"])
    assert "vitlens[timm,hf,pandas,tensorboard]" in dev
    assert any(d.startswith("pillow") for d in project["dependencies"])
    assert not any(d.startswith("tensorboard") for d in project["dependencies"])


def test_training_without_tensorboard_prints_one_notice(monkeypatch, tmp_path, capsys):
    from vitlens.train.loop import _tensorboard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    assert _tensorboard(tmp_path) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vitlens[tensorboard]" in err


def test_vitlens_works_without_transformers_and_says_what_hf_needs():
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "from vitlens.anatomy import describe\n"
        "from vitlens.models import create_model\n"
        "assert describe(create_model('vit_nano'))[0].name == 'embed'\n"
        "from vitlens.errors import VitlensError\n"
        "from vitlens.models.foreign import build_foreign\n"
        "try:\n"
        "    build_foreign('hf:x', num_classes=2, image_size=32, in_chans=3)\n"
        "except VitlensError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install 'vitlens[hf]'" in done.stdout


def test_to_frame_without_pandas_says_so(monkeypatch):
    from vitlens.analysis.variance import VarianceResult

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(VitlensError, match=r"vitlens\[pandas\]"):
        VarianceResult(names=["embed"], variance=[1.0]).to_frame()
