"""Robustness: the 15 corruptions, CIFAR-C files, frequency-band noise, evaluations and figures.

Reference values are computed here independently, in numpy, from the definitions in
shared/reference/cifar_c_params.md (Hendrycks & Dietterich 2019) and paper.md §1.10.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vitlens.analysis import load_result
from vitlens.analysis.corruptions import (
    CorruptionResult,
    clean_batches,
    corruption_errors,
    corruption_robustness,
    corruption_robustness_from_files,
)
from vitlens.analysis.freqnoise import FreqNoiseResult, frequency_noise_robustness
from vitlens.data.dataset import mix_seed
from vitlens.errors import ConfigError, UnknownNameError, VitlensError
from vitlens.report.plots.corruptions import plot_corruption_bars, plot_corruption_heatmap
from vitlens.report.plots.freqnoise import plot_frequency_noise
from vitlens.robustness import (
    CORRUPTIONS,
    band_mask,
    band_noise,
    band_pass,
    corrupt,
    corruption_parameter,
    load_cifar_c,
    sign_noise,
)
from vitlens.robustness.blur import defocus_blur, disk_kernel, glass_blur
from vitlens.robustness.corruptions import RANDOM
from vitlens.robustness.digital import elastic_transform
from vitlens.robustness.noise import gaussian_noise, impulse_noise
from vitlens.robustness.ops import motion_blur, motion_kernel
from vitlens.robustness.params import CIFAR, IMAGENET, zoom_factors
from vitlens.robustness.weather import frost

# -- fixed test images ----------------------------------------------------------------------


def _fashion(n: int) -> torch.Tensor:
    """The first n 28x28 Fashion-MNIST test images (shipped with vitlens), float in [0, 1]."""
    from vitlens.data import load_dataset

    return load_dataset("fashion-mnist-mini", "test").images[:n].float() / 255


def _color() -> torch.Tensor:
    """Eight 32x32 colour images: three garments as channels, over smooth colour gradients."""
    g = F.pad(_fashion(24), (2, 2, 2, 2))  # (24, 1, 32, 32)
    garments = torch.cat([g[0:8], g[8:16], g[16:24]], dim=1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    ramp = torch.stack([yy, xx, 1 - (yy + xx) / 2])[None]
    return (0.6 * garments + 0.4 * ramp).clamp(0, 1)


GRAY = _fashion(8)
COLOR = _color()


def l1(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().mean().item()


# Corruptions whose reference parameters do not make the pixel distance grow with severity; each
# has its own test below.
NOT_MONOTONE = {"glass_blur", "frost", "elastic_transform"}


# -- every corruption -----------------------------------------------------------------------


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruption_contract(name):
    for x in (COLOR, GRAY):
        dists = []
        for s in (1, 2, 3, 4, 5):
            y = corrupt(x, name, s, seed=7)
            assert y.shape == x.shape and y.dtype == x.dtype
            assert y.min() >= 0 and y.max() <= 1
            assert torch.equal(y, corrupt(x, name, s, seed=7)), "not deterministic for a seed"
            dists.append(l1(x, y))
        if name in RANDOM:
            assert not torch.equal(corrupt(x, name, 5, seed=7), corrupt(x, name, 5, seed=8))
        if name not in NOT_MONOTONE:
            assert all(b >= a - 1e-4 for a, b in zip(dists, dists[1:], strict=False)), dists
            assert dists[-1] > dists[0] > 0, dists
    # uint8 in, uint8 out (truncated like np.uint8); one (C, H, W) image works too.
    u = (COLOR[:2] * 255).round().to(torch.uint8)
    out = corrupt(u, name, 3, seed=1)
    assert out.dtype == torch.uint8 and out.shape == u.shape
    expected = torch.floor(corrupt(u.float() / 255, name, 3, seed=1) * 255 + 1e-3)
    assert torch.equal(out, expected.to(torch.uint8))
    assert corrupt(COLOR[0], name, 2, seed=1).shape == COLOR[0].shape


def test_frost_share_of_the_image_falls_with_severity():
    # (a, b) = (1, .2) (1, .3) (.9, .4) (.85, .4) (.75, .45): the image weight falls while the
    # frost weight rises, so |out - x| = |(a - 1) x + b F| need not grow, but the correlation
    # with the clean image falls.
    x = COLOR
    xc = x - x.mean(dim=(1, 2, 3), keepdim=True)
    corr = []
    for s in (1, 2, 3, 4, 5):
        y = corrupt(x, "frost", s, seed=3)
        yc = y - y.mean(dim=(1, 2, 3), keepdim=True)
        corr.append((xc * yc).sum().item() / (xc.norm() * yc.norm()).item())
    assert all(b < a for a, b in zip(corr, corr[1:], strict=False)), corr
    d = [l1(x, corrupt(x, "frost", s, seed=3)) for s in (1, 2, 3)]
    assert d[0] < d[1] < d[2]
    # A given texture (e.g. the reference photographs) gives the reference formula exactly.
    ref = np.clip(0.9 * x.numpy() + 0.4 * 0.5, 0, 1)
    out = frost(x, (0.9, 0.4), generator=torch.Generator(), texture=torch.tensor(0.5))
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6)


def test_glass_blur_grows_with_iterations():
    # (sigma, delta, iterations) = (.05,1,1) (.25,1,1) (.4,1,1) (.25,1,2) (.4,1,2). The blur
    # smooths the shuffle's pixel noise away as much as it adds blur, so |out - x| is not
    # monotone in sigma (on these images .4 is closer to x than .25); the reference's severity
    # mostly lies in the iterations: two shuffles move pixels further than one.
    for x in (COLOR, GRAY):
        d = [l1(x, corrupt(x, "glass_blur", s, seed=5)) for s in (1, 2, 3, 4, 5)]
        assert d[1] == pytest.approx(d[0], rel=0.05)  # sigma .25 is almost no blur
        assert min(d[3], d[4]) > 1.3 * max(d[:3])


def _glass_shuffle_reference(y: np.ndarray, off: np.ndarray, d: int) -> np.ndarray:
    # The reference loop: bottom-right to top-left, in place, a copy (its view "swap" aliases).
    y = y.copy()
    h, w = y.shape[-2:]
    for r in range(h - d, d, -1):
        for c in range(w - d, d, -1):
            dx, dy = off[0, r - d - 1, c - d - 1], off[1, r - d - 1, c - d - 1]
            y[:, r, c] = y[:, r + dy, c + dx]
    return y


@pytest.mark.parametrize("d", [1, 2, 3])
def test_glass_shuffle_equals_the_sequential_reference(d):
    # sigma 0.05 has kernel radius 0, so only the shuffle acts; same offsets as drawn inside.
    x = torch.floor(torch.rand(2, 3, 14, 12, generator=torch.Generator().manual_seed(1)) * 255)
    x = x / 255
    out = glass_blur(x, (0.05, d, 2), generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    offs = [torch.randint(-d, d, (2, 2, 14 - 2 * d, 12 - 2 * d), generator=g) for _ in range(2)]
    for i in range(2):
        ref = x[i].numpy()
        for off in offs:
            ref = _glass_shuffle_reference(ref, off[:, i].numpy(), d)
        np.testing.assert_array_equal(out[i].numpy(), ref)


def test_elastic_field_grows_while_the_affine_jitter_shrinks():
    # CIFAR (alpha, sigma, beta): the displacement field grows with severity (alpha 0 .. 3.2) but
    # the affine jitter beta falls (2.56 .. 0.96); the reference's overall change therefore
    # falls with severity. Check both parts.
    x = COLOR
    fields = []
    for s in (2, 3, 4, 5):
        alpha, sigma, _ = corruption_parameter("elastic_transform", s, 32, 32)
        g = torch.Generator().manual_seed(0)
        fields.append(l1(x, elastic_transform(x, (alpha, sigma, 0.0), generator=g)))
    assert all(b > a for a, b in zip(fields, fields[1:], strict=False)), fields
    whole = [l1(x, corrupt(x, "elastic_transform", s, seed=0)) for s in (1, 5)]
    assert whole[0] > whole[1]
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(elastic_transform(x, (0.0, 0.0, 0.0), generator=g), x, atol=1e-6)
    # Scaled from 32 px: 28 px images get 28/32 of the CIFAR constants.
    assert corruption_parameter("elastic_transform", 3, 28, 28) == pytest.approx(
        tuple(v * 28 / 32 for v in CIFAR["elastic_transform"][2])
    )


def test_imagenet_parameters_above_32_pixels():
    assert corruption_parameter("gaussian_noise", 1, 32, 32) == 0.04
    assert corruption_parameter("gaussian_noise", 1, 64, 64) == 0.08
    assert corruption_parameter("gaussian_noise", 1, 64, 64, params="cifar") == 0.04
    assert (
        corruption_parameter("elastic_transform", 1, 224, 224) == IMAGENET["elastic_transform"][0]
    )
    x = F.interpolate(COLOR[:2], size=(64, 64), mode="bilinear")
    for name in CORRUPTIONS:
        y = corrupt(x, name, 5, seed=0)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and l1(x, y) > 0, name


def test_bad_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="before normalisation"):
        corrupt(COLOR - 0.5, "fog", 1)
    with pytest.raises(UnknownNameError, match="unknown corruption"):
        corrupt(COLOR, "rain", 1)
    with pytest.raises(ConfigError, match="severity"):
        corrupt(COLOR, "fog", 6)
    with pytest.raises(ConfigError, match="C = 1 or 3"):
        corrupt(torch.rand(1, 2, 8, 8), "fog", 1)


# -- the reference formulas, independently --------------------------------------------------


def test_gaussian_noise_matches_reference():
    n = torch.randn(COLOR.shape, generator=torch.Generator().manual_seed(0))
    for s, c in enumerate(CIFAR["gaussian_noise"], start=1):
        ours = gaussian_noise(COLOR, c, generator=torch.Generator(), noise=n)
        ref = np.clip(COLOR.numpy() + n.numpy() * c, 0, 1)
        np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)
        assert corruption_parameter("gaussian_noise", s, 32, 32) == c


def test_impulse_noise_matches_reference():
    u = torch.rand((2, *COLOR.shape), generator=torch.Generator().manual_seed(0))
    c = CIFAR["impulse_noise"][4]
    ours = impulse_noise(COLOR, c, generator=torch.Generator(), uniforms=u).numpy()
    ref = COLOR.numpy().copy()
    flipped, salted = u[0].numpy() <= c, u[1].numpy() <= 0.5
    ref[flipped & salted] = 1
    ref[flipped & ~salted] = 0
    np.testing.assert_array_equal(ours, ref)
    # Drawn: about c of the elements are flipped, half of them to 1.
    x = torch.full((64, 3, 32, 32), 0.5)
    y = corrupt(x, "impulse_noise", 5, seed=0)
    assert (y != 0.5).double().mean().item() == pytest.approx(c, rel=0.05)
    assert (y == 1).double().mean().item() == pytest.approx(c / 2, rel=0.07)


def test_shot_noise_statistics():
    # out = Poisson(x c) / c: mean x, variance x / c, values on multiples of 1/c.
    x = torch.full((64, 3, 32, 32), 0.5)
    for s in (1, 5):
        c = CIFAR["shot_noise"][s - 1]
        y = corrupt(x, "shot_noise", s, seed=0).double()
        assert y.mean().item() == pytest.approx(0.5, abs=3e-3)
        assert y.var().item() == pytest.approx(0.5 / c, rel=0.03)
        k = y * c
        assert torch.allclose(k, k.round(), atol=1e-3)
    assert corrupt(torch.zeros(1, 3, 8, 8), "shot_noise", 5).max() == 0  # black stays black


def _rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    # scikit-image's rgb2hsv, channels last.
    v = rgb.max(-1)
    delta = rgb.max(-1) - rgb.min(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(delta == 0, 0.0, delta / v)
        h = np.zeros_like(v)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        h = np.where(r == v, (g - b) / delta, h)
        h = np.where(g == v, 2.0 + (b - r) / delta, h)
        h = np.where(b == v, 4.0 + (r - g) / delta, h)
    h = np.where(delta == 0, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, v], -1)


def _hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.astype(int) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(hsv.shape)
    for k, (r, g, b) in enumerate(choices):
        m = hi == k
        out[m] = np.stack([r[m], g[m], b[m]], -1)
    return out


def test_brightness_matches_reference():
    x = COLOR.clone()
    x[0, :, :4, :4] = 0  # black pixels become grey
    x[1, :, :4, :4] = 0.3  # grey pixels get +c on every channel
    rgb = x.permute(0, 2, 3, 1).double().numpy()
    for s, c in enumerate(CIFAR["brightness"], start=1):
        hsv = _rgb2hsv(rgb)
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        ref = np.clip(_hsv2rgb(hsv), 0, 1)
        ours = corrupt(x, "brightness", s).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    g = corrupt(GRAY, "brightness", 5).numpy()  # grey images: V is the grey value
    np.testing.assert_allclose(g, np.clip(GRAY.numpy() + 0.3, 0, 1), atol=1e-6)


def test_contrast_matches_reference():
    for x in (COLOR, GRAY):
        arr = x.double().numpy()
        for s, c in enumerate(CIFAR["contrast"], start=1):
            means = arr.mean(axis=(2, 3), keepdims=True)
            ref = np.clip((arr - means) * c + means, 0, 1)
            np.testing.assert_allclose(corrupt(x, "contrast", s).numpy(), ref, atol=1e-6)


def test_pixelate_matches_pillow():
    # Pillow's BOX down and BOX up, on float ("F" mode) images so that no 8-bit rounding hides a
    # wrong weight; on uint8 images Pillow rounds, so allow one grey level there.
    for x in (COLOR[:2], GRAY[:2]):
        h = x.shape[-1]
        for s, c in enumerate(CIFAR["pixelate"], start=1):
            ours = corrupt(x, "pixelate", s).numpy()
            side = int(h * c)
            for i, ch in np.ndindex(*x.shape[:2]):
                img = Image.fromarray(x[i, ch].numpy().astype(np.float32))
                ref = np.array(img.resize((side, side), Image.BOX).resize((h, h), Image.BOX))
                np.testing.assert_allclose(ours[i, ch], ref, atol=1e-6)
    u = (COLOR[0] * 255).round().to(torch.uint8)
    ref = Image.fromarray(u.permute(1, 2, 0).numpy()).resize((20, 20), Image.BOX)
    ref = torch.from_numpy(np.array(ref.resize((32, 32), Image.BOX))).permute(2, 0, 1)
    assert (corrupt(u.float() / 255, "pixelate", 5) * 255 - ref).abs().max() <= 1 + 1e-4


def test_jpeg_matches_pillow():
    for x in (COLOR[:2], GRAY[:2]):
        u = (x * 255).round().to(torch.uint8)
        for s, q in ((1, 80), (5, 40)):
            out = corrupt(u, "jpeg_compression", s)
            for i in range(2):
                img = u[i].permute(1, 2, 0).numpy()
                buf = io.BytesIO()
                Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(
                    buf, format="JPEG", quality=q
                )
                ref = np.asarray(Image.open(buf)).reshape(img.shape)
                np.testing.assert_array_equal(out[i].permute(1, 2, 0).numpy(), ref)


def test_defocus_kernels_match_reference_facts():
    # cifar_c_params.md §2.1 (verified there against OpenCV).
    for (r, s), centre in zip(CIFAR["defocus_blur"][:3], (0.845, 0.619, 0.445), strict=True):
        k = disk_kernel(r, s)
        assert k.shape == (3, 3) and k[1, 1].item() == pytest.approx(centre, abs=1e-3)
    plus = disk_kernel(1, 0.2)
    assert plus[2, 2].item() == pytest.approx(0.2, abs=1e-4) and plus[1, 1].item() < 1e-4
    box = disk_kernel(1.5, 0.1)
    np.testing.assert_allclose(box[1:4, 1:4].numpy(), np.full((3, 3), 1 / 9), atol=1e-6)
    assert disk_kernel(8, 0.5).sum().item() == pytest.approx(1.0130, abs=2e-4)
    assert disk_kernel(10, 0.5).sum().item() == pytest.approx(1.0108, abs=2e-4)


def test_defocus_is_a_reflect_101_correlation_with_the_disk():
    # Direct numpy correlation (numpy "reflect" is OpenCV's reflect-101) for a CIFAR kernel
    # (shifted adds) and ImageNet kernels (FFT path).
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for r, s in ((1.5, 0.1), (3, 0.1), (8, 0.5)):
        k = disk_kernel(r, s).numpy()
        p = k.shape[0] // 2
        xp = np.pad(x.numpy(), ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
        ref = np.zeros(x.shape)
        for (i, j), v in np.ndenumerate(k):
            ref += v * xp[..., i : i + 24, j : j + 24]
        ours = defocus_blur(x, (r, s), generator=torch.Generator()).numpy()
        np.testing.assert_allclose(ours, np.clip(ref, 0, 1), atol=1e-9)


def test_zoom_lists_and_motion_kernel_match_reference():
    lengths = [len(zoom_factors(*p)) for p in CIFAR["zoom_blur"]]
    assert lengths == [7, 12, 16, 21, 26]
    assert [len(zoom_factors(*p)) for p in IMAGENET["zoom_blur"]] == [12, 16, 11, 13, 11]
    assert zoom_factors(1, 1.16, 0.01) == list(np.arange(1, 1.16, 0.01))
    # ImageMagick: a point light leaves a one-sided trail weighted by exp(-i^2 / 2 sigma^2).
    x = torch.zeros(1, 1, 9, 21)
    x[0, 0, 4, 15] = 1
    y = motion_blur(x, 6, 2, torch.tensor([0.0]))[0, 0]
    w = motion_kernel(6, 2)
    assert len(w) == 13
    np.testing.assert_allclose(y[4, 15 - 12 : 16].flip(0).numpy(), w.numpy(), atol=1e-6)
    assert y[4, 16:].abs().max() == 0 and y.sum().item() == pytest.approx(1.0)


def test_fog_on_a_constant_image_is_affine_in_the_plasma_map():
    # out = (x + A P) m / (m + A) with P spanning exactly [0, 1] over the 32x32 map.
    x = torch.full((4, 3, 32, 32), 0.4)
    for s, (a, _) in enumerate(CIFAR["fog"], start=1):
        y = corrupt(x, "fog", s, seed=2).double()
        p = (y * (0.4 + a) / 0.4 - 0.4) / a
        assert torch.allclose(p[:, 0], p[:, 2])  # grey fog
        assert p.amin(dim=(1, 2, 3)).abs().max() < 1e-5
        assert (p.amax(dim=(1, 2, 3)) - 1).abs().max() < 1e-5


# -- frequency-band noise -------------------------------------------------------------------


def _chebyshev_radius(h: int, w: int) -> np.ndarray:
    ky = np.abs(np.fft.fftshift(np.fft.fftfreq(h))) * 2  # cycles/pixel * 2 = units of pi
    kx = np.abs(np.fft.fftshift(np.fft.fftfreq(w))) * 2
    return np.maximum(ky[:, None], kx[None, :])


@pytest.mark.parametrize("size", [(32, 32), (28, 28)])
def test_band_noise_energy_lies_in_the_annulus(size):
    h, w = size
    g = torch.Generator().manual_seed(0)
    raw = sign_noise((4, 3, h, w), 0.05, generator=g)
    assert torch.all(raw.abs() == 0.05)  # amplitude eps before band-passing
    assert 0.45 < (raw > 0).double().mean().item() < 0.55
    r = _chebyshev_radius(h, w)
    for f in (0.1, 0.3, 0.5, 0.9):
        for window in (0.1, 0.2):
            noise = band_pass(raw, f, window)
            spec = np.abs(np.fft.fftshift(np.fft.fft2(noise.double().numpy()), axes=(-2, -1)))
            inside = (r >= f - window / 2 - 1e-9) & (r < f + window / 2 - 1e-9)
            energy = (spec**2).sum(axis=(-2, -1))
            assert ((spec**2 * inside).sum(axis=(-2, -1)) / energy).min() > 0.95
            assert noise.abs().max() > 0
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(
        band_noise((2, 3, h, w), 0.1, 0.4, 0.1, generator=g1),
        band_pass(sign_noise((2, 3, h, w), 0.1, generator=g2), 0.4, 0.1),
    )


def test_empty_band_is_a_clear_error():
    with pytest.raises(ConfigError, match="widen the window"):
        band_mask(8, 8, 0.1, 0.05)


# -- evaluations ----------------------------------------------------------------------------


class Constant(nn.Module):
    """Ignores its input: a learned bias for every image."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.bias = nn.Parameter(torch.linspace(0, 1, classes))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1)


