"""vitlens's RandAugment against timm's `rand-m9-n2-mstd1.0`: the op set and parameters, each op's
pixels against timm's op on the same PIL image and magnitude, and the sampling statistics."""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment as timm_aa

from vitlens.data import build_transform, dataset_info
from vitlens.data.randaugment import (
    INTERPOLATIONS,
    OP_NAMES,
    SIGNED_OPS,
    OpDraw,
    RandAugment,
    op_argument,
)

FILL = (125, 123, 114)  # CIFAR-10 mean * 255, as timm's img_mean


def _timm_paper_randaugment():
    # What the authors' ops/datasets.py builds: img_size 32, dataset mean, interpolation "random".
    hparams = dict(translate_const=int(32 * 0.45), img_mean=FILL)
    return timm_aa.rand_augment_transform("rand-m9-n2-mstd1.0", hparams)


def _image(seed=0, size=32):
    # A smooth gradient plus noise: exercises every op (a flat image would hide geometry).
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 7, yy * 5, (xx + yy) * 3], axis=-1) % 256
    noisy = base + g.integers(-20, 21, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def test_op_set_and_parameters_equal_timms_paper_config():
    timm_ra = _timm_paper_randaugment()
    assert tuple(op.name for op in timm_ra.ops) == OP_NAMES and len(OP_NAMES) == 15
    assert timm_ra.num_layers == 2 and timm_ra.choice_weights is None
    assert {op.prob for op in timm_ra.ops} == {0.5}
    assert {op.magnitude for op in timm_ra.ops} == {9}
    assert {op.magnitude_std for op in timm_ra.ops} == {1.0}
    assert {op.kwargs["resample"] for op in timm_ra.ops} == {INTERPOLATIONS}
    ours = build_transform("paper", dataset_info("cifar10"), train=True).transforms[-2]
    assert isinstance(ours, RandAugment)
    assert (ours.num_ops, ours.magnitude, ours.magnitude_std, ours.prob) == (2, 9.0, 1.0, 0.5)
    assert ours.fill == FILL == timm_ra.ops[0].kwargs["fillcolor"]


@pytest.mark.parametrize("name", OP_NAMES)
@pytest.mark.parametrize("magnitude", [0.0, 3.7, 9.0, 10.0])
def test_op_argument_equals_timms_level_function(name, magnitude, monkeypatch):
    level_fn = timm_aa.LEVEL_TO_ARG[name]
    hparams = dict(translate_const=14, img_mean=FILL)
    for negate, draw in ((False, 0.25), (True, 0.75)):  # timm negates when random() > 0.5
        monkeypatch.setattr(random, "random", lambda draw=draw: draw)
        expected = level_fn(magnitude, hparams) if level_fn else ()
        ours = op_argument(name, magnitude, negate)
        assert (() if ours is None else (ours,)) == tuple(expected)  # exactly
        if name not in SIGNED_OPS:
            assert op_argument(name, magnitude, True) == op_argument(name, magnitude, False)


@pytest.mark.parametrize("name", OP_NAMES)
def test_each_op_gives_timms_pixels(name, monkeypatch):
    """Same image, magnitude, sign and resampling: our op == timm's AugmentOp, pixel for pixel."""
    for seed, magnitude in ((0, 9.0), (1, 4.3), (2, 10.0), (3, 0.6)):
        img = _image(seed)
        tensor = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
        for negate in (False, True):
            for resample in INTERPOLATIONS:
                hparams = dict(translate_const=14, img_mean=FILL, interpolation=resample)
                timm_op = timm_aa.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
                monkeypatch.setattr(random, "random", lambda n=negate: 0.75 if n else 0.25)
                draw = OpDraw(name, True, magnitude, negate, resample)
                ours = RandAugment(FILL).apply(tensor, [draw])
                if name == "Posterize" and magnitude < 2.5:
                    # 0 bits kept: the PIL >= 12 under this timm refuses; older PIL gave black.
                    assert not ours.any()
                    continue
                expected = np.array(timm_op(img))
                assert ours.dtype == torch.uint8 and ours.shape == tensor.shape
                np.testing.assert_array_equal(ours.permute(1, 2, 0).numpy(), expected)
                if name not in ("AutoContrast", "Equalize", "Invert") and magnitude in (4.3, 9):
                    assert not np.array_equal(expected, np.array(img))  # the op did something


def test_grayscale_images_fill_with_their_one_channel():
    ra = RandAugment((77,))
    img = torch.full((1, 8, 8), 200, dtype=torch.uint8)
    out = ra.apply(img, [OpDraw("TranslateXRel", True, 10.0, False, INTERPOLATIONS[0])])
    assert out.shape == (1, 8, 8)
    # Output x samples input x + 3.6 (0.45 * 8 px): columns 5.. fall outside and take the fill.
    assert out[0, :, 5:].unique().tolist() == [77]
    assert out[0, :, :4].unique().tolist() == [200]


def test_sampling_statistics_with_a_fixed_seed():
    """Ops uniform with replacement, p = 0.5, magnitude ~ clip(N(9, 1), 0, 10), signs fair."""
    ra = RandAugment(FILL)
    g = torch.Generator().manual_seed(0)
    draws = [d for _ in range(12000) for d in ra.draw(g)]
    n = len(draws)
    counts = np.array([sum(d.name == name for d in draws) for name in OP_NAMES])
    chi2 = float(((counts - n / 15) ** 2 / (n / 15)).sum())
    assert chi2 < 36.1  # 99.9 % quantile of chi-square with 14 degrees of freedom
    applied = [d for d in draws if d.applied]
    assert abs(len(applied) / n - 0.5) < 4 * math.sqrt(0.25 / n)
    mags = np.array([d.magnitude for d in applied])
    assert mags.min() >= 0.0 and mags.max() == 10.0
    # E[min(X, 10)] for X ~ N(9, 1) is 9 - (phi(1) - (1 - Phi(1))) = 8.9167; P(X >= 10) = 0.1587.
    tail = 0.5 * math.erfc(1 / math.sqrt(2))
    clipped_mean = 9 - (math.exp(-0.5) / math.sqrt(2 * math.pi) - tail)
    assert abs(mags.mean() - clipped_mean) < 4 * 0.85 / math.sqrt(len(mags))
    assert abs((mags == 10.0).mean() - tail) < 4 * math.sqrt(tail * (1 - tail) / len(mags))
    assert abs(np.median(mags) - 9.0) < 0.05
    signed = [d for d in applied if d.name in SIGNED_OPS]
    assert abs(np.mean([d.negate for d in signed]) - 0.5) < 4 * math.sqrt(0.25 / len(signed))
    assert not any(d.negate for d in applied if d.name not in SIGNED_OPS)
    bicubic = [d.resample == INTERPOLATIONS[1] for d in signed]
    assert abs(np.mean(bicubic) - 0.5) < 4 * math.sqrt(0.25 / len(signed))


def test_draws_come_only_from_the_given_generator():
    ra = RandAugment(FILL)
    random.seed(1)
    np.random.seed(1)
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    torch.manual_seed(5)
    a = ra.draw(torch.Generator().manual_seed(3))
    b = ra.draw(torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    c = ra.draw()  # the CPU default generator, which ArrayDataset seeds per item
    torch.manual_seed(5)
    assert a == b and c == ra.draw()
    assert random.getstate() == python_state
    assert np.array_equal(np.random.get_state()[1], numpy_state)
