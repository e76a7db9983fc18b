"""The Hugging Face adapter honours the anatomy contract on tiny random-init transformers models.

For ViT, DeiT, DINOv2, Swin and ResNet (classification models and a bare backbone) the tests check
the blocks, that every block-end tap equals the model's own `output_hidden_states`, that lesioning
every branch leaves the stream equal to what entered the blocks, that the eager (explicit) path
matches the default SDPA one with normalised maps and gives exact Hessian-vector products, and that
every analysis runs. No download: each model is built from a small config.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitlens.anatomy import (
    anatomy_of,
    attention_maps,
    describe,
    explicit_attention,
    lesionable,
    lesioned,
    record,
    tapping,
)
from vitlens.errors import VitlensError

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install 'vitlens[hf]')"
)

B, CLASSES, SIDE = 2, 5, 32
VIT = dict(
    image_size=SIDE,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    num_labels=CLASSES,
)
SWIN = dict(
    image_size=SIDE,
    patch_size=2,
    embed_dim=16,
    depths=[2, 2],
    num_heads=[1, 2],
    window_size=4,
    num_labels=CLASSES,
)
# Stage 0 keeps the embedder's width and stride: identity shortcuts there.
RESNET = dict(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 1], num_labels=CLASSES)

BUILDERS = {
    "vit": lambda: transformers.ViTForImageClassification(transformers.ViTConfig(**VIT)),
    "vit_bare": lambda: transformers.ViTModel(transformers.ViTConfig(**VIT)),
    "deit": lambda: transformers.DeiTForImageClassification(transformers.DeiTConfig(**VIT)),
    "dinov2": lambda: transformers.Dinov2ForImageClassification(
        # No mask token: it is unused without `bool_masked_pos`, and the Hessian analysis
        # differentiates every trainable parameter (an unused one is refused by autograd).
        transformers.Dinov2Config(
            **{**VIT, "mlp_ratio": 2}, layerscale_value=0.5, use_mask_token=False
        )
    ),
    "swin": lambda: transformers.SwinForImageClassification(transformers.SwinConfig(**SWIN)),
    "resnet": lambda: transformers.ResNetForImageClassification(
        transformers.ResNetConfig(**RESNET, layer_type="basic")
    ),
    "resnet_bottleneck": lambda: transformers.ResNetForImageClassification(
        transformers.ResNetConfig(**RESNET, layer_type="bottleneck")
    ),
}
TRANSFORMERS = ["vit", "vit_bare", "deit", "dinov2", "swin"]
CLASSIFIERS = [n for n in BUILDERS if n != "vit_bare"]


def randomize(model: nn.Module) -> nn.Module:
    """Non-trivial norms and batch-norm statistics, so a wrong tap or branch cannot hide."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.LayerNorm):
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0.0, 0.2)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


@functools.cache
def model_of(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize(BUILDERS[name]()).eval()


def images(dtype=torch.float32) -> torch.Tensor:
    return torch.randn(B, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1), dtype=dtype)


def raw_taps(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], object]:
    """Each block's tapped tensor as the model holds it, and the model's own output object."""
    taps: dict[str, torch.Tensor] = {}
    with torch.no_grad(), tapping(describe(model), lambda b, t: taps.setdefault(b.name, t)):
        out = model(x, output_hidden_states=True)
    return taps, out


def stage_ends(names: list[str]) -> list[str]:
    """The block whose output leaves each stage: the next stage's pool (Swin merges at the end of
    a stage), else the stage's last block."""
    stages = sorted({int(n.split(".")[0][len("stage") :]) for n in names if n.startswith("stage")})
    ends = []
    for s in stages:
        pool = f"stage{s + 1}.pool"
        ends.append(pool if pool in names else [n for n in names if n.startswith(f"stage{s}.")][-1])
    return ends


def expected_names(name: str) -> list[str]:
    if name == "swin":
        body = [f"stage0.block{i}.{k}" for i in range(2) for k in ("msa", "mlp")]
        body += ["stage1.pool"] + [f"stage1.block{i}.{k}" for i in range(2) for k in ("msa", "mlp")]
    elif name.startswith("resnet"):
        body = ["stage0.block0.conv", "stage0.block1.conv", "stage1.block0.conv"]
    else:
        body = [f"block{i}.{k}" for i in range(2) for k in ("msa", "mlp")]
    return ["embed", *body] + ([] if name == "vit_bare" else ["head"])


