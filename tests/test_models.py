"""The zoo: pinned parameter counts, forward/backward for every model, and anatomy invariants."""

from __future__ import annotations

import pytest
import torch

from vitlens.anatomy import describe, lesioned, record
from vitlens.errors import ConfigError, UnknownNameError
from vitlens.models import count_parameters, create_model, list_models

# The paper's CIFAR-100 configurations (official_repo.md §2.10), at 100 classes and 32x32.
PINNED = {
    "vit_ti": 5_403_172,
    "vit_s": 21_423_076,
    "vit_b": 85_313_380,
    "pit_ti": 4_582_436,
    "swin_ti": 27_562_126,
    "resnet18": 11_220_132,
    "resnet34": 21_328_292,
    "resnet50": 23_705_252,
    "preresnet50": 23_697_572,
    "alternet18": 9_499_063,
    "alternet50": 33_012_840,
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_parameter_count_matches_the_paper(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=100, image_size=32)
    assert count_parameters(model) == PINNED[name]


def test_imagenet_stem_resnet50_matches_torchvision_count():
    with torch.device("meta"):
        model = create_model("resnet50", num_classes=1000, image_size=224, stem="imagenet")
    assert count_parameters(model) == 25_557_032


@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("_nano")])
def test_nano_models_are_small(name):
    assert 200_000 <= count_parameters(create_model(name, num_classes=10)) <= 1_000_000


def _small_input_size(name: str) -> int:
    # Full-size models are exercised at 16x16 to keep the suite fast; nano ones at 32.
    return 32 if name.endswith("_nano") else 16


def _build(name: str, **kw):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, image_size=_small_input_size(name), **kw)
    return model.eval()


@pytest.fixture(scope="module", params=list_models())
def built(request):
    name = request.param
    model = _build(name)
    torch.manual_seed(1)
    x = torch.randn(2, 3, _small_input_size(name), _small_input_size(name))
    return name, model, x


def test_forward_and_backward(built):
    name, model, x = built
    model.train()
    try:
        out = model(x)
        assert out.shape == (2, 7)
        out.logsumexp(dim=1).sum().backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_anatomy_invariants(built):
    name, model, x = built
    blocks = describe(model)
    kinds = [b.kind for b in blocks]
    assert kinds[0] == "embed" and kinds[-1] == "head"
    assert len({b.name for b in blocks}) == len(blocks), "block names must be unique"
    assert len({(id(b.tap), b.tap_point) for b in blocks}) == len(blocks), "taps must be unique"
    stages = [b.stage for b in blocks]
    assert stages == sorted(stages), "stages are in forward order"

    with torch.no_grad():
        maps, logits = record(model, x, blocks)
        plain = model(x)
    assert torch.equal(logits, plain)
    assert list(maps) == [b.name for b in blocks]
    for b in blocks:
        assert maps[b.name].ndim == 4 and maps[b.name].shape[0] == 2, b.name
    assert maps["head"].shape == (2, 7, 1, 1)
    assert torch.equal(maps["head"].flatten(1), plain)
    # Within a stage, residual blocks keep the map's spatial size.
    for b, nxt in zip(blocks[1:-1], blocks[2:-1], strict=False):
        if b.stage == nxt.stage and nxt.kind in ("msa", "mlp"):
            assert maps[b.name].shape == maps[nxt.name].shape, (b.name, nxt.name)


def test_no_lesion_is_exact_and_one_lesion_changes_output(built):
    name, model, x = built
    with torch.no_grad():
        plain = model(x)
        with lesioned(model, []):
            assert torch.equal(model(x), plain)
        branches = [b for b in describe(model) if b.branch is not None]
        target = branches[len(branches) // 2]
        with lesioned(model, [target.name]):
            assert not torch.allclose(model(x), plain)
        assert torch.equal(model(x), plain), "hooks are removed after the context"


# The number and kinds of blocks of the paper's models.
EXPECTED_KINDS = {
    "vit_ti": {"embed": 1, "msa": 12, "mlp": 12, "head": 1},
    "pit_ti": {"embed": 1, "msa": 12, "mlp": 12, "pool": 2, "head": 1},
    "swin_ti": {"embed": 1, "msa": 12, "mlp": 12, "pool": 3, "head": 1},
    "resnet50": {"embed": 1, "conv": 16, "head": 1},
    "alternet50": {"embed": 1, "conv": 13, "msa": 4, "head": 1},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS))
