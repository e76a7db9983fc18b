"""See inside a ViT (issue 18): attention maps, rollout, embeddings and tokens against oracles."""

from __future__ import annotations

import math

import pytest
import torch

from vitlens.analysis import load_result
from vitlens.analysis.attention_maps import (
    AttentionMapsResult,
    attention_maps_of,
    attention_rollout,
    capture_attention,
    fuse_heads,
    gradient_rollout,
    query_maps,
    stitch_windows,
)
from vitlens.analysis.embeddings import (
    EmbeddingsResult,
    embeddings,
    filter_components,
    grid_positions,
    position_similarity,
)
from vitlens.analysis.tokens import TokensResult, outlier_tokens, tokens
from vitlens.errors import VitlensError
from vitlens.models import create_model
from vitlens.models.layers import sincos_position_embedding


def softmax_rows(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64).softmax(-1)


# -- rollout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["mean", "max", "min"])
def test_rollout_is_the_product_of_renormalised_layers(how):
    g = torch.Generator().manual_seed(0)
    a1, a2 = softmax_rows(g, 1, 3, 4, 4), softmax_rows(g, 1, 3, 4, 4)
    fused = {"mean": lambda a: a.mean(1), "max": lambda a: a.max(1).values,
             "min": lambda a: a.min(1).values}[how]  # fmt: skip
    eye = torch.eye(4, dtype=torch.float64)
    by_hand = []
    for a in (a1, a2):
        layer = fused(a)[0] + eye
        by_hand.append(layer / layer.sum(1, keepdim=True))
    expected = by_hand[1] @ by_hand[0]  # the later layer on the left
    torch.testing.assert_close(attention_rollout([a1, a2], how)[0], expected)
    torch.testing.assert_close(fuse_heads(a1, how)[0], fused(a1)[0])


def test_rollout_of_identity_attention_is_the_identity():
    eye = torch.eye(5, dtype=torch.float64).expand(2, 3, 5, 5)
    torch.testing.assert_close(attention_rollout([eye, eye]), torch.eye(5).expand(2, 5, 5).double())


def test_gradient_rollout_equals_a_hand_written_reference():
    g = torch.Generator().manual_seed(1)
    attns = [softmax_rows(g, 1, 2, 3, 3) for _ in range(2)]
    grads = [torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64) for _ in range(2)]
    relevance = torch.eye(3, dtype=torch.float64)
    for a, d in zip(attns, grads, strict=True):
        cam = torch.zeros(3, 3, dtype=torch.float64)
        for h in range(2):  # mean over heads of the positive part of gradient x attention
            for i in range(3):
                for j in range(3):
                    cam[i, j] += max(0.0, float(d[0, h, i, j] * a[0, h, i, j])) / 2
        relevance = relevance + cam @ relevance
    torch.testing.assert_close(gradient_rollout(attns, grads)[0], relevance)


def test_gradient_rollout_on_a_model_uses_the_gradient_of_the_explained_class():
    torch.manual_seed(0)
    model = create_model("vit_nano", num_classes=5, in_chans=1, image_size=16, depth=2)
    x = [(torch.randn(2, 1, 16, 16), torch.tensor([0, 1]))]
    two = attention_maps_of(model, x, class_index=2)
    three = attention_maps_of(model, x, class_index=3)
    assert two.explained == [2, 2] and three.explained == [3, 3]
    assert two.rollout == three.rollout  # rollout does not depend on the class
    assert two.gradient_rollout != three.gradient_rollout
    with pytest.raises(VitlensError, match="outside the model's 5 classes"):
        attention_maps_of(model, x, class_index=5)


# -- maps on the grid ----------------------------------------------------------------------------


def test_attention_rows_sum_to_one_and_the_cls_map_is_the_cls_row():
    torch.manual_seed(0)
    model = create_model("vit_nano", num_classes=5, in_chans=1, image_size=16, depth=2).eval()
    capture = capture_attention(model, torch.randn(3, 1, 16, 16))
    assert [b.block.name for b in capture.blocks] == ["block0.msa", "block1.msa"]
    for b in capture.blocks:
        full = b.full()
        torch.testing.assert_close(full.sum(-1), torch.ones(full.shape[:-1]))
        maps, query = query_maps(full, b.prefix)
        assert query == "cls" and maps.shape == (3, full.shape[1], 16)
        torch.testing.assert_close(maps, full[:, :, 0, 1:])


