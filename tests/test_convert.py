"""Weight conversion: timm / torchvision state dicts load into vitlens models, same outputs.

Each case builds a small, randomly initialised timm or torchvision model and the equivalent vitlens
model, converts the weights and compares logits in eval mode. Parameters are perturbed first so
that LayerNorm ones/zeros, zero biases and near-zero class tokens cannot hide a swapped key. The
full-size paper configurations are checked for a strict load and equal outputs at batch 1.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from vitlens.errors import UnknownNameError, VitlensError
from vitlens.models import count_parameters, create_model
from vitlens.models.convert import from_timm_swin, load_converted

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from timm.models.pit import PoolingVisionTransformer  # noqa: E402
from timm.models.swin_transformer import SwinTransformer  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

ATOL = 1e-5


def timm_vit(depth: int = 12, num_classes: int = 100) -> nn.Module:
    return VisionTransformer(
        img_size=32,
        patch_size=2,
        embed_dim=192,
        depth=depth,
        num_heads=3,
        qkv_bias=False,
        num_classes=num_classes,
    )


def timm_pit(depth: tuple[int, ...] = (2, 6, 4), num_classes: int = 100) -> nn.Module:
    return PoolingVisionTransformer(
        img_size=32,
        patch_size=2,
        stride=1,
        base_dims=[32, 32, 32],
        depth=list(depth),
        heads=[2, 4, 8],
        mlp_ratio=4,
        num_classes=num_classes,
    )


def timm_swin(
    image_size: int = 32,
    depths: tuple[int, ...] = (2, 2, 6, 2),
    heads: tuple[int, ...] = (3, 6, 12, 24),
    num_classes: int = 100,
    dim: int = 96,
) -> nn.Module:
    return SwinTransformer(
        img_size=image_size,
        patch_size=1,
        window_size=4,
        embed_dim=dim,
        depths=depths,
        num_heads=heads,
        qkv_bias=False,
        num_classes=num_classes,
    )


def cifar_resnet(arch: str, num_classes: int = 100) -> nn.Module:
    """torchvision ResNet with the CIFAR stem the paper's checkpoint uses: 3x3 conv, no max-pool."""
    model = getattr(torchvision.models, arch)(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@dataclass(frozen=True)
class Case:
    theirs: Callable[[], nn.Module]
    ours: Callable[[], nn.Module]
    source: str
    image_size: int = 32


CASES = {
    "vit": Case(
        lambda: timm_vit(depth=2, num_classes=10),
        lambda: create_model("vit_ti", num_classes=10, depth=2),
        "timm_vit",
    ),
    "pit": Case(
        lambda: timm_pit(depth=(1, 2, 1), num_classes=10),
        lambda: create_model("pit_ti", num_classes=10, depths=(1, 2, 1)),
        "timm_pit",
    ),
    # Maps 32 and 16 are larger than the window: both stages have a shifted, masked block.
    "swin_shifted": Case(
        lambda: timm_swin(depths=(2, 2), heads=(3, 6), num_classes=10),
        lambda: create_model("swin_ti", num_classes=10, depths=(2, 2), heads=(3, 6)),
        "timm_swin",
    ),
    # Maps 16, 8, 4, 2: a stage at the window size (no shift) and one below it (window shrinks).
    "swin_small_maps": Case(
        lambda: timm_swin(16, depths=(1, 2, 2, 1), heads=(3, 6, 12, 24), num_classes=10, dim=48),
        lambda: create_model(
            "swin_ti",
            num_classes=10,
            image_size=16,
            dim=48,
            depths=(1, 2, 2, 1),
            heads=(3, 6, 12, 24),
        ),
        "timm_swin",
        image_size=16,
    ),
    "resnet18": Case(
        lambda: cifar_resnet("resnet18", num_classes=10),
        lambda: create_model("resnet18", num_classes=10),
        "torchvision_resnet",
    ),
}  # bottleneck ResNet-50 runs at full size below


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move every weight off its structured init and give BatchNorm realistic running statistics."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=gen), alpha=0.05)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if bns:
        # One train-mode pass with cumulative averaging sets the statistics to that batch's, so the
        # eval-mode activations keep a sane scale through 50 layers.
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()(torch.randn(4, 3, 16, 16, generator=gen))
    return model.eval()


def compare(theirs: nn.Module, ours: nn.Module, source: str, image_size: int, batch: int) -> None:
    load_converted(ours, theirs.state_dict(), source)
    ours.eval()
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = theirs.eval()(x), ours(x)
    assert expected.abs().max() > 0.1  # a real signal, not an all-zero head
    err = (got - expected).abs().max().item()
    assert torch.allclose(got, expected, atol=ATOL), f"max abs difference {err:.3g}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_converted_weights_give_the_same_logits(case):
    c = CASES[case]
    torch.manual_seed(0)
    compare(perturb(c.theirs()), c.ours(), c.source, c.image_size, batch=4)


FULL = {
    "vit_ti": (timm_vit, "timm_vit"),
    "pit_ti": (timm_pit, "timm_pit"),
    "swin_ti": (timm_swin, "timm_swin"),
    "resnet50": (lambda: cifar_resnet("resnet50"), "torchvision_resnet"),
}


@pytest.mark.parametrize("name", sorted(FULL))
def test_full_size_paper_checkpoint_layout_loads_strictly(name):
    make_theirs, source = FULL[name]
    torch.manual_seed(0)
    theirs = perturb(make_theirs())
    ours = create_model(name)
    assert count_parameters(ours) == count_parameters(theirs)
    compare(theirs, ours, source, image_size=32, batch=1)


def _old_timm_layout(state_dict: dict[str, torch.Tensor], family: str) -> dict:
    """Rewrite a timm >= 0.9 state dict into the pre-0.9 layout (the inverse of timm's filters)."""
    out = {}
    for k, v in state_dict.items():
        if family == "pit":
            k = re.sub(r"^transformers\.(\d+)\.pool\.", lambda m: f"pools.{int(m[1]) - 1}.", k)
        else:
            k = re.sub(
                r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", k
            )
            k = k.replace("head.fc.", "head.")
        out[k] = v
    if family == "swin":  # old timm saved these buffers; the converter must drop them
        out["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(
            16, 16, dtype=torch.long
        )
        out["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 16, 16)
    return out


def test_pre_0_9_timm_layouts_and_checkpoint_wrappers_convert():
    torch.manual_seed(0)
    pit = perturb(timm_pit(depth=(1, 1, 1), num_classes=10))
    old = {"module." + k: v for k, v in _old_timm_layout(pit.state_dict(), "pit").items()}
    assert any(k.startswith("module.pools.1.") for k in old)
    ours = create_model("pit_ti", num_classes=10, depths=(1, 1, 1))
    checkpoint = {"epoch": 300, "state_dict": old}  # DataParallel weights inside a checkpoint
    x = torch.randn(2, 3, 32, 32)
    load_converted(ours, checkpoint, "timm_pit")
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), pit(x), atol=ATOL)

    swin = perturb(timm_swin(16, depths=(2, 2, 1), heads=(3, 6, 12), num_classes=10, dim=48))
    old = _old_timm_layout(swin.state_dict(), "swin")
    assert "layers.0.downsample.reduction.weight" in old and "head.weight" in old
    assert from_timm_swin(old).keys() == from_timm_swin(swin.state_dict()).keys()
    ours = create_model(
        "swin_ti", num_classes=10, image_size=16, dim=48, depths=(2, 2, 1), heads=(3, 6, 12)
    )
    load_converted(ours, {"model": old}, "timm_swin")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), swin(x), atol=ATOL)


def test_mismatched_state_dict_raises_a_clear_error():
    theirs = timm_vit(depth=2, num_classes=10).state_dict()

    deeper = create_model("vit_ti", num_classes=10, depth=3)
    with pytest.raises(VitlensError, match=r"missing keys \(\d+\): blocks\.2\."):
        load_converted(deeper, theirs, "timm_vit")

    shallower = create_model("vit_ti", num_classes=10, depth=1)
    with pytest.raises(VitlensError, match=r"unexpected keys \(\d+\): blocks\.1\."):
        load_converted(shallower, theirs, "timm_vit")

    more_classes = create_model("vit_ti", num_classes=100, depth=2)
    with pytest.raises(VitlensError, match=r"head\.weight: checkpoint \(10, 192\) vs model"):
        load_converted(more_classes, theirs, "timm_vit")

    with pytest.raises(VitlensError, match="missing keys"):  # a ViT checkpoint is not a Swin
        load_converted(create_model("swin_ti", num_classes=10), theirs, "timm_swin")

    with pytest.raises(UnknownNameError, match="timm_vit"):
        load_converted(deeper, theirs, "timm_deit")
