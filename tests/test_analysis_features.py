"""Feature-map analyses: Fourier, variance, CKA, lesions and attention statistics (issue 4).

Each analysis is checked against an analytic oracle on hand-made maps, then run end to end on a
vitlens model and on timm's ViT and ResNet; every Result round-trips through JSON and draws a PNG.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from vitlens.analysis import load_result
from vitlens.analysis.attention import AttentionResult, attention_stats, head_statistics
from vitlens.analysis.cka import CKAResult, MinibatchCKA, cka, gram, linear_cka
from vitlens.analysis.fourier import (
    EPS,
    FourierResult,
    delta_log_amplitude,
    diagonal,
    diagonal_spectrum,
    fourier,
    has_nyquist,
    log_amplitude_curve,
    notebook_point,
)
from vitlens.analysis.geometry import Geometry, distance_matrix
from vitlens.analysis.lesion import LesionResult, lesion
from vitlens.analysis.variance import VarianceResult, spatial_variance, variance
from vitlens.anatomy import describe, lesioned, record
from vitlens.errors import VitlensError
from vitlens.models import create_model
from vitlens.report.plots import attention as attention_plots
from vitlens.report.plots import cka as cka_plots
from vitlens.report.plots import fourier as fourier_plots
from vitlens.report.plots import lesion as lesion_plots
from vitlens.report.plots import variance as variance_plots

CLASSES = 5


def batches(sizes=(8, 8), seed=0, side=32):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, 3, side, side, generator=g), torch.randint(0, CLASSES, (n,), generator=g))
        for n in sizes
    ]


# --------------------------------------------------------------------------------------------
# Fourier


def test_diagonal_reaches_nyquist_for_even_sides():
    rows, cols, freqs = diagonal(16, 16)
    assert rows == cols == list(range(9))
    assert freqs == pytest.approx([k / 8 for k in range(9)])  # k * 2/16 (units of π), up to 1.0
    assert diagonal(15, 15)[2][-1] == pytest.approx(14 / 15)
    rows, cols, freqs = diagonal(8, 16)  # non-square: 5 points, same fraction of each Nyquist
    assert rows == [0, 1, 2, 3, 4] and cols == [0, 2, 4, 6, 8] and freqs[-1] == pytest.approx(1.0)
    with pytest.raises(VitlensError):
        diagonal(1, 1)


@pytest.mark.parametrize("f", [1, 3, 6])
def test_sinusoid_peaks_at_its_frequency(f):
    n = 16
    y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    phases = torch.tensor([0.0, 0.7, 2.1])[:, None, None]
    maps = torch.cos(2 * math.pi * f * (x + y) / n + phases)[None]  # (1, 3, n, n)
    curve = log_amplitude_curve(maps)
    assert int(curve.argmax()) == f
    assert diagonal(n, n)[2][f] == pytest.approx(2 * f / n)


def test_constant_maps_have_flat_curves():
    assert torch.equal(
        delta_log_amplitude(torch.zeros(2, 3, 12, 12)), torch.zeros(7, dtype=torch.float64)
    )
    # A delta impulse has a white spectrum: |F| = 1 everywhere, so ΔLog is flat zero.
    impulse = torch.zeros(1, 1, 14, 14)
    impulse[..., 3, 5] = 1.0
    assert torch.allclose(delta_log_amplitude(impulse), torch.zeros(8, dtype=torch.float64))
    # A non-zero constant has all its energy at DC: flat beyond 0 at log(eps) - log(c·HW + eps).
    c, n = 0.37, 14
    delta = delta_log_amplitude(torch.full((2, 3, n, n), c))
    expected = math.log(EPS) - math.log(c * n * n + EPS)
    assert delta[0] == 0
    assert torch.allclose(delta[1:], torch.full((7,), expected, dtype=torch.float64), atol=1e-8)


def test_box_blur_lowers_high_frequencies_by_its_transfer_function():
    n = 16
    maps = torch.randn(2, 3, n, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    blurred = sum(torch.roll(maps, (i, j), (2, 3)) for i in (-1, 0, 1) for j in (-1, 0, 1)) / 9
    change = delta_log_amplitude(blurred) - delta_log_amplitude(maps)
    # Circular 3x3 box blur multiplies F[k, k] by ((1 + 2cos(2πk/n)) / 3)²; DC by 1.
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    transfer = ((1 + 2 * torch.cos(2 * math.pi * k / n)) / 3) ** 2
    assert torch.allclose(change, transfer.abs().log(), atol=1e-4)
    assert change[-1] == pytest.approx(math.log(1 / 9), abs=1e-4)  # lower at 1.0π


@pytest.mark.parametrize("side", [(7, 7), (8, 8), (14, 14), (16, 16), (5, 8), (12, 9)])
def test_direct_diagonal_equals_the_fft2_diagonal(side):
    """The one-matmul diagonal equals fft2's diagonal to 1e-10 (float64), odd and even sides."""
    H, W = side
    g = torch.Generator().manual_seed(H * 100 + W)
    maps = torch.randn(3, 4, H, W, generator=g, dtype=torch.float64) * 5 + 2
    rows, cols, _ = diagonal(H, W)
    expected = torch.fft.fft2(maps)[..., rows, cols]
    re, im = diagonal_spectrum(maps)
    scale = expected.abs().max()
    assert ((re - expected.real).abs().max() / scale) < 1e-10
    assert ((im - expected.imag).abs().max() / scale) < 1e-10
    # The same through a token layout: a (B, C, H, W) view of a (B, H*W, C) tensor.
    tokens = maps.permute(0, 2, 3, 1).reshape(3, H * W, 4)
    view = tokens.transpose(1, 2).reshape(3, 4, H, W)
    re_view, im_view = diagonal_spectrum(view)
    assert torch.allclose(re_view, re, rtol=0, atol=1e-10 * scale)
    assert torch.allclose(im_view, im, rtol=0, atol=1e-10 * scale)