def _partition(full: torch.Tensor, grid, window, shift) -> torch.Tensor:
    """The windows a shifted-window layer would see of a block-structured (B, h, HW, HW) map."""
    (H, W), (wh, ww) = grid, window
    B, heads = full.shape[:2]
    order = torch.arange(H * W).view(H, W).roll((-shift[0], -shift[1]), (0, 1))
    nh, nw = H // wh, W // ww
    windows = order.view(nh, wh, nw, ww).permute(0, 2, 1, 3).reshape(nh * nw, wh * ww)
    out = torch.stack([full[:, :, w[:, None], w[None, :]] for w in windows], 1)
    return out.reshape(B * nh * nw, heads, wh * ww, wh * ww)


@pytest.mark.parametrize("shift", [(0, 0), (1, 1), (2, 1)])
def test_stitched_windows_rebuild_the_global_map(shift):
    g = torch.Generator().manual_seed(2)
    grid, window = (4, 6), (2, 3)
    # A global map that only attends inside the shifted windows, then cut into windows.
    order = torch.arange(24).view(4, 6).roll((-shift[0], -shift[1]), (0, 1))
    window_id = torch.zeros(24, dtype=torch.long)
    ids = torch.arange(4).view(2, 2).repeat_interleave(2, 0).repeat_interleave(3, 1)
    window_id[order.flatten()] = ids.flatten()
    logits = torch.randn(2, 3, 24, 24, generator=g, dtype=torch.float64)
    logits = logits.masked_fill(window_id[:, None] != window_id[None, :], float("-inf"))
    full = logits.softmax(-1)
    stitched = stitch_windows(_partition(full, grid, window, shift), grid, window, shift)
    torch.testing.assert_close(stitched, full)


def test_identity_windows_put_one_at_the_query_itself():
    eye = torch.eye(4, dtype=torch.float64).expand(2 * 9, 1, 4, 4)  # 9 windows of 2x2 on 5x5
    stitched = stitch_windows(eye, (5, 5), (2, 2), (1, 1))
    torch.testing.assert_close(stitched[0, 0], torch.eye(25, dtype=torch.float64))


def test_swin_maps_are_stitched_onto_the_grid_with_rows_summing_to_one():
    torch.manual_seed(0)
    model = create_model("swin_nano", num_classes=5, in_chans=1, image_size=28).eval()
    capture = capture_attention(model, torch.randn(2, 1, 28, 28))
    first, shifted = capture.blocks[0], capture.blocks[1]
    assert first.grid == (14, 14) and first.geometry.window == (4, 4)
    assert shifted.shift == (2, 2) and first.shift == (0, 0)
    for b in (first, shifted):
        full = b.full()
        assert full.shape == (2, b.attn.shape[1], 196, 196)
        torch.testing.assert_close(full.sum(-1), torch.ones(full.shape[:-1]))
    result = attention_maps_of(
        model, [(torch.randn(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))]
    )
    assert result.queries == ["mean"] * len(result.names)
    assert result.rollout == [] and "different token sets" in result.rollout_note


# -- embeddings ---------------------------------------------------------------------------------


def test_sinusoidal_positions_are_symmetric_peaked_and_fall_with_distance():
    H = W = 7
    sim = position_similarity(sincos_position_embedding(H, W, 64))
    torch.testing.assert_close(sim, sim.T)
    torch.testing.assert_close(sim.diagonal(), torch.ones(H * W, dtype=torch.float64))
    assert (sim.argmax(1) == torch.arange(H * W)).all()
    rows, cols = torch.arange(H * W) // W, torch.arange(H * W) % W
    dist = torch.hypot((rows[:, None] - rows[None]).double(), (cols[:, None] - cols[None]).double())
    means = [sim[(dist > d - 0.5) & (dist <= d + 0.5)].mean() for d in range(0, 7)]
    assert all(a > b for a, b in zip(means, means[1:], strict=False))


def test_a_shuffled_embedding_shuffles_its_maps():
    table = sincos_position_embedding(5, 5, 32)
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        position_similarity(table[perm]), position_similarity(table)[perm][:, perm]
    )


