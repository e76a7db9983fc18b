"""Models vitlens cannot read: a clear VitlensError that names the model and the module, exit
status 2 from the CLI, and nothing written.
"""

from __future__ import annotations

import pytest
import torch
from test_bad_input import run_cli
from torch import nn

from vitlens.anatomy import anatomy_of
from vitlens.errors import VitlensError

# Both stand for library models the generic adapter reads (it takes torchvision's module path
# as the sign of one); a model no adapter knows is refused before any forward.


class NeedsMask(nn.Module):
    """A classifier whose forward needs a second input besides the images."""

    __module__ = "torchvision.models.user"

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, 4)
        self.head = nn.Linear(8, 10)

    def forward(self, x, mask):
        return self.head((self.stem(x) * mask).mean((2, 3)))


class OnlyOddSizes(nn.Module):
    """A model that refuses every input size (it wants a side of 37 pixels)."""

    __module__ = "torchvision.models.user"

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        if x.shape[-1] != 37:
            raise ValueError(f"expected 37 px, got {x.shape[-1]}")
        return self.head(self.stem(x).mean((2, 3)))


def test_a_forward_that_needs_other_inputs_is_refused_naming_the_model():
    with pytest.raises(VitlensError, match=r"could not run NeedsMask on .* px.*mask"):
        anatomy_of(NeedsMask())


def test_a_model_that_fails_at_every_size_is_refused_naming_the_sizes_tried():
    with pytest.raises(VitlensError, match=r"could not run OnlyOddSizes on \d+( or \d+)* px"):
        anatomy_of(OnlyOddSizes())


@pytest.fixture(scope="module")
def halonet():
    timm = pytest.importorskip("timm", reason="HaloNet's attention is timm's")
    return timm.create_model("halonet26t", pretrained=False, num_classes=10).eval()


def test_attention_in_an_unknown_layout_is_refused_naming_the_model_and_each_module(halonet):
    from vitlens.analysis.attention import attention_stats
    from vitlens.analysis.attention_maps import attention_maps_of

    # Halo attention: 8 x 8 query blocks, each attending to a 12 x 12 halo around it.
    batch = [(torch.randn(1, 3, 256, 256), torch.zeros(1, dtype=torch.long))]
    for analysis in (attention_stats, attention_maps_of):
        with pytest.raises(VitlensError) as refused:
            analysis(halonet, batch)
        message = str(refused.value)
        assert message.startswith("no MSA block of ByobNet gave one attention map")
        msa = [b.name for b in anatomy_of(halonet).blocks if b.kind == "msa"]
        assert msa and all(f"{name}: cannot place" in message for name in msa)


def test_the_cli_exits_2_and_writes_nothing_on_attention_it_cannot_place(tmp_path, capsys):
    pytest.importorskip("timm", reason="HaloNet's attention is timm's")
    run = tmp_path / "halonet"
    code, said = run_cli(
        ["import", "timm:halonet26t", "--out", run, "--dataset", "fashion-mnist-mini",
         "--image-size", "256"],
        capsys,
    )  # fmt: skip
    assert code == 0, said
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    out = tmp_path / "attention"
    args = ["analyze", "attention", run, "--out", out, "--batches", "1", "--batch-size", "2"]
    code, said = run_cli([*args, "--quiet"], capsys)
    assert code == 2, said
    assert "Traceback" not in said and "ByobNet" in said and "stage2.block1.msa" in said
    assert not out.exists() or not any(out.iterdir())
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