def test_square_diagonal_is_the_dft_of_folded_anti_diagonal_sums():
    """F[k, k] = sum_s c_s e^{-2πi k s / H} with c_s the sum of x[m, n] over m + n ≡ s (mod H)."""
    H = 10
    x = torch.randn(H, H, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    m, n = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    folded = torch.zeros(H, dtype=torch.float64).index_add_(
        0, ((m + n) % H).reshape(-1), x.reshape(-1)
    )
    k = torch.arange(H // 2 + 1)
    expected = torch.fft.fft(folded)[k]
    re, im = diagonal_spectrum(x[None, None])
    assert torch.allclose(torch.complex(re, im)[0, 0], expected, atol=1e-10)


def notebook_delta_log_amplitude(maps: torch.Tensor) -> torch.Tensor:
    """The authors' notebook, written out: log|fft2|, shift, mean over B and C, diag()[H/2:]."""
    H, W = maps.shape[-2:]
    f = torch.log(torch.fft.fft2(maps.double()).abs() + EPS)
    f = torch.roll(f, shifts=(H // 2, W // 2), dims=(-2, -1)).mean(dim=(0, 1))
    half = f.diagonal()[H // 2 :]
    return half - half[0]


@pytest.mark.parametrize("H", [8, 14])
def test_high_frequency_is_the_notebooks_last_point_on_even_maps(H):
    maps = torch.randn(4, 6, H, H, generator=torch.Generator().manual_seed(H), dtype=torch.float64)
    ours = delta_log_amplitude(maps)
    theirs = notebook_delta_log_amplitude(maps)
    assert len(theirs) == H // 2 and len(ours) == H // 2 + 1  # ours adds the Nyquist point
    assert torch.allclose(ours[:-1], theirs, atol=1e-10)
    assert notebook_point(H, H) == H // 2 - 1 and has_nyquist(H, H)
    assert diagonal(H, H)[2][notebook_point(H, H)] == pytest.approx(1 - 2 / H)
    # Nyquist: the (π, π) entry F[H/2, H/2] of the uncentred spectrum, relative to DC.
    logs = torch.log(torch.fft.fft2(maps).abs() + EPS).mean(dim=(0, 1))
    assert ours[-1] == pytest.approx(float(logs[H // 2, H // 2] - logs[0, 0]), abs=1e-10)


def test_odd_maps_have_one_definition_and_no_nyquist():
    maps = torch.randn(2, 3, 7, 7, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.allclose(delta_log_amplitude(maps), notebook_delta_log_amplitude(maps), atol=1e-10)
    assert notebook_point(7, 7) == 3 and not has_nyquist(7, 7)


def test_fourier_result_reports_the_notebook_point_and_nyquist_separately():
    """vit_nano at 32 px has even 8x8 token maps: high_frequency is the notebook's k = 3 point."""
    torch.manual_seed(0)
    model = create_model("vit_nano", num_classes=CLASSES, depth=2).eval()
    data = batches((3, 2))
    result = fourier(model, data)
    maps_by_block = [record(model, x)[0] for x, _ in data]
    for i, name in enumerate(result.names):
        assert result.map_sizes[i] == [8, 8]
        curve = notebook_delta_log_amplitude(torch.cat([m[name] for m in maps_by_block]))
        assert result.high_frequency[i] == pytest.approx(float(curve[-1]), abs=1e-9)
        assert result.high_frequency_at[i] == pytest.approx(0.75)  # (1 - 2/8)π
        assert result.nyquist[i] == result.delta_log_amplitude[i][-1]
        assert result.frequencies[i][-1] == 1.0


# --------------------------------------------------------------------------------------------
# Variance


def test_spatial_variance_oracles():
    assert spatial_variance(torch.full((3, 4, 5, 5), 2.5)) == 0.0
    maps = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 4.0]]]])  # (1, 2, 2, 2)
    # Channel 0: squares about 2.5 sum to 5, / 3 -> 5/3; channel 1: about 1 sum to 12, / 3 -> 4.
    assert spatial_variance(maps) == pytest.approx((5 / 3 + 4) / 2)


def test_spatial_variance_matches_torch_var_on_maps_and_token_views():
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64) * 3 + 10
    expected = maps.var(dim=(-2, -1), correction=1).mean().item()
    assert spatial_variance(maps) == pytest.approx(expected, rel=1e-12)
    tokens = torch.cat([torch.zeros(3, 1, 4, dtype=torch.float64), maps.flatten(2).mT], dim=1)
    view = tokens[:, 1:].transpose(1, 2).reshape(3, 4, 6, 6)  # a ViT layout's map, CLS dropped
    assert spatial_variance(view) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------
# CKA


def reference_unbiased_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Full-batch linear CKA with Song et al.'s unbiased HSIC, written out as the trace formula."""

    def hsic(gx, gy):
        n = gx.shape[0]
        gx, gy = gx.clone(), gy.clone()
        gx.fill_diagonal_(0)
        gy.fill_diagonal_(0)
        one = torch.ones(n, 1, dtype=torch.float64)
        value = (
            torch.trace(gx @ gy).item()
            + (one.T @ gx @ one).item() * (one.T @ gy @ one).item() / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one.T @ gx @ gy @ one).item()
        )
        return value / (n * (n - 3))

    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    gx, gy = x @ x.T, y @ y.T
    return hsic(gx, gy) / math.sqrt(hsic(gx, gx) * hsic(gy, gy))


def test_cka_invariances():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 30, generator=g), torch.randn(20, 12, generator=g)
    q1 = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))[0]
    q2 = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))[0]
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.5 * x.double() @ q1) == pytest.approx(1.0, abs=1e-10)
    base = linear_cka(x, y)
    assert linear_cka(0.2 * x.double() @ q1, 7.0 * y.double() @ q2) == pytest.approx(
        base, abs=1e-10
    )
    assert base == pytest.approx(reference_unbiased_cka(x, y), abs=1e-12)