def test_position_tables_drop_their_prefix_and_maps_are_read_row_major():
    table = torch.randn(1, 2 + 16, 8)
    positions, grid = grid_positions(table, (4, 4))
    assert grid == (4, 4) and torch.equal(positions, table[0, 2:])
    pit_like = torch.randn(1, 8, 3, 5)
    positions, grid = grid_positions(pit_like, (9, 9))
    assert grid == (3, 5) and torch.equal(positions[6], pit_like[0, :, 1, 1])


def test_filter_components_equal_an_svd_of_the_flattened_filters():
    weight = torch.randn(12, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    comps, shares = filter_components(weight, 5)
    rows = weight.double().flatten(1)
    _, s, vh = torch.linalg.svd(rows - rows.mean(0), full_matrices=False)
    for k in range(5):  # equal up to sign
        assert min((comps[k] - vh[k]).abs().max(), (comps[k] + vh[k]).abs().max()) < 1e-10
    torch.testing.assert_close(shares, (s.square() / s.square().sum())[:5])


def test_embeddings_of_vit_swin_and_a_cnn_say_what_each_lacks(tmp_path):
    x = [(torch.randn(1, 1, 28, 28), torch.tensor([0]))]
    vit = embeddings(create_model("vit_nano", num_classes=5, in_chans=1, image_size=28), x)
    assert vit.position_kind == "learned" and vit.position_grid == [7, 7]
    assert len(vit.position_similarity) == 49 and vit.filter_shape == [1, 4, 4]
    assert vit.missing == ["no relative-position bias table"]
    swin = embeddings(create_model("swin_nano", num_classes=5, in_chans=1, image_size=28), x)
    tables = next(iter(swin.relative_bias.values()))
    assert tables["side"] == 7 and len(tables["tables"][0]) == 49
    assert load_result(vit.save(tmp_path / "e.json")) == vit
    assert isinstance(vit, EmbeddingsResult)


# -- tokens ---------------------------------------------------------------------------------------


def test_a_planted_high_norm_token_is_the_outlier_at_its_position():
    norms = torch.ones(3, 49) + 0.1 * torch.rand(3, 49, generator=torch.Generator().manual_seed(4))
    norms[1, 17] *= 50
    assert outlier_tokens(norms) == [[1, 17]]


def test_tokens_follow_a_planted_token_through_a_real_model():
    torch.manual_seed(0)
    model = create_model("vit_nano", num_classes=5, in_chans=1, image_size=28, depth=1).eval()
    planted = {}

    def plant(_m, _inp, out):
        out = out.clone()
        out[:, 1 + 10] *= 50  # patch token 10, after the class token
        planted["done"] = True
        return out

    handle = model.blocks[0].register_forward_hook(plant)
    try:
        r = tokens(model, [(torch.randn(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))])
    finally:
        handle.remove()
    last = r.names.index("block0.mlp")
    assert planted and r.outliers[last] == [[0, 10], [1, 10]]
    assert r.outlier_share[last] == pytest.approx(2 / 98)
    assert r.prefix[last] == 1 and len(r.prefix_norms[last][0]) == 1
    assert isinstance(r, TokensResult)


def test_a_cnn_is_refused_attention_and_tokens_by_name():
    cnn = create_model("resnet_nano", num_classes=5, in_chans=1, image_size=28)
    x = [(torch.randn(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))]
    with pytest.raises(VitlensError, match="no MSA block"):
        attention_maps_of(cnn, x)
    with pytest.raises(VitlensError, match="no MSA block, so no tokens"):
        tokens(cnn, x)
    assert "no absolute position embedding" in embeddings(cnn, x).missing[0]


def test_results_round_trip_and_draw(tmp_path):
    from vitlens.report.plots.attention_maps import plot_attention_maps
    from vitlens.report.plots.embeddings import plot_embeddings
    from vitlens.report.plots.tokens import plot_tokens

    torch.manual_seed(0)
    model = create_model("vit_nano", num_classes=5, in_chans=1, image_size=28, depth=2)
    x = [(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))]
    for run, plot in (
        (attention_maps_of, plot_attention_maps),
        (embeddings, plot_embeddings),
        (tokens, plot_tokens),
    ):
        result = run(model, x)
        again = load_result(result.save(tmp_path / f"{result.analysis}.json"))
        assert again == result
        png = plot([again], tmp_path / f"{result.analysis}.png")
        assert png.stat().st_size > 2000
    maps = load_result(tmp_path / "attention_maps.json")
    assert isinstance(maps, AttentionMapsResult) and maps.n_images == 2
    assert len(maps.maps[0]) == 2 and len(maps.maps[0][0]) == maps.heads[0]
    # The class token's rollout row sums to one over all tokens, so to less over the grid.
    assert 0 < sum(maps.rollout[0]) < 1 + 1e-6 and not math.isnan(sum(maps.rollout[0]))