def test_block_kinds_of_the_paper_models(name):
    with torch.device("meta"):
        blocks = describe(create_model(name))
    counts: dict[str, int] = {}
    for b in blocks:
        counts[b.kind] = counts.get(b.kind, 0) + 1
    assert counts == EXPECTED_KINDS[name]


def test_alternet_msa_blocks_sit_at_stage_ends():
    with torch.device("meta"):
        blocks = describe(create_model("alternet50"))
    msa = [b.name for b in blocks if b.kind == "msa"]
    assert msa == [
        "stage1.block3.msa",
        "stage2.block5.msa",
        "stage3.block1.msa",
        "stage3.block3.msa",
    ]


def test_token_maps_have_the_declared_grid():
    model = _build("vit_ti", patch_size=4)  # 16x16 input -> 4x4 tokens
    maps, _ = record(model, torch.randn(2, 3, 16, 16))
    assert maps["block3.msa"].shape == (2, 192, 4, 4)
    pit = create_model("pit_ti", num_classes=7, image_size=32).eval()
    maps, _ = record(pit, torch.randn(1, 3, 32, 32))
    assert [maps[n].shape[-1] for n in ("embed", "stage1.pool", "stage2.pool")] == [31, 16, 8]
    swin = create_model("swin_ti", num_classes=7, image_size=32).eval()
    maps, _ = record(swin, torch.randn(1, 3, 32, 32))
    assert maps["stage3.block1.mlp"].shape == (1, 768, 4, 4)


def test_msa_lesion_removes_exactly_the_attention_branch():
    model = _build("vit_nano")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), lesioned(model, ["block2.msa"]):
        maps, _ = record(model, x)
    assert torch.allclose(maps["block2.msa"], maps["block1.mlp"])


@pytest.mark.parametrize("image_size,in_chans", [(28, 1), (32, 1), (28, 3)])
@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("_nano")])
def test_nano_models_take_28_and_grayscale(name, image_size, in_chans):
    model = create_model(name, num_classes=10, image_size=image_size, in_chans=in_chans).eval()
    x = torch.randn(2, in_chans, image_size, image_size)
    assert model(x).shape == (2, 10)
    maps, _ = record(model, x)
    assert all(m.ndim == 4 for m in maps.values())


def test_vit_options():
    x = torch.randn(2, 3, 16, 16)
    for pos in ("learned", "sincos", "none"):
        for pool in ("cls", "gap"):
            m = create_model("vit_nano", num_classes=5, image_size=16, pos_embed=pos, pool=pool)
            assert m(x).shape == (2, 5)
    with pytest.raises(ConfigError):
        create_model("vit_nano", pos_embed="rotary")


def test_vit_without_position_embedding_is_permutation_equivariant():
    # With no position embedding and a GAP head, shuffling patches cannot change the output.
    torch.manual_seed(0)
    m = create_model("vit_nano", num_classes=5, image_size=16, pos_embed="none", pool="gap").eval()
    x = torch.randn(1, 3, 16, 16)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (1, 3, 4, 4, 4, 4): grid then pixels
    perm = torch.randperm(16)
    shuffled = patches.reshape(1, 3, 16, 4, 4)[:, :, perm].reshape(1, 3, 4, 4, 4, 4)
    x2 = shuffled.permute(0, 1, 2, 4, 3, 5).reshape(1, 3, 16, 16)
    assert torch.allclose(m(x), m(x2), atol=1e-5)


def test_local_window_restricts_attention_to_neighbourhoods():
    from vitlens.anatomy import attention_maps

    torch.manual_seed(0)
    m = create_model("vit_nano", num_classes=5, image_size=32, local_window=3).eval()
    maps, _ = attention_maps(m, torch.randn(1, 3, 32, 32))
    attn = maps["block0.msa"][0, 0, 1:, 1:]  # grid tokens only: (64, 64) on an 8x8 grid
    rows, cols = torch.arange(8).repeat_interleave(8), torch.arange(8).repeat(8)
    far = ((rows[:, None] - rows[None]).abs() > 1) | ((cols[:, None] - cols[None]).abs() > 1)
    assert attn[far].abs().max() == 0
    assert attn[~far].min() > 0


def test_stochastic_depth_is_identity_in_eval_and_random_in_train():
    m = create_model("vit_nano", num_classes=5, drop_path=0.5)
    x = torch.randn(4, 3, 32, 32)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, m(x))


def test_unknown_model_and_bad_override():
    with pytest.raises(UnknownNameError, match="vit_tiny"):
        create_model("vit_tiny")
    with pytest.raises(ConfigError, match="does not take"):
        create_model("resnet18", heads=3)