def test_minibatch_sums_weight_batches_by_size():
    g = torch.Generator().manual_seed(2)
    parts = [(torch.randn(n, 6, generator=g), torch.randn(n, 4, generator=g)) for n in (9, 5)]
    acc = MinibatchCKA(1, 1, same=False, device=torch.device("cpu"))
    for x, y in parts:
        acc.update(gram(x)[None], gram(y)[None])
    # HSIC sums weighted by n, from per-batch two-block HSICs.
    stats = []
    for x, y in parts:
        both = MinibatchCKA(2, 2, same=True, device=torch.device("cpu"))
        both.update(torch.stack([gram(x), gram(y)]))
        stats.append(both.cross / x.shape[0])  # (2, 2) HSIC matrix of this batch
    total = 9 * stats[0] + 5 * stats[1]
    expected = total[0, 1] / math.sqrt(total[0, 0] * total[1, 1])
    assert float(acc.value()) == pytest.approx(float(expected), abs=1e-12)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_model("vit_nano", num_classes=CLASSES, image_size=16, depth=3).eval()


def test_cka_agrees_with_full_batch_reference_when_data_is_one_batch(vit):
    data = batches((12,), side=16)
    result = cka(vit, data)
    maps, _ = record(vit, data[0][0])
    names = [b.name for b in describe(vit)]
    assert result.names_a == result.names_b == names
    for i in range(len(names)):
        for j in range(len(names)):
            ref = reference_unbiased_cka(maps[names[i]], maps[names[j]])
            assert result.matrix[i][j] == pytest.approx(ref, abs=1e-9)


