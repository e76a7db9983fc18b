"""The timm and torchvision adapters honour the anatomy contract (DESIGN.md §2).

Every model is a small, randomly initialised configuration of a real timm / torchvision class. For
each one the tests pin the blocks `describe` returns, the shape of every recorded map, that lesions
remove exactly one residual branch, that explicit attention reproduces the fused forward with
normalised maps, and (for two ViTs) that Hessian-vector products match finite differences.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitlens.anatomy import (
    attention_maps,
    describe,
    explicit_attention,
    lesionable,
    lesioned,
    record,
)
from vitlens.errors import VitlensError

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

from timm.models.pit import PoolingVisionTransformer  # noqa: E402
from timm.models.swin_transformer import SwinTransformer as TimmSwin  # noqa: E402
from timm.models.vision_transformer import ResPostBlock, VisionTransformer  # noqa: E402
from torchvision.models import swin_transformer as tv_swin  # noqa: E402

B, CLASSES = 2, 10
Shape = tuple[int, int, int]  # (C, H, W) of a recorded map


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    names: list[str]  # expected block names, in forward order
    embed: Shape
    stages: dict[int, Shape]  # map shape of every non-embed, non-head block of each stage
    attention: list[tuple[int, int, int, int]]  # (B*, heads, N, N) of each readable map


def vit_names(depth: int) -> list[str]:
    return ["embed", *(f"block{i}.{k}" for i in range(depth) for k in ("msa", "mlp")), "head"]


def staged_names(depths: list[int], kinds: tuple[str, ...], pools: bool) -> list[str]:
    names = ["embed"]
    for s, depth in enumerate(depths):
        if pools and s > 0:
            names.append(f"stage{s}.pool")
        names += [f"stage{s}.block{i}.{k}" for i in range(depth) for k in kinds]
    return [*names, "head"]


RESNET_BASIC = {0: (64, 8, 8), 1: (128, 4, 4), 2: (256, 2, 2), 3: (512, 1, 1)}
SWIN = dict(
    names=staged_names([2, 2], ("msa", "mlp"), pools=True),
    embed=(24, 16, 16),
    stages={0: (24, 16, 16), 1: (48, 8, 8)},
)

CASES = {
    "timm_vit": Case(
        lambda: timm.create_model(
            "vit_tiny_patch16_224",
            img_size=32,
            patch_size=4,
            embed_dim=32,
            depth=2,
            num_heads=2,
            num_classes=CLASSES,
        ),
        vit_names(2),
        (32, 8, 8),
        {0: (32, 8, 8)},
        [(B, 2, 65, 65)] * 2,
    ),
    # No class token, 2 register tokens, layer scale and a pre-norm: prefix 2, avg-pool head.
    "timm_vit_registers": Case(
        lambda: VisionTransformer(
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            class_token=False,
            reg_tokens=2,
            global_pool="avg",
            init_values=0.1,
            pre_norm=True,
            num_classes=CLASSES,
        ),
        vit_names(2),
        (32, 4, 4),
        {0: (32, 4, 4)},
        [(B, 2, 18, 18)] * 2,
    ),
    # Class + distillation tokens; the logits average two heads.
    "timm_deit_distilled": Case(
        lambda: timm.create_model(
            "deit_tiny_distilled_patch16_224",
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            num_classes=CLASSES,
        ),
        vit_names(2),
        (32, 4, 4),
        {0: (32, 4, 4)},
        [(B, 2, 18, 18)] * 2,
    ),
    # Patch 4, stride 2 on 32 px: a 15 x 15 grid, pooled to 8 x 8 and 4 x 4.
    "timm_pit": Case(
        lambda: PoolingVisionTransformer(
            img_size=32,
            patch_size=4,
            stride=2,
            base_dims=[16, 16, 16],
            depth=[1, 1, 1],
            heads=[1, 2, 4],
            mlp_ratio=2,
            num_classes=CLASSES,
        ),
        staged_names([1, 1, 1], ("msa", "mlp"), pools=True),
        (16, 15, 15),
        {0: (16, 15, 15), 1: (32, 8, 8), 2: (64, 4, 4)},
        [(B, 1, 226, 226), (B, 2, 65, 65), (B, 4, 17, 17)],
    ),
    # 16 x 16 tokens in 4 x 4 windows (16 per image), then 8 x 8 tokens (4 windows).
    "timm_swin": Case(
        lambda: TimmSwin(
            img_size=32,
            patch_size=2,
            window_size=4,
            embed_dim=24,
            depths=(2, 2),
            num_heads=(1, 2),
            num_classes=CLASSES,
        ),
        **SWIN,
        attention=[(B * 16, 1, 16, 16)] * 2 + [(B * 4, 2, 16, 16)] * 2,
    ),
    "timm_resnet18": Case(
        lambda: timm.create_model("resnet18", num_classes=CLASSES),
        staged_names([2, 2, 2, 2], ("conv",), pools=False),
        (64, 8, 8),
        RESNET_BASIC,
        [],
    ),
    "timm_resnet50": Case(
        lambda: timm.create_model("resnet50", num_classes=CLASSES),
        staged_names([3, 4, 6, 3], ("conv",), pools=False),
        (64, 8, 8),
        {0: (256, 8, 8), 1: (512, 4, 4), 2: (1024, 2, 2), 3: (2048, 1, 1)},
        [],
    ),
    # Squeeze-excite and drop-path after bn2: the residual branch ends later.
    "timm_seresnet18": Case(
        lambda: timm.create_model(
            "resnet18", block_args=dict(attn_layer="se"), drop_path_rate=0.1, num_classes=CLASSES
        ),
        staged_names([2, 2, 2, 2], ("conv",), pools=False),
        (64, 8, 8),
        RESNET_BASIC,
        [],
    ),
    "tv_resnet18": Case(
        lambda: torchvision.models.resnet18(num_classes=CLASSES),
        staged_names([2, 2, 2, 2], ("conv",), pools=False),
        (64, 8, 8),
        RESNET_BASIC,
        [],
    ),
    "tv_resnet_bottleneck": Case(
        lambda: torchvision.models.resnet.ResNet(
            torchvision.models.resnet.Bottleneck, [2, 2, 1, 1], num_classes=CLASSES
        ),
        staged_names([2, 2, 1, 1], ("conv",), pools=False),
        (64, 8, 8),
        {0: (256, 8, 8), 1: (512, 4, 4), 2: (1024, 2, 2), 3: (2048, 1, 1)},
        [],
    ),
    "tv_vit": Case(
        lambda: torchvision.models.VisionTransformer(
            image_size=32,
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=32,
            mlp_dim=64,
            num_classes=CLASSES,
        ),
        vit_names(2),
        (32, 4, 4),
        {0: (32, 4, 4)},
        [(B, 2, 17, 17)] * 2,
    ),
    # torchvision Swin computes attention in a function: no maps to read.
    "tv_swin": Case(
        lambda: tv_swin.SwinTransformer(
            patch_size=[2, 2],
            embed_dim=24,
            depths=[2, 2],
            num_heads=[1, 2],
            window_size=[4, 4],
            num_classes=CLASSES,
        ),
        **SWIN,
        attention=[],
    ),
    "tv_swin_v2": Case(
        lambda: tv_swin.SwinTransformer(
            patch_size=[2, 2],
            embed_dim=24,
            depths=[2, 2],
            num_heads=[1, 2],
            window_size=[4, 4],
            num_classes=CLASSES,
            block=tv_swin.SwinTransformerBlockV2,
            downsample_layer=tv_swin.PatchMergingV2,
        ),
        **SWIN,
        attention=[],
    ),
}


def randomize(model: nn.Module) -> nn.Module:
    """Break the symmetric inits that would hide a wrong tap or branch.

    ResNets zero-init the last batch norm of each branch and torchvision's ViT zero-inits its head,
    so a branch or the logits could be zero whatever the adapter says.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.LayerNorm) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0.0, 0.2)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.2)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, nn.Linear) and not m.weight.any():
            nn.init.normal_(m.weight, 0.0, 0.1)
    return model