# -- every family of the issue, end to end on tiny random-init models ---------------------------


def _timm(name, **kw):
    timm = pytest.importorskip("timm", reason="the timm families need timm")
    return timm.create_model(name, num_classes=5, **kw)


def _hf(model: str, config: str, **kw):
    transformers = pytest.importorskip("transformers", reason="the Hugging Face families need it")
    vit = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=64, num_labels=5)  # fmt: skip
    swin = dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[1, 2],
                window_size=4, num_labels=5)  # fmt: skip
    base = swin if config == "SwinConfig" else vit
    return getattr(transformers, model)(getattr(transformers, config)(**{**base, **kw}))


def _torchvision(kind: str):
    tv = pytest.importorskip("torchvision", reason="the torchvision families need torchvision")
    if kind == "vit":
        return tv.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                           hidden_dim=32, mlp_dim=64, num_classes=5)  # fmt: skip
    return tv.models.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[1, 2],
        window_size=[4, 4],
        num_classes=5,
    )


TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
# name -> (builder, image side, prefix tokens, MSA blocks, rollout expected). torchvision's ViT
# gets no gradient rollout: nn.MultiheadAttention returns its weights off the output's path.
FAMILIES = {
    "timm_vit": (lambda: _timm("vit_tiny_patch16_224", **TINY_VIT), 32, 1, 2, True),
    "timm_deit_distilled": (
        lambda: _timm("deit_tiny_distilled_patch16_224", **TINY_VIT), 32, 2, 2, True),
    "timm_vit_registers": (
        lambda: _timm("vit_small_patch14_reg4_dinov2", img_size=28, patch_size=7, embed_dim=32,
                      depth=2, num_heads=2), 28, 5, 2, True),
    "timm_swin": (
        lambda: _timm("swin_tiny_patch4_window7_224", img_size=32, patch_size=2, embed_dim=16,
                      depths=(2, 2), num_heads=(1, 2), window_size=4), 32, 0, 4, False),
    "hf_vit": (lambda: _hf("ViTForImageClassification", "ViTConfig"), 32, 1, 2, True),
    "hf_deit": (lambda: _hf("DeiTForImageClassification", "DeiTConfig"), 32, 2, 2, True),
    "hf_dinov2": (lambda: _hf("Dinov2ForImageClassification", "Dinov2Config", mlp_ratio=2,
                              use_mask_token=False), 32, 1, 2, True),
    "hf_dinov2_registers": (
        lambda: _hf("Dinov2WithRegistersForImageClassification", "Dinov2WithRegistersConfig",
                    mlp_ratio=2, num_register_tokens=2), 32, 3, 2, True),
    "hf_swin": (lambda: _hf("SwinForImageClassification", "SwinConfig"), 32, 0, 4, False),
    "torchvision_vit": (lambda: _torchvision("vit"), 32, 1, 2, True),
    "torchvision_swin": (lambda: _torchvision("swin"), 32, 0, 4, False),
}  # fmt: skip