def test_cka_ragged_batches_two_models_and_too_small_batches(vit):
    data = batches((8, 8, 5), side=16)
    one = cka(vit, data)
    m = torch.tensor(one.matrix)
    assert torch.isfinite(m).all() and torch.allclose(m.diagonal(), torch.ones(len(m)), atol=1e-12)
    assert torch.allclose(m, m.T, atol=1e-12)
    two = cka(vit, data, other=copy.deepcopy(vit))  # a copy: the two-model path, same numbers
    assert torch.allclose(torch.tensor(two.matrix), m, atol=1e-10)
    with pytest.raises(VitlensError, match="too small"):
        cka(vit, batches((8, 3), side=16))
    images, labels = (torch.cat(t) for t in zip(*batches((8, 8, 3), side=16), strict=True))
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)  # 19 images: 8, 8, 3
    with pytest.raises(VitlensError, match="drop_last"):
        cka(vit, loader)  # refused before the data pass, not after two batches
    assert cka(vit, loader, max_batches=2).n_images == 16
    dropped = DataLoader(TensorDataset(images, labels), batch_size=8, drop_last=True)
    assert cka(vit, dropped).n_batches == 2


# --------------------------------------------------------------------------------------------
# Lesion


def test_lesioning_nothing_changes_nothing(vit):
    data = batches((8, 8), side=16)
    with torch.no_grad():
        plain = [vit(x) for x, _ in data]
        with lesioned(vit, []):
            same = [vit(x) for x, _ in data]
    assert all(torch.equal(a, b) for a, b in zip(plain, same, strict=True))
    result = lesion(vit, data, blocks=[])
    correct = sum(int((p.argmax(-1) == y).sum()) for p, (_, y) in zip(plain, data, strict=True))
    assert result.names == [] and result.intact_accuracy == correct / 16
    nll = sum(
        float(F.cross_entropy(p, y, reduction="sum")) for p, (_, y) in zip(plain, data, strict=True)
    )
    assert result.intact_nll == pytest.approx(nll / 16, rel=1e-6)