@functools.cache
def model_of(name: str) -> nn.Module:
    """A seeded model in eval mode, shared by the tests that leave it unchanged."""
    torch.manual_seed(0)
    return randomize(CASES[name].build()).eval()


def batch(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(B, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=dtype)


names = pytest.mark.parametrize("name", list(CASES))


@names
def test_blocks_follow_the_contract(name):
    case, blocks = CASES[name], describe(model_of(name))
    assert [b.name for b in blocks] == case.names
    assert blocks[0].kind == "embed" and blocks[-1].kind == "head"
    for b in blocks:
        suffix = b.name.rsplit(".", 1)[-1]
        expected_kind = suffix if suffix in ("msa", "mlp", "conv", "pool") else b.name
        assert b.kind == expected_kind
        # The stage is the one in the name; embed is stage 0 and head the last stage.
        if b.name.startswith("stage"):
            assert b.stage == int(b.name[len("stage") :].split(".")[0])
    assert blocks[-1].stage == max(b.stage for b in blocks)
    assert len({(id(b.tap), b.tap_point) for b in blocks}) == len(blocks)
    branches = [b.branch for b in blocks if b.branch is not None]
    assert len({id(m) for m in branches}) == len(branches)
    # Exactly the residual blocks have a branch to lesion.
    assert all((b.branch is None) == (b.kind in ("embed", "pool", "head")) for b in blocks)


@names
def test_record_gives_every_block_a_map_of_the_expected_shape(name):
    case, model, x = CASES[name], model_of(name), batch()
    maps, logits = record(model, x)
    assert list(maps) == case.names
    for block in describe(model):
        if block.kind == "embed":
            expected = case.embed
        elif block.kind == "head":
            expected = (CLASSES, 1, 1)
        else:
            expected = case.stages[block.stage]
        assert maps[block.name].shape == (B, *expected), block.name
    # Same grad mode as `record`: without grad, nn.MultiheadAttention takes a fused fast path.
    assert torch.equal(logits, model(x))
    assert torch.equal(maps["head"], logits.reshape(B, CLASSES, 1, 1))


@names
def test_lesions_remove_exactly_one_branch(name):
    model, x = model_of(name), batch()
    with torch.no_grad():
        plain = model(x)
        with lesioned(model, []):
            assert torch.equal(model(x), plain)
        with lesioned(model, lesionable(model)[:1]):
            assert not torch.allclose(model(x), plain, atol=1e-4)

    # With its branch zeroed, a block passes on the stream it received; intact, it adds to it.
    # (A ResNet block that changes shape has a projection shortcut: nothing to compare.)
    blocks, compared = describe(model), 0
    with torch.no_grad():
        intact, _ = record(model, x)
        for before, block in zip(blocks, blocks[1:], strict=False):
            if block.branch is None or intact[block.name].shape != intact[before.name].shape:
                continue
            assert not torch.allclose(intact[block.name], intact[before.name], atol=1e-4)
            with lesioned(model, [block.name]):
                maps, _ = record(model, x)
            torch.testing.assert_close(maps[block.name], maps[before.name], rtol=0, atol=1e-7)
            compared += 1
    assert compared >= 2


@names
def test_explicit_attention_matches_fused_and_yields_probabilities(name):
    case, model, x = CASES[name], model_of(name), batch()
    with torch.no_grad():
        fused = model(x)
        with explicit_attention(model):
            explicit = model(x)
        torch.testing.assert_close(explicit, fused, rtol=0, atol=1e-5)
        probs, logits = attention_maps(model, x)
    torch.testing.assert_close(logits, fused, rtol=0, atol=1e-5)
    readable = [b.name for b in describe(model) if b.kind == "msa" and b.attention is not None]
    assert list(probs) == readable
    assert [tuple(p.shape) for p in probs.values()] == case.attention
    for p in probs.values():
        assert (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["timm_vit", "tv_vit"])
def test_hessian_vector_product_matches_finite_differences(name):
    torch.manual_seed(0)
    model = randomize(CASES[name].build()).double().eval()
    params = list(model.parameters())
    x, y = batch(torch.float64), torch.tensor([3, 7])
    v = [torch.randn_like(p) for p in params]
    norm = torch.cat([d.flatten() for d in v]).norm()
    v = [d / norm for d in v]  # a unit direction keeps the finite-difference step small

    def grads(create_graph: bool = False):
        loss = F.cross_entropy(model(x), y)
        return torch.autograd.grad(loss, params, create_graph=create_graph)

    eps = 1e-4
    with explicit_attention(model):
        hv = torch.autograd.grad(grads(create_graph=True), params, grad_outputs=v)
        with torch.no_grad():
            torch._foreach_add_(params, v, alpha=eps)
        g_plus = grads()
        with torch.no_grad():
            torch._foreach_add_(params, v, alpha=-2 * eps)
        g_minus = grads()
        with torch.no_grad():
            torch._foreach_add_(params, v, alpha=eps)

    hv = torch.cat([h.flatten() for h in hv])
    fd = torch.cat([(a - b).flatten() for a, b in zip(g_plus, g_minus, strict=True)]) / (2 * eps)
    assert hv.norm() > 1e-3  # a real curvature signal, not two zeros
    assert (hv - fd).norm() <= 1e-6 * hv.norm()  # observed ~1e-8


def test_unknown_models_and_parts_are_refused():
    with pytest.raises(VitlensError, match="no adapter describes it"):
        describe(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    # A known family built from a block whose branches the dedicated adapter cannot locate
    # (post-norm): that adapter refuses it by name, and the generic one describes it whole.
    from vitlens.anatomy.adapters.timm_models import describe_vit

    post_norm = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, block_fn=ResPostBlock
    )
    with pytest.raises(VitlensError, match="ResPostBlock"):
        describe_vit(post_norm)
    assert [b.kind for b in describe(post_norm)] == ["embed", "msa", "head"]