def _batches():
    from vitlens.data import load_dataset

    return list(clean_batches(load_dataset("fashion-mnist-mini", "test"), 8, limit=16))


def test_a_model_that_ignores_its_input_loses_nothing():
    batches = _batches()
    res = corruption_robustness(Constant(), batches, normalize=((0.29,), (0.35,)), seed=1)
    assert res.params == "cifar" and res.image_size == [28, 28] and res.n_images == 16
    for c in CORRUPTIONS:
        assert res.accuracy[c] == [res.clean_accuracy] * 5
        assert res.nll[c] == pytest.approx([res.clean_nll] * 5)
    assert res.mean_accuracy == pytest.approx(res.clean_accuracy)
    fr = frequency_noise_robustness(
        {"a": Constant(), "b": Constant()}, batches, eps=0.5, normalize=((0.29,), (0.35,))
    )
    assert fr.models == ["a", "b"] and fr.frequencies[0] == 0.1 and fr.eps == 0.5
    assert all(d == 0 for m in fr.models for d in fr.delta_accuracy[m])


class Recorder(nn.Module):
    """Records its inputs; predicts class 0 when the mean input is above a threshold."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.stack([x.mean(dim=(1, 2, 3)), torch.zeros(len(x))], dim=1) * 10


def test_corrupt_then_normalise_and_noise_in_both_spaces():
    x, y = _batches()[0]
    y = y % 2  # two classes
    rec = Recorder()
    corruption_robustness(
        rec, [(x, y)], corruptions=["contrast"], severities=[5], normalize=((0.5,), (0.25,))
    )
    clean, contrasted = rec.seen
    torch.testing.assert_close(clean, (x - 0.5) / 0.25)
    torch.testing.assert_close(contrasted, (corrupt(x, "contrast", 5) - 0.5) / 0.25)
    for space in ("normalized", "pixel"):
        rec = Recorder()
        frequency_noise_robustness(
            rec,
            [(x, y)],
            eps=0.2,
            frequencies=[0.5],
            space=space,
            normalize=((0.5,), (0.25,)),
            energy="authors",
        )
        g = torch.Generator().manual_seed(mix_seed(0, 500000, 0))  # seed, frequency, batch
        delta = band_noise(x.shape, 0.2, 0.5, 0.1, generator=g)
        want = (x - 0.5) / 0.25 + delta if space == "normalized" else ((x + delta).clamp(0, 1)
                                                                       - 0.5) / 0.25  # fmt: skip
        torch.testing.assert_close(rec.seen[1], want)


def _fake_result(name: str, acc: dict[str, list[float]], clean: float) -> CorruptionResult:
    from vitlens.analysis.result import Provenance

    return CorruptionResult(
        corruptions=list(acc),
        severities=[1, 2, 3, 4, 5],
        accuracy=acc,
        clean_accuracy=clean,
        provenance=Provenance(model=name),
    )


def test_mce_against_a_baseline_by_hand():
    ours = _fake_result("ours", {"fog": [0.9, 0.8, 0.7, 0.6, 0.5], "snow": [0.5] * 5}, 0.95)
    base = _fake_result("alexnet", {"fog": [0.8, 0.6, 0.4, 0.2, 0.0], "snow": [0.75] * 5}, 0.9)
    e = corruption_errors(ours, base)
    ce_fog = (0.1 + 0.2 + 0.3 + 0.4 + 0.5) / (0.2 + 0.4 + 0.6 + 0.8 + 1.0)
    ce_snow = 2.5 / 1.25
    assert e["corruption_error"] == pytest.approx({"fog": ce_fog, "snow": ce_snow})
    assert e["mce"] == pytest.approx((ce_fog + ce_snow) / 2)
    rel_fog = (1.5 - 5 * 0.05) / (3.0 - 5 * 0.1)
    assert e["relative_corruption_error"]["fog"] == pytest.approx(rel_fog)
    assert e["baseline"] == "alexnet"


def test_results_round_trip_through_json(tmp_path):
    batches = _batches()[:1]
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    torch.manual_seed(0)
    base = corruption_robustness(
        Constant(), batches, corruptions=["fog", "pixelate"], severities=[1, 5]
    )
    res = corruption_robustness(
        model, batches, corruptions=["fog", "pixelate"], severities=[1, 5], baseline=base
    )
    assert res.mce is not None and set(res.corruption_error) == {"fog", "pixelate"}
    fr = frequency_noise_robustness([model, Constant()], batches, eps=0.3, frequencies=[0.2, 0.8])
    for r in (res, fr):
        path = r.save(tmp_path / f"{r.analysis}.json")
        assert load_result(path) == r
    assert isinstance(load_result(tmp_path / "freqnoise.json"), FreqNoiseResult)


def test_figures_are_non_empty_pngs(tmp_path):
    batches = _batches()[:1]
    a = corruption_robustness(Constant(), batches, severities=[1, 3, 5])
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    b = corruption_robustness(model, batches, severities=[1, 3, 5])
    fr = frequency_noise_robustness([model, Constant()], batches, eps=0.3)
    for path in (
        plot_corruption_heatmap([a, b], tmp_path / "heat.png"),
        plot_corruption_bars([a, b], tmp_path / "bars.png"),
        plot_frequency_noise(fr, tmp_path / "freq.png"),
    ):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert Image.open(path).size[0] > 300
    with pytest.raises(VitlensError, match="expected CorruptionResult"):
        plot_corruption_bars([fr], tmp_path / "x.png")


# -- released CIFAR-C files -----------------------------------------------------------------


def test_cifar_c_loader_and_evaluation(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5 * 6, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", np.tile(np.arange(6, dtype=np.uint8), 5))
    x, y = load_cifar_c(tmp_path, "fog", 2)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x[1], torch.from_numpy(images[7]).permute(2, 0, 1))
    assert y.tolist() == list(range(6))
    with pytest.raises(VitlensError, match="snow.npy"):
        load_cifar_c(tmp_path, "snow")
    res = corruption_robustness_from_files(
        Constant(6), tmp_path, corruptions=["fog"], severities=[1, 2], batch_size=4
    )
    assert res.source == "files" and res.accuracy["fog"] == [1 / 6, 1 / 6]
    assert res.clean_accuracy is None and res.n_images == 6
