"""The generic fallback adapter, on timm and torchvision models no dedicated adapter knows.

Oracles are the libraries' own feature extractors: timm's `forward_intermediates()` and
torchvision's `create_feature_extractor`; the taps must equal what they return. Lesioned blocks
must pass their input on unchanged, a pre-norm transformer block must split into the same `msa` and
`mlp` blocks the dedicated timm adapter finds, and every analysis must run (or, for attention on a
model without MSAs, refuse with a reason).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from vitlens.anatomy import anatomy_of, describe, lesionable, lesioned, record
from vitlens.anatomy.adapters.generic import describe_generic
from vitlens.errors import VitlensError

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
from torchvision.models.feature_extraction import create_feature_extractor  # noqa: E402

CLASSES, SIDE = 5, 64

BUILDERS = {
    "timm_convnext_atto": lambda: timm.create_model("convnext_atto", num_classes=CLASSES),
    "timm_efficientnet_b0": lambda: timm.create_model("efficientnet_b0", num_classes=CLASSES),
    "timm_deit3": lambda: timm.create_model(
        "deit3_small_patch16_224", img_size=SIDE, patch_size=16, depth=2, num_classes=CLASSES
    ),
    "tv_mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=CLASSES),
    "tv_efficientnet_b0": lambda: torchvision.models.efficientnet_b0(num_classes=CLASSES),
    "tv_convnext_tiny": lambda: torchvision.models.convnext_tiny(num_classes=CLASSES),
}
GENERIC = [n for n in BUILDERS if n != "timm_deit3"]  # DeiT-III has its own timm adapter


def randomize(model: nn.Module) -> nn.Module:
    """Non-trivial norm parameters and statistics, and layer scales that are not ~0."""
    for name, p in model.named_parameters():
        if name.endswith(("gamma", "layer_scale", "ls1.gamma", "ls2.gamma")):
            nn.init.normal_(p, 0.5, 0.1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.normal_(m.weight, 1.0, 0.2)
    return model


@functools.cache
def model_of(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize(BUILDERS[name]()).eval()


def images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", GENERIC)
def test_the_fallback_describes_models_no_adapter_knows(name):
    model = model_of(name)
    anatomy = anatomy_of(model)
    assert anatomy is describe_generic(model)  # asked last, and cached
    blocks = anatomy.blocks
    assert blocks[0].kind == "embed" and blocks[-1].kind == "head"
    assert {b.kind for b in blocks[1:-1]} <= {"conv", "pool"}
    assert max(b.stage for b in blocks) >= 3  # four or more resolutions
    assert len(lesionable(model)) >= 3
    with torch.no_grad():
        maps, logits = record(model, images())
        torch.testing.assert_close(logits, model(images()), rtol=0, atol=0)
    assert list(maps) == [b.name for b in blocks]
    # Stages only ever get coarser.
    sides = [maps[b.name].shape[-1] for b in blocks[:-1]]
    assert sides == sorted(sides, reverse=True)


def _last_under(blocks, path_of, prefix: str) -> str:
    return [b.name for b in blocks if path_of[id(b.tap)].startswith(prefix)][-1]


@pytest.mark.parametrize("name", [n for n in BUILDERS if n.startswith("timm")])
def test_timm_taps_equal_forward_intermediates(name):
    model, x = model_of(name), images()
    blocks = describe_generic(model).blocks
    path_of = {id(m): p for p, m in model.named_modules()}
    with torch.no_grad():
        maps, _ = record(model, x, list(blocks))
        expected = model.forward_intermediates(x, intermediates_only=True)
    points = [f["module"] for f in model.feature_info]
    assert len(points) == len(expected)
    for point, inter in zip(points, expected, strict=True):
        name_ = _last_under(blocks, path_of, point)
        torch.testing.assert_close(maps[name_], inter, rtol=0, atol=1e-6, msg=point)


@pytest.mark.parametrize("name", [n for n in BUILDERS if n.startswith("tv")])
def test_torchvision_taps_equal_the_feature_extractor(name):
    model, x = model_of(name), images()
    blocks = describe_generic(model).blocks
    path_of = {id(m): p for p, m in model.named_modules()}
    nodes = [path_of[id(b.tap)] for b in blocks]
    extractor = create_feature_extractor(model, return_nodes=nodes)
    with torch.no_grad():
        maps, _ = record(model, x)
        expected = extractor(x)
    for block, node in zip(blocks, nodes, strict=True):
        out = expected[node]
        torch.testing.assert_close(maps[block.name], block.layout.to_map(out), rtol=0, atol=0)


@pytest.mark.parametrize("name", GENERIC)
def test_a_lesioned_block_passes_its_input_on(name):
    model, x = model_of(name), images()
    blocks = describe(model)
    compared = 0
    with torch.no_grad():
        intact, _ = record(model, x)
        for before, block in zip(blocks, blocks[1:], strict=False):
            if block.branch is None or intact[block.name].shape != intact[before.name].shape:
                continue
            assert not torch.allclose(intact[block.name], intact[before.name], atol=1e-4)
            with lesioned(model, [block.name]):
                maps, _ = record(model, x)
            torch.testing.assert_close(maps[block.name], maps[before.name], rtol=0, atol=0)
            compared += 1
            if compared == 4:  # enough, and keeps the big ConvNeXt fast
                break
    assert compared >= 3


def test_a_pre_norm_transformer_splits_as_the_timm_adapter_does():
    model = model_of("timm_deit3")
    dedicated, generic = describe(model), describe_generic(model).blocks
    assert [b.name for b in generic] == [b.name for b in dedicated]
    # The embedding is read where it enters the first block, the timm adapter at `norm_pre` (an
    # Identity here): the same tensor.
    with torch.no_grad():
        maps, _ = record(model, images(), list(generic))
        torch.testing.assert_close(maps["embed"], record(model, images())[0]["embed"])
    for g, d in zip(generic[1:], dedicated[1:], strict=True):
        assert (g.kind, g.tap, g.tap_point, g.branch, g.attention) == (
            d.kind,
            d.tap,
            d.tap_point,
            d.branch,
            d.attention,
        ), g.name


def test_an_attention_block_that_cannot_be_split_is_one_msa_block_with_its_maps():
    from timm.models.vision_transformer import ResPostBlock, VisionTransformer

    from vitlens.analysis.attention_maps import capture_attention

    torch.manual_seed(0)
    post_norm = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, block_fn=ResPostBlock
    ).eval()
    blocks = describe_generic(post_norm).blocks
    # Attention mixes the tokens of the whole post-norm unit: it is an `msa` block, read whole.
    assert [b.kind for b in blocks] == ["embed", "msa", "msa", "head"]
    assert all(b.branch is None for b in blocks)
    assert [b.mixer for b in blocks[1:3]] == [b.tap for b in blocks[1:3]]
    x = torch.randn(1, 3, 32, 32)
    capture = capture_attention(post_norm, x)
    assert len(capture.blocks) == 2 and not capture.unread
    # the map caught in the unit is the block's own attention, computed here by hand
    block = post_norm.blocks[0]
    tokens = post_norm._pos_embed(post_norm.patch_embed(x))
    qkv = block.attn.qkv(tokens).reshape(1, tokens.shape[1], 3, 2, 16).permute(2, 0, 3, 1, 4)
    q, k = block.attn.q_norm(qkv[0]), block.attn.k_norm(qkv[1])
    expected = (q @ k.transpose(-2, -1) * block.attn.scale).softmax(-1)
    torch.testing.assert_close(capture.blocks[0].attn, expected)


def _batches(n=2, size=4):
    g = torch.Generator().manual_seed(2)
    return [
        (
            torch.randn(size, 3, SIDE, SIDE, generator=g),
            torch.randint(0, CLASSES, (size,), generator=g),
        )
        for _ in range(n)
    ]


# MobileNetV3's Hardswish/Hardsigmoid have no double backward in PyTorch: the Hessian needs the
# adapter's explicit switch to compute them with clamp.
@pytest.mark.parametrize("name", ["timm_convnext_atto", "tv_mobilenet_v3_small"])
def test_every_analysis_runs_or_says_why_not(name):
    from vitlens.analysis.attention import attention_stats
    from vitlens.analysis.cka import cka
    from vitlens.analysis.fourier import fourier
    from vitlens.analysis.hessian import hessian_spectrum
    from vitlens.analysis.lesion import lesion
    from vitlens.analysis.variance import variance

    model, data = model_of(name), _batches()
    body = [b.name for b in describe(model) if b.kind != "head"]
    assert fourier(model, data).names == body
    assert all(math.isfinite(v) for v in variance(model, data).variance)
    assert len(cka(model, data).matrix) == len(describe(model))
    assert lesion(model, data).names == lesionable(model)
    with pytest.raises(VitlensError, match="no MSA block"):
        attention_stats(model, data)
    spectrum = hessian_spectrum(model, data[:1], weight_decay=0.0, k=1, batch_size=4, max_iter=5)
    assert all(math.isfinite(v) for row in spectrum.eigenvalues for v in row)
