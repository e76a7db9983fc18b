"""`vitlens study --runs`: the analyses and the report on runs the study did not train."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vitlens.study import Study, StudyPlan, runs_overrides


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from vitlens.config import make_config
    from vitlens.train import Trainer

    root = tmp_path_factory.mktemp("runs")
    for model in ("vit_nano", "resnet_nano"):
        cfg = make_config("quick", model=model, epochs=1, fraction=0.01)
        Trainer(cfg, root / model, quiet=True).run()
    return root


def test_a_study_of_existing_runs_trains_nothing(two_runs, tmp_path):
    paths = [str(two_runs / "vit_nano"), str(two_runs / "resnet_nano")]
    plan = StudyPlan.from_preset(
        "quick", analyses=["fourier", "hessian"], **runs_overrides(paths, None)
    )
    plan = plan.with_overrides(budget={"fourier": [1, 16], "hessian": [1, 8]})
    assert plan.models == ["vit_nano", "resnet_nano"] and plan.family("vit_nano") == "vit"
    folder = tmp_path / "study"
    Study.create(folder, plan, quiet=True).run()
    steps = json.loads((folder / "steps.json").read_text())
    assert sorted(steps) == ["fourier/resnet_nano", "fourier/vit_nano", "hessian/resnet_nano",
                             "hessian/vit_nano"]  # fmt: skip
    assert not (folder / "runs").exists()
    page = (folder / "report.html").read_text()
    assert "<td>C4</td>" in page and "NEP" in page
    # C3 needs the ablation runs this study cannot train: it says so.
    c3 = page[page.index("<td>C3</td>") :].split("</tr>")[0]
    assert "not measured" in c3


def test_runs_that_are_not_runs_are_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "vitlens.cli", "study", "--runs", str(tmp_path / "empty"),
         "--out", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not a run folder" in done.stderr
    assert not (tmp_path / "s").exists()