def test_lesioning_a_branch_that_matters_lowers_accuracy():
    torch.manual_seed(3)
    model = create_model("vit_nano", num_classes=CLASSES, image_size=16, depth=3).eval()
    with torch.no_grad():
        model.blocks[1].mlp.fc2.weight.mul_(200.0)  # this MLP now dominates the stream
    images = torch.randn(48, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        labels = model(images).argmax(-1)  # the intact model is right by construction
    result = lesion(model, [(images[:24], labels[:24]), (images[24:], labels[24:])])
    assert result.intact_accuracy == 1.0
    worst = result.names[min(range(len(result.names)), key=result.delta_accuracy.__getitem__)]
    assert worst == "block1.mlp"
    i = result.names.index("block1.mlp")
    assert result.accuracy[i] < 0.7 and result.delta_nll[i] > 0


# --------------------------------------------------------------------------------------------
# Attention statistics


def test_self_attention_has_zero_distance_entropy_and_specificity():
    attn = torch.eye(1 + 16).expand(3, 2, 17, 17)  # 3 images, 2 heads, CLS + 4x4 grid
    distance, entropy, specificity = head_statistics(attn, Geometry.global_grid((4, 4), prefix=1))
    assert distance == [0.0, 0.0] and entropy == [0.0, 0.0] and specificity == [0.0, 0.0]


def closed_form_uniform_distance(h: int, w: int, ph: float, pw: float) -> float:
    """Mean distance between two uniformly drawn cells of an h x w grid, by counting offsets."""
    total = sum(
        (h - abs(dr)) * (w - abs(dc)) * math.hypot(dr * ph, dc * pw)
        for dr in range(-h + 1, h)
        for dc in range(-w + 1, w)
    )
    return total / (h * w) ** 2


@pytest.mark.parametrize(
    ("grid", "prefix", "pixels"), [((5, 5), 0, (2.0, 2.0)), ((3, 6), 1, (4.0, 1.0))]
)
def test_uniform_attention_has_the_closed_form_distance(grid, prefix, pixels):
    n = prefix + grid[0] * grid[1]
    attn = torch.full((2, 1, n, n), 1.0 / n)
    geometry = Geometry.global_grid(grid, prefix, pixels)
    distance, entropy, specificity = head_statistics(attn, geometry)
    assert distance[0] == pytest.approx(closed_form_uniform_distance(*grid, *pixels), rel=1e-6)
    assert entropy[0] == pytest.approx(math.log(n), rel=1e-6)
    assert specificity[0] == pytest.approx(0.0, abs=1e-6)
    # On a 1 x n line with unit steps the mean |i - j| is (n² - 1) / (3n).
    line = head_statistics(torch.full((1, 1, 7, 7), 1 / 7), Geometry.global_grid((1, 7)))[0][0]
    assert line == pytest.approx((49 - 1) / 21, rel=1e-6)


def test_specificity_of_two_different_maps():
    n = 9
    attn = torch.stack([torch.eye(n), torch.full((n, n), 1 / n)])[:, None]  # (2 images, 1 head)
    spec = head_statistics(attn, Geometry.global_grid((3, 3)))[2][0]
    # Each image's row is (e_q - u)/2 from the mean row; ‖e_q - u‖² = 1 - 1/n.
    assert spec == pytest.approx(0.5 * math.sqrt(1 - 1 / n), rel=1e-6)


def test_windows_tile_a_padded_grid_and_distances_stay_inside_a_window():
    geometry = Geometry.windowed((6, 6), (4, 4), pixels=(2.0, 2.0))
    assert geometry.n_windows == 4
    assert geometry.valid.sum(1).tolist() == [16, 8, 8, 4]  # padding at the bottom and right
    # Uniform attention over the real tokens of each window: the bottom-right window is 2 x 2.
    attn = geometry.valid[:, None, None, :].float().expand(4, 1, 16, 16)
    attn = attn / attn.sum(-1, keepdim=True)
    distance = head_statistics(attn, geometry)[0][0]
    expected = (
        16 * closed_form_uniform_distance(4, 4, 2, 2)
        + 2 * 8 * closed_form_uniform_distance(4, 2, 2, 2)
        + 4 * closed_form_uniform_distance(2, 2, 2, 2)
    ) / 36
    assert distance == pytest.approx(expected, rel=1e-6)
    assert distance_matrix((2, 2), (3.0, 4.0))[0, 3] == pytest.approx(5.0)


def test_pooled_keys_measure_distances_between_the_two_grids_cell_centres():
    from vitlens.analysis.geometry import pooled_grid, resolve_geometry

    # A 4 x 4 grid of 2-pixel cells attending to its 2 x 2 pooling (4-pixel cells).
    geometry = Geometry.reduced((4, 4), (2, 2), pixels=(2.0, 2.0))
    # Query cell (0, 0) is centred at (1, 1) px, key cell (1, 1) at (6, 6) px.
    assert geometry.distances()[0, 3] == pytest.approx(math.hypot(5, 5))
    # A query attending only to the key cell that pools it is 1.414 px (half a diagonal of
    # a 2-pixel cell) from that cell's centre, whichever corner it is in.
    pools = torch.tensor([(r // 2) * 2 + c // 2 for r in range(4) for c in range(4)])
    attn = F.one_hot(pools, 4).float()[None, None]  # (1 image, 1 head, 16 queries, 4 keys)
    distance, entropy, _ = head_statistics(attn, geometry)
    assert distance[0] == pytest.approx(math.sqrt(2), rel=1e-6) and entropy[0] == 0.0
    uniform = head_statistics(torch.full((1, 1, 16, 4), 0.25), geometry)[1][0]
    assert uniform == pytest.approx(math.log(4), rel=1e-6)  # log of the keys, not the queries
    # Found from the shapes: coarser keys (PVT, Twins) and finer ones (MViT's pooled queries).
    assert pooled_grid(49, (56, 56)) == (7, 7) and pooled_grid(784, (14, 14)) == (28, 28)
    assert pooled_grid(10, (56, 56)) is None
    block = SimpleNamespace(name="b", layout=SimpleNamespace(kind="tokens", prefix=1))
    found = resolve_geometry(block, (2, 3, 1 + 64, 1 + 16), 2, (8, 8), (32, 32), None)
    assert found.keys == (4, 4) and found.prefix == 1 and found.pixels == (4.0, 4.0)
    # Queries and keys both pooled: attention on the 4 x 4 grid of 8-pixel cells.
    both = resolve_geometry(block, (2, 3, 1 + 16, 1 + 16), 2, (8, 8), (32, 32), None)
    assert both.window == both.keys == (4, 4) and both.pixels == (8.0, 8.0)


def test_windowed_models_report_their_windows():
    torch.manual_seed(0)
    swin = create_model("swin_nano", num_classes=CLASSES, image_size=16)
    result = attention_stats(swin, batches((4,), side=16))
    assert result.windows[0] == [4, 4] and result.grids[0] == [8, 8]
    assert result.pixels_per_token[0] == [2.0, 2.0] and result.prefix[0] == 0
    # Nothing inside a 4 x 4 window of 2-pixel tokens is farther than the window's diagonal.
    far = math.hypot(6, 6)
    assert all(0 < d < far for block in result.distance[:2] for d in block)


# --------------------------------------------------------------------------------------------
# End to end on vitlens and timm models; JSON round trip; figures


def _timm():
    # Only the timm models need timm: the oracles above run without it.
    return pytest.importorskip("timm", reason="the timm end-to-end cases need timm")


def timm_vit():
    return _timm().create_model(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=CLASSES,
    )


MODELS = {
    "vitlens_vit": lambda: create_model("vit_nano", num_classes=CLASSES, depth=2),
    "timm_vit": timm_vit,
    "timm_resnet18": lambda: _timm().create_model("resnet18", num_classes=CLASSES),
}
ANALYSES = {
    "fourier": (fourier, FourierResult, fourier_plots.plot_fourier),
    "variance": (variance, VarianceResult, variance_plots.plot_variance),
    "cka": (cka, CKAResult, cka_plots.plot_cka),
    "lesion": (lesion, LesionResult, lesion_plots.plot_lesion),
    "attention": (attention_stats, AttentionResult, attention_plots.plot_attention),
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: make() for name, make in MODELS.items() if not name.startswith("timm")}


@pytest.fixture(scope="module")
def timm_models(models):
    torch.manual_seed(0)
    return {**models, **{name: make() for name, make in MODELS.items() if name.startswith("timm")}}


@pytest.mark.parametrize("analysis", list(ANALYSES))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_analysis_runs_round_trips_and_plots(model_name, analysis, tmp_path, request):
    models = request.getfixturevalue("timm_models" if model_name.startswith("timm") else "models")
    run, result_type, plot = ANALYSES[analysis]
    model, data = models[model_name], batches((4, 4, 6))
    if analysis == "attention" and model_name == "timm_resnet18":
        with pytest.raises(VitlensError, match="no MSA block"):
            run(model, data)
        return
    result = run(model, data, max_batches=2)
    assert isinstance(result, result_type)
    assert result.n_batches == 2 and result.n_images == 8
    assert model.training  # the analysis restored the model's mode
    again = load_result(result.save(tmp_path / f"{analysis}.json"))
    assert again == result
    png = plot([again], tmp_path / f"{analysis}.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_fourier_and_variance_skip_one_by_one_maps(timm_models):
    models = timm_models
    data = batches((4,))
    blocks = describe(models["timm_resnet18"])
    four = fourier(models["timm_resnet18"], data)
    var = variance(models["timm_resnet18"], data)
    # timm ResNet-18 at 32 px: stage 3 maps are 1x1, the head is the logits.
    assert (
        four.names
        == var.names
        == [b.name for b in blocks if not b.name.startswith(("stage3", "head"))]
    )
    assert all(min(s) >= 2 for s in four.map_sizes)
    assert four.depths[0] == 0.0 and four.frequencies[0][-1] == 1.0