# Prefix tokens other than a lone class token, in the order the models concatenate them.
ROLES = {
    "timm_deit_distilled": ["cls", "dist"],
    "timm_vit_registers": ["cls", "reg", "reg", "reg", "reg"],
    "hf_deit": ["cls", "dist"],
    "hf_dinov2_registers": ["cls", "reg", "reg"],
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_runs_end_to_end(family):
    build, side, prefix, n_msa, rollout = FAMILIES[family]
    torch.manual_seed(0)
    model = build()
    x = [(torch.randn(2, 3, side, side), torch.tensor([1, 2]))]
    maps = attention_maps_of(model, x)
    assert len(maps.names) == n_msa and maps.unread == {}
    assert maps.queries == (["cls"] if prefix else ["mean"]) * n_msa
    assert bool(maps.rollout) is rollout
    if family == "torchvision_vit":
        assert maps.gradient_rollout == [] and "no gradient rollout" in maps.rollout_note
    else:
        assert bool(maps.gradient_rollout) is rollout
    for per_head in maps.maps[0]:  # every head's map is a distribution (or a mean of rows)
        assert all(min(h) >= 0.0 and sum(h) <= 1 + 1e-5 for h in per_head)
    with torch.no_grad():
        capture = capture_attention(model.eval(), x[0][0])
    for b in capture.blocks:  # rows on the image grid sum to one, windows stitched
        torch.testing.assert_close(b.full().sum(-1), torch.ones(b.full().shape[:-1]))
    tok = tokens(model, x)
    assert tok.prefix[0] == prefix or tok.kinds[0] != "embed"
    assert tok.prefix_roles == ROLES.get(family, ["cls"] if prefix else [])
    from vitlens.report.plots.tokens import ROLE_NAMES, norm_curves

    drawn = set(norm_curves(tok))  # the chart draws each kind of prefix token apart
    assert {ROLE_NAMES[r] for r in tok.prefix_roles} <= drawn
    emb = embeddings(model, x)
    assert (emb.position_kind == "learned") is (prefix > 0)
    assert bool(emb.relative_bias) is (not rollout)


# vitlens's own multi-stage models: every MSA block's map at its own stage's grid.
STAGED = {
    "pit_nano": ([[14, 14], [7, 7], [7, 7], [4, 4], [4, 4]], "cls", "learned"),
    "swin_nano": ([[14, 14]] * 2 + [[7, 7]] * 2 + [[4, 4]] * 2, "mean", "none"),
    "alternet_nano": ([[14, 14], [7, 7], [4, 4]], "mean", "none"),
}


@pytest.mark.parametrize("name", list(STAGED))
def test_staged_models_map_each_block_on_its_own_grid(name):
    grids, queries, position = STAGED[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1, image_size=28)
    x = [(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))]
    maps = attention_maps_of(model, x)
    assert maps.grids == grids and maps.queries == [queries] * len(grids) and not maps.unread
    for k, (h, w) in enumerate(grids):  # image 0, block k: one map per head on its grid
        assert len(maps.maps[0][k]) == maps.heads[k]
        assert all(len(head) == h * w and min(head) >= 0 for head in maps.maps[0][k])
    # Tokens are pooled or merged between stages: no single token set to roll out over.
    assert maps.rollout == [] and "one set of tokens" in maps.rollout_note
    assert embeddings(model, x).position_kind == position


def test_shifted_windows_of_a_real_swin_are_the_modules_own_probabilities_on_the_grid():
    timm = pytest.importorskip("timm", reason="needs timm's Swin")
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=4,
                              embed_dim=16, depths=(2,), num_heads=(2,), window_size=4,
                              num_classes=3).eval()  # fmt: skip
    own = {}  # block index -> the module's softmax output, (windows, heads, 16, 16)
    blocks = model.layers[0].blocks
    for i, blk in enumerate(blocks):
        blk.attn.fused_attn = False  # its explicit path, so attn_drop sees the probabilities
        blk.attn.attn_drop.register_forward_hook(lambda m, a, out, i=i: own.setdefault(i, out))
    with torch.no_grad():
        capture = capture_attention(model, torch.randn(1, 3, 32, 32))
    assert [b.shift for b in capture.blocks] == [(0, 0), (2, 2)]
    for i, (block, shift) in enumerate(zip(capture.blocks, (0, 2), strict=True)):
        # Independently of vitlens: timm rolls the 8x8 grid by -shift, then cuts 4x4 windows.
        ids = torch.roll(torch.arange(64).view(8, 8), (-shift, -shift), (0, 1))
        ids = ids.view(2, 4, 2, 4).permute(0, 2, 1, 3).reshape(4, 16)
        want = torch.zeros(1, 2, 64, 64)
        for w in range(4):
            want[0][:, ids[w][:, None], ids[w][None, :]] = own[i][w]
        torch.testing.assert_close(block.full(), want)
