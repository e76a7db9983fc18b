"""The anatomy contract on native models: layouts, explicit attention, double backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitlens.anatomy import (
    Layout,
    attention_maps,
    describe,
    explicit_attention,
    lesionable,
    lesioned,
    tokens,
)
from vitlens.errors import VitlensError
from vitlens.models import create_model


def test_token_layout_drops_prefix_and_lays_out_row_major():
    x = torch.arange(2 * 7 * 3, dtype=torch.float).reshape(2, 7, 3)  # 1 CLS + 2x3 grid
    m = tokens(prefix=1, grid=(2, 3)).to_map(x)
    assert m.shape == (2, 3, 2, 3)
    assert torch.equal(m[1, 2, 1, 0], x[1, 1 + 3, 2])  # token (row 1, col 0) -> index 1 + 3
    with pytest.raises(ValueError):
        tokens(prefix=0, grid=(2, 2)).to_map(x)


def test_nhwc_and_vector_layouts():
    x = torch.randn(2, 4, 5, 3)
    assert torch.equal(Layout("nhwc").to_map(x), x.permute(0, 3, 1, 2))
    assert Layout("vector").to_map(torch.randn(2, 10)).shape == (2, 10, 1, 1)


ATTENTION_MODELS = ["vit_nano", "pit_nano", "swin_nano", "alternet_nano"]


@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_explicit_attention_matches_fused_and_maps_are_distributions(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, image_size=28, in_chans=1).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        fused = model(x)
        with explicit_attention(model):
            explicit = model(x)
        maps, logits = attention_maps(model, x)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert torch.allclose(logits, fused, atol=1e-5)
    msa = [b.name for b in describe(model) if b.kind == "msa"]
    assert list(maps) == msa
    for attn in maps.values():
        assert attn.ndim == 4
        assert torch.allclose(attn.sum(-1), torch.ones(()), atol=1e-5)
    # The switch is undone on exit.
    assert not any(getattr(m, "explicit", False) for m in model.modules())


def test_padded_keys_get_no_attention():
    # swin_nano at 28x28: stage-0 map 14x14 is padded to 16x16 for window 4.
    torch.manual_seed(0)
    model = create_model("swin_nano", num_classes=5, image_size=28, in_chans=1).eval()
    maps, _ = attention_maps(model, torch.randn(1, 1, 28, 28))
    attn = maps["stage0.block0.msa"]  # (nW = 16, heads, 16, 16)
    last_window = attn[-1, 0]  # bottom-right window: only its top-left 2x2 tokens are real
    real = torch.zeros(4, 4, dtype=torch.bool)
    real[:2, :2] = True
    assert last_window[:, ~real.flatten()].abs().max() < 1e-30


def _hvp_and_finite_difference(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(3)
    v = [torch.randn_like(p) for p in params]

    def grads():
        loss = nn.functional.cross_entropy(model(x), y)
        return torch.autograd.grad(loss, params, create_graph=True)

    with explicit_attention(model):
        g = grads()
        dot = sum((gi * vi).sum() for gi, vi in zip(g, v, strict=True))
        hv = torch.autograd.grad(dot, params)
        eps = 1e-5
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.add_(eps * vi)
        g_plus = [gi.detach() for gi in grads()]
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.sub_(2 * eps * vi)
        g_minus = [gi.detach() for gi in grads()]
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.add_(eps * vi)
    fd = [(a - b) / (2 * eps) for a, b in zip(g_plus, g_minus, strict=True)]
    flat = torch.cat([h.flatten() for h in hv])
    flat_fd = torch.cat([f.flatten() for f in fd])
    return flat, flat_fd


# Models whose non-linearities are smooth (GELU), so finite differences are accurate.
@pytest.mark.parametrize("name", ["vit_nano", "pit_nano", "swin_nano"])
def test_double_backward_under_explicit_attention_matches_finite_differences(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, image_size=16, in_chans=1).double().eval()
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    hv, fd = _hvp_and_finite_difference(model, x, y)
    assert (hv - fd).norm() / hv.norm() < 1e-5


def test_alternet_hessian_vector_products_are_symmetric():
    # ReLU kinks make finite differences useless here; symmetry (u.Hv == v.Hu) still must hold.
    torch.manual_seed(0)
    model = create_model("alternet_nano", num_classes=3, image_size=16, in_chans=1)
    model = model.double().eval()
    x, y = torch.randn(4, 1, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    params = list(model.parameters())
    u = [torch.randn_like(p) for p in params]
    v = [torch.randn_like(p) for p in params]
    with explicit_attention(model):
        g = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params, create_graph=True)
        gv = sum((gi * vi).sum() for gi, vi in zip(g, v, strict=True))
        hv = torch.autograd.grad(gv, params, retain_graph=True)
        gu = sum((gi * ui).sum() for gi, ui in zip(g, u, strict=True))
        hu = torch.autograd.grad(gu, params)
    u_hv = sum((a * b).sum() for a, b in zip(u, hv, strict=True))
    v_hu = sum((a * b).sum() for a, b in zip(v, hu, strict=True))
    assert u_hv.abs() > 1e-6
    assert torch.allclose(u_hv, v_hu, rtol=1e-9)


def test_lesioning_an_unknown_or_branchless_block_is_a_clear_error():
    model = create_model("vit_nano", num_classes=3)
    assert "embed" not in lesionable(model) and "block0.msa" in lesionable(model)
    with pytest.raises(VitlensError, match="no block named"), lesioned(model, ["block99.msa"]):
        pass
    with pytest.raises(VitlensError, match="no residual branch"), lesioned(model, ["head"]):
        pass


def test_describe_refuses_an_unknown_model():
    with pytest.raises(VitlensError, match="cannot see inside"):
        describe(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))


def test_describe_unwraps_data_parallel():
    model = create_model("resnet_nano", num_classes=3)
    assert [b.name for b in describe(nn.DataParallel(model))] == [b.name for b in describe(model)]


def _brute_force_allowed(H: int, W: int, window: int, shift: int):
    """Which (query, key) pairs of each window may attend, from first principles, and which
    positions hold real (not padding) tokens."""
    Hp, Wp = H + (-H) % window, W + (-W) % window
    # Original coordinates of the token at each position of the rolled, padded grid.
    rows = torch.full((Hp, Wp), -1)
    cols = torch.full((Hp, Wp), -1)
    r = (torch.arange(H) + shift) % H
    c = (torch.arange(W) + shift) % W
    rows[:H, :W] = r[:, None].expand(H, W)
    cols[:H, :W] = c[None, :].expand(H, W)
    allowed, reals = [], []
    for wr in range(0, Hp, window):
        for wc in range(0, Wp, window):
            rr = rows[wr : wr + window, wc : wc + window].flatten()
            cc = cols[wr : wr + window, wc : wc + window].flatten()
            real = rr >= 0
            # A pair may attend if the key is real and the pair is not split by the wrap-around:
            # both tokens came from the same side of the cyclic seam in each axis.
            wrapped_r = (rr >= 0) & (rr < shift)
            wrapped_c = (cc >= 0) & (cc < shift)
            same = (wrapped_r[:, None] == wrapped_r[None]) & (wrapped_c[:, None] == wrapped_c[None])
            allowed.append(same & real[None, :])
            reals.append(real)
    return torch.stack(allowed), torch.stack(reals)


@pytest.mark.parametrize("H", [4, 5, 6, 7, 8, 10])
@pytest.mark.parametrize("shift", [0, 2])
def test_window_mask_matches_brute_force(H, shift):
    from vitlens.models.layers import window_mask

    window = 4
    Hp = H + (-H) % window
    mask = window_mask(H, H, Hp, Hp, window, shift)
    expected, real = _brute_force_allowed(H, H, window, shift)
    if mask is None:
        assert expected.all()
    else:
        # Rows of padding queries are discarded after attention; compare the real queries.
        assert torch.equal((mask == 0)[real], expected[real])