@pytest.mark.parametrize("name", list(BUILDERS))
def test_blocks_and_taps_equal_the_models_hidden_states(name):
    model = model_of(name)
    blocks = describe(model)
    assert [b.name for b in blocks] == expected_names(name)
    taps, out = raw_taps(model, images())
    # Block-end streams, in forward order: the embedding, then (ViT) every layer, (Swin, ResNet)
    # every stage.
    ends = ["embed"] + (
        [n for n in taps if n.endswith(".mlp")]
        if name not in ("swin",) and "resnet" not in name
        else stage_ends(list(taps))
    )
    hidden = out.hidden_states
    assert len(hidden) == len(ends)
    for block, expected in zip(ends, hidden, strict=True):
        torch.testing.assert_close(taps[block], expected, rtol=0, atol=0, msg=block)
    if "head" in taps:
        torch.testing.assert_close(taps["head"], out.logits, rtol=0, atol=0)


def test_a_bare_backbone_has_no_head_and_its_logits_are_the_pooled_features():
    model = model_of("vit_bare")
    anatomy = anatomy_of(model)
    assert not anatomy.has("head")
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(anatomy.forward(model, x), model(x).pooler_output)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_lesioning_every_branch_leaves_the_stream_that_entered(name):
    model, x = model_of(name), images()
    with torch.no_grad():
        intact, _ = record(model, x)
        with lesioned(model, lesionable(model)):
            maps, _ = record(model, x)
    names = [n for n in maps if n != "head"]
    checked = 0
    for before, block in zip(names, names[1:], strict=False):
        if block.endswith(".pool") or maps[block].shape != maps[before].shape:
            continue  # merging and projection shortcuts change the stream: no identity to check
        assert not torch.allclose(intact[block], intact[before], atol=1e-4), block
        torch.testing.assert_close(maps[block], maps[before], rtol=0, atol=1e-6, msg=block)
        checked += 1
    assert checked >= 2
    if name not in ("swin",) and "resnet" not in name:  # one stream: it ends as it began
        torch.testing.assert_close(maps[names[-1]], maps["embed"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_eager_attention_matches_sdpa_and_yields_probabilities(name):
    model, x = model_of(name), images()
    assert model.config._attn_implementation == "sdpa"
    anatomy = anatomy_of(model)
    with torch.no_grad():
        fused = anatomy.forward(model, x)
        with explicit_attention(model):
            assert model.config._attn_implementation == "eager"
            explicit = anatomy.forward(model, x)
        probs, logits = attention_maps(model, x)
    assert model.config._attn_implementation == "sdpa"  # restored
    torch.testing.assert_close(explicit, fused, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, fused, rtol=0, atol=1e-5)
    assert list(probs) == [b.name for b in anatomy.blocks if b.kind == "msa"]
    windows = {0: (SIDE // 2 // 4) ** 2, 1: (SIDE // 4 // 4) ** 2}  # Swin: windows per image
    for block in (b for b in anatomy.blocks if b.kind == "msa"):
        p = probs[block.name]
        if name == "swin":
            assert p.shape == (B * windows[block.stage], block.stage + 1, 16, 16)
        else:
            n = (SIDE // 8) ** 2 + block.layout.prefix
            assert p.shape == (B, 2, n, n)
        assert (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["vit", "swin"])
def test_double_backward_is_exact_under_explicit_attention(name):
    torch.manual_seed(0)
    model = randomize(BUILDERS[name]()).double().eval()
    anatomy = anatomy_of(model)
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = images(torch.float64), torch.tensor([3, 1])
    v = [torch.randn_like(p) for p in params]
    norm = torch.cat([d.flatten() for d in v]).norm()
    v = [d / norm for d in v]

    def grads(create_graph=False):
        loss = F.cross_entropy(anatomy.forward(model, x), y)
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
    assert hv.norm() > 1e-3
    # transformers' eager softmax runs in float32 even for a float64 model, so the finite
    # differences carry ~1e-4 relative noise (observed 1.5e-4); a wrong Hv misses by O(1).
    assert (hv - fd).norm() <= 2e-3 * hv.norm()


def _batches(n=2, size=4):
    g = torch.Generator().manual_seed(2)
    return [
        (
            torch.randn(size, 3, SIDE, SIDE, generator=g),
            torch.randint(0, CLASSES, (size,), generator=g),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_analysis_runs(name):
    from vitlens.analysis.attention import attention_stats
    from vitlens.analysis.cka import cka
    from vitlens.analysis.fourier import fourier
    from vitlens.analysis.hessian import hessian_spectrum
    from vitlens.analysis.lesion import lesion
    from vitlens.analysis.variance import variance

    model, data = model_of(name), _batches()
    names = [b.name for b in describe(model)]
    body = [n for n in names if n != "head"]
    assert fourier(model, data).names == body
    var = variance(model, data)
    assert var.names == body and all(v > 0 and math.isfinite(v) for v in var.variance)
    matrix = cka(model, data).matrix
    assert all(abs(matrix[i][i] - 1) < 1e-4 for i in range(len(matrix)))
    lesioned_result = lesion(model, data)
    assert lesioned_result.names == lesionable(model)
    if name in TRANSFORMERS:
        stats = attention_stats(model, data)
        assert stats.names == [n for n in names if n.endswith(".msa")]
    spectrum = hessian_spectrum(model, data[:1], weight_decay=0.0, k=1, batch_size=4, max_iter=5)
    values = [v for row in spectrum.eigenvalues for v in row]
    assert values and all(math.isfinite(v) for v in values)


def test_a_teacher_model_is_refused_with_a_reason():
    model = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**VIT))
    with pytest.raises(VitlensError, match="averages two classifiers"):
        describe(model)


def test_hessian_runs_where_attention_is_fused_sdpa():
    """BEiT's SDPA path has no double backward on the fused CPU kernel; under the anatomy's
    explicit context only the math kernel runs, so the Hessian works on any SDPA model."""
    transformers = pytest.importorskip("transformers")
    from vitlens.analysis.curvature import HessianOperator

    config = transformers.BeitConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=5,
    )  # fmt: skip
    model = transformers.BeitForImageClassification(config)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with HessianOperator(model, (x, y)) as op:
        v = torch.randn(op.size, dtype=torch.float64).float()
        hv, hu = op.matvec(v), op.matvec(2 * v)
    assert torch.allclose(hu, 2 * hv, rtol=1e-4, atol=1e-6) and hv.norm() > 0  # linear, nonzero


def _hf_family(name: str):
    transformers = pytest.importorskip("transformers")
    tiny = dict(num_channels=3, num_labels=5)
    configs = {
        "swinv2": lambda: transformers.Swinv2Config(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
            window_size=4, **tiny,
        ),
        "convnextv2": lambda: transformers.ConvNextV2Config(
            hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], **tiny
        ),
        "beit": lambda: transformers.BeitConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, **tiny,
        ),
        "dinov2reg": lambda: transformers.Dinov2WithRegistersConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, mlp_ratio=2, num_register_tokens=2, **tiny,
        ),
        "mobilevit": lambda: transformers.MobileViTConfig(image_size=64, **tiny),
        "levit": lambda: transformers.LevitConfig(**tiny),
    }  # fmt: skip
    torch.manual_seed(0)
    config = configs[name]()
    if name == "levit":  # two classifier classes: the auto mapping cannot choose
        model = transformers.LevitForImageClassification(config)
    else:
        model = transformers.AutoModelForImageClassification.from_config(config)
    return model.eval(), getattr(model.config, "image_size", 64)


@pytest.mark.parametrize(
    "name", ["swinv2", "convnextv2", "beit", "dinov2reg", "mobilevit", "levit"]
)
def test_any_hugging_face_classifier_is_described_and_analysed(name):
    from vitlens.analysis.fourier import fourier
    from vitlens.analysis.variance import variance

    model, side = _hf_family(name)
    kinds = {b.kind for b in anatomy_of(model).blocks}
    assert "embed" in kinds and (kinds & {"msa", "conv"})
    assert ("msa" in kinds) == (name != "convnextv2")  # attention where the architecture has it
    batch = [(torch.randn(2, 3, side, side), torch.tensor([0, 1]))]
    assert len(fourier(model, batch).names) == len(variance(model, batch).names) >= 3
    # The other block analyses and the Hessian (double backward through the math path) too.
    from vitlens.analysis.attention import attention_stats
    from vitlens.analysis.cka import cka
    from vitlens.analysis.hessian import hessian_spectrum
    from vitlens.analysis.lesion import lesion

    four = [(torch.randn(4, 3, side, side), torch.tensor([0, 1, 2, 3]))]  # HSIC needs 4
    matrix = cka(model, four).matrix
    assert len(matrix) == len(matrix[0]) >= 3 and all(math.isfinite(v) for r in matrix for v in r)
    # Lesions need a block's residual branch; MobileViT's and LeViT's blocks, read from hidden
    # states only, show none to zero, so their Result lesions nothing (intact metrics alone).
    drops = lesion(model, batch)
    assert bool(drops.names) == (name not in ("mobilevit", "levit"))
    assert all(math.isfinite(d) for d in drops.delta_nll)
    if name in ("mobilevit", "levit"):  # several softmaxes per block: said, not guessed
        with pytest.raises(VitlensError, match="several attention layers inside one block"):
            attention_stats(model, batch)
    elif "msa" in kinds:  # maps caught from the softmax inside each block's mixer
        heads = attention_stats(model, batch)
        assert heads.names and all(math.isfinite(e) for row in heads.entropy for e in row)
    curvature = hessian_spectrum(model, batch, weight_decay=0.0, objective="nll", k=1,
                                 batch_size=2, max_iter=6, density=False, trace=False)  # fmt: skip
    assert len(curvature.eigenvalues) == 1 and math.isfinite(curvature.eigenvalues[0][0])
