"""vitlens.data: every source on files the tests write, the shipped mini dataset, subsets,
transforms, seeded determinism and the paper's Mixup/CutMix + label smoothing."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitlens.data.cifar as cifar_mod
import vitlens.data.idx as idx_mod
import vitlens.data.mini as mini_mod
from vitlens.data import (
    ArrayDataset,
    BatchMixer,
    DatasetInfo,
    MixParams,
    build_transform,
    class_balanced_subset,
    dataset_info,
    list_datasets,
    load_dataset,
    mix_seed,
    read_cifar_batches,
    read_idx,
    smooth_targets,
)
from vitlens.data.info import CIFAR10_CLASSES, CIFAR100_CLASSES
from vitlens.data.paths import download_file
from vitlens.data.transforms import RandomPadCrop
from vitlens.errors import UnknownNameError, VitlensError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # No test may read or write the user's real cache.
    monkeypatch.setenv("VITLENS_DATA", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def mini_train() -> ArrayDataset:
    return load_dataset("fashion-mnist-mini", "train")


# ---------------------------------------------------------------------------------------------
# Registry and info


def test_list_and_info_of_builtin_datasets():
    assert list_datasets() == [
        "fashion-mnist-mini",
        "fashion-mnist",
        "mnist",
        "cifar10",
        "cifar100",
    ]
    c10, c100 = dataset_info("cifar10"), dataset_info("cifar100")
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c10.std == (0.2023, 0.1994, 0.2010)
    assert c100.mean == (0.5071, 0.4867, 0.4408) and c100.std == (0.2675, 0.2565, 0.2761)
    assert c100.num_classes == 100 and c100.classes[:3] == ("apple", "aquarium_fish", "baby")
    assert dataset_info("mnist").hflip is False and dataset_info("fashion-mnist").hflip is True
    assert dataset_info("FashionMNIST").name == "fashion-mnist"  # aliases resolve
    assert DatasetInfo.from_dict(c100.to_dict()) == c100


def test_unknown_dataset_and_split_are_user_errors():
    with pytest.raises(UnknownNameError, match="cifar10"):
        load_dataset("cifar1O")
    with pytest.raises(VitlensError, match="split"):
        load_dataset("fashion-mnist-mini", "validation")


# ---------------------------------------------------------------------------------------------
# The shipped dataset


def test_mini_dataset_shapes_counts_and_stats(mini_train):
    test = load_dataset("fashion-mnist-mini", "test")
    assert mini_train.images.shape == (10_000, 1, 28, 28) and test.images.shape == (2000, 1, 28, 28)
    assert mini_train.images.dtype == torch.uint8 and mini_train.labels.dtype == torch.int64
    assert torch.bincount(mini_train.labels).tolist() == [1000] * 10
    assert torch.bincount(test.labels).tolist() == [200] * 10
    assert mini_train.info == dataset_info("fashion-mnist-mini")
    x = mini_train.images.double() / 255
    assert abs(x.mean().item() - mini_train.info.mean[0]) < 6e-5
    assert abs(x.std(correction=0).item() - mini_train.info.std[0]) < 6e-5


def test_mini_checksum_is_verified(monkeypatch):
    monkeypatch.setattr(mini_mod, "MINI_SHA256", "0" * 64)
    with pytest.raises(VitlensError, match="SHA-256"):
        load_dataset("fashion-mnist-mini")


def test_mini_file_hash_matches_its_readme():
    readme = (mini_mod.mini_path().parent / "README.md").read_text()
    assert mini_mod.MINI_SHA256 in readme
    assert hashlib.sha256(mini_mod.mini_path().read_bytes()).hexdigest() == mini_mod.MINI_SHA256


@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(), reason="Debian dataset-fashion-mnist not installed"
)
def test_mini_is_a_subset_of_fashion_mnist_found_in_the_debian_package(tmp_path, mini_train):
    full = load_dataset("fashion-mnist", "train", data_dir=tmp_path)  # empty: falls to Debian
    assert full.images.shape == (60_000, 1, 28, 28)
    with np.load(mini_mod.mini_path()) as z:
        rows = torch.from_numpy(z["train_source_indices"].astype(np.int64))
    assert torch.equal(full.images[rows], mini_train.images)
    assert torch.equal(full.labels[rows], mini_train.labels)


def test_resizing_a_builtin_dataset():
    ds = load_dataset("fashion-mnist-mini", "test", image_size=32)
    assert ds.images.shape == (2000, 1, 32, 32) and ds.info.image_size == 32


# ---------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">i4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        data = _idx_bytes(arr)
        if stem.startswith("train"):  # gzipped train files, raw test files: both are read
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def test_mnist_from_idx_files_gz_and_raw(tmp_path):
    arrays = _write_mnist(tmp_path / "mnist")
    train = load_dataset("mnist", "train", data_dir=tmp_path)
    test = load_dataset("mnist", "test", data_dir=tmp_path)
    assert train.images.shape == (12, 1, 28, 28) and test.images.shape == (5, 1, 28, 28)
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert train.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert np.array_equal(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert train.info.name == "mnist" and train.info.hflip is False


def test_truncated_or_corrupt_idx_is_a_user_error(tmp_path):
    data = _idx_bytes(np.zeros((3, 28, 28)))
    (tmp_path / "short").write_bytes(data[:-10])
    (tmp_path / "short.gz").write_bytes(gzip.compress(data)[:-20])
    (tmp_path / "magic").write_bytes(b"\x12\x34" + data[2:])
    with pytest.raises(VitlensError, match="truncated"):
        read_idx(tmp_path / "short")
    with pytest.raises(VitlensError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    with pytest.raises(VitlensError, match="magic"):
        read_idx(tmp_path / "magic")


def test_missing_idx_files_name_the_folders(tmp_path, monkeypatch):
    url, folder, _, md5s = idx_mod.IDX_SOURCES["mnist"]
    monkeypatch.setitem(idx_mod.IDX_SOURCES, "mnist", (url, folder, tmp_path / "no-debian", md5s))
    with pytest.raises(VitlensError, match="download") as e:
        load_dataset("mnist", data_dir=tmp_path / "here")
    assert str(tmp_path / "here" / "mnist") in str(e.value)


def test_download_is_atomic_and_checksummed(tmp_path, monkeypatch):
    # A file:// "mirror": exercises the download path without a network.
    mirror = tmp_path / "mirror"
    arrays = _write_mnist(mirror)
    for stem in arrays:  # the mirror serves .gz files only
        raw = mirror / stem
        if raw.exists():
            (mirror / f"{stem}.gz").write_bytes(gzip.compress(raw.read_bytes()))
            raw.unlink()
    md5s = {s: hashlib.md5((mirror / f"{s}.gz").read_bytes()).hexdigest() for s in arrays}
    url = mirror.as_uri() + "/"
    monkeypatch.setitem(idx_mod.IDX_SOURCES, "mnist", (url, "MNIST", tmp_path / "no-debian", md5s))
    ds = load_dataset("mnist", "test", download=True)
    assert np.array_equal(ds.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    cache = Path(os.environ["VITLENS_DATA"]) / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    bad = tmp_path / "bad" / "file.gz"
    with pytest.raises(VitlensError, match="checksum"):
        download_file(url + "t10k-images-idx3-ubyte.gz", bad, md5="0" * 32)
    assert list(bad.parent.iterdir()) == []  # nothing half-written


# ---------------------------------------------------------------------------------------------
# CIFAR


def _write_cifar(root: Path, name: str, n_per_batch: int = 4) -> dict[str, np.ndarray]:
    """Write CIFAR-format pickles (tiny, so their MD5s are not the official ones)."""
    rng = np.random.default_rng(1)
    if name == "cifar10":
        folder, label_key, classes = root / "cifar-10-batches-py", b"labels", CIFAR10_CLASSES
        batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        meta_name, meta = "batches.meta", {b"label_names": [c.encode() for c in classes]}
    else:
        folder, label_key, classes = root / "cifar-100-python", b"fine_labels", CIFAR100_CLASSES
        batches = ["train", "test"]
        meta_name, meta = "meta", {"fine_label_names": list(classes)}  # str keys work too
    folder.mkdir(parents=True)
    written = {}
    for b in batches:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, len(classes), n_per_batch).tolist()
        with open(folder / b, "wb") as f:
            pickle.dump({b"data": data, label_key: labels}, f, protocol=2)
        written[b] = data
    with open(folder / meta_name, "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_format_reader(tmp_path, name):
    written = _write_cifar(tmp_path, name)
    x, y, classes = read_cifar_batches(tmp_path, name, "train", verify=False)
    n_batches = 5 if name == "cifar10" else 1
    assert x.shape == (4 * n_batches, 3, 32, 32) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and len(classes) == (10 if name == "cifar10" else 100)
    first = written["data_batch_1" if name == "cifar10" else "train"][0]
    # Rows are channel-major: 1024 red, 1024 green, 1024 blue values, each row by row.
    assert x[0, 1, 2, 3].item() == first[1 * 1024 + 2 * 32 + 3]
    xt, _, _ = read_cifar_batches(tmp_path, name, "test", verify=False)
    assert xt.shape == (4, 3, 32, 32)
    with pytest.raises(VitlensError, match="checksum"):
        read_cifar_batches(tmp_path, name, "train", verify=True)
    with pytest.raises(VitlensError, match="checksum"):
        load_dataset(name, data_dir=tmp_path)  # load_dataset always verifies


def test_cifar_through_load_dataset_with_verification_stubbed(tmp_path, monkeypatch):
    _write_cifar(tmp_path, "cifar100")
    monkeypatch.setattr(cifar_mod, "check_integrity", lambda path, md5: True)
    ds = load_dataset("cifar100", "test", data_dir=tmp_path, image_size=16)
    assert ds.images.shape == (4, 3, 16, 16) and ds.info.num_classes == 100
    assert ds.info.mean == dataset_info("cifar100").mean


def test_missing_cifar_names_the_folder(tmp_path):
    with pytest.raises(VitlensError, match="cifar-10-batches-py") as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(tmp_path) in str(e.value) and "--download" in str(e.value)


def test_cifar_pickle_cannot_run_code(tmp_path):
    _write_cifar(tmp_path, "cifar10")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(VitlensError, match="refusing"):
        read_cifar_batches(tmp_path, "cifar10", "train", verify=False)


# ---------------------------------------------------------------------------------------------
# Image folders


def _write_folder(root: Path, sizes=(8, 8), mode="RGB", per_class=3) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(2)
    written: dict[str, list[np.ndarray]] = {}
    for split in ("train", "test"):
        for cls in ("dog", "cat"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                shape = (sizes[1], sizes[0], 3) if mode == "RGB" else (sizes[1], sizes[0])
                arr = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(arr, mode).save(root / split / cls / f"{i}.png")
                written.setdefault(f"{split}/{cls}", []).append(arr)
    return written


def test_imagefolder_rgb(tmp_path):
    written = _write_folder(tmp_path)
    train = load_dataset(f"imagefolder:{tmp_path}", "train")
    test = load_dataset(f"imagefolder:{tmp_path}", "test")
    info = train.info
    assert info.classes == ("cat", "dog") and info.in_chans == 3 and info.image_size == 8
    assert train.images.shape == (6, 3, 8, 8) and train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(train.images[0].permute(1, 2, 0).numpy(), written["train/cat"][0])
    assert test.images.shape == (6, 3, 8, 8) and test.info == info
    x = train.images.double() / 255
    assert np.allclose(info.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-6)
    assert np.allclose(info.std, x.std(dim=(0, 2, 3), correction=0).numpy(), atol=1e-6)
    assert dataset_info(f"imagefolder:{tmp_path}") == info


def test_imagefolder_grayscale_and_resize(tmp_path):
    _write_folder(tmp_path, sizes=(12, 10), mode="L")
    with pytest.raises(VitlensError, match="image_size"):  # 12x10 is not square
        load_dataset(f"imagefolder:{tmp_path}")
    ds = load_dataset(f"imagefolder:{tmp_path}", image_size=6)
    assert ds.images.shape == (6, 1, 6, 6) and ds.info.in_chans == 1 and ds.info.image_size == 6


def test_imagefolder_mixed_sizes_and_missing_folder_are_user_errors(tmp_path):
    _write_folder(tmp_path)
    Image.new("RGB", (9, 9)).save(tmp_path / "train" / "cat" / "odd.png")
    with pytest.raises(VitlensError, match="differ in size"):
        load_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(VitlensError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")


# ---------------------------------------------------------------------------------------------
# Class-balanced subsets


def test_class_balanced_subset_counts_and_seeding():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 7 + [3] * 1)[torch.randperm(88)]
    for f in (0.1, 0.29, 0.5, 1.0):
        idx = class_balanced_subset(labels, f, seed=0)
        assert torch.equal(idx, idx.sort().values) and idx.dtype == torch.int64
        counts = torch.bincount(labels[idx], minlength=4).tolist()
        assert counts == [max(1, int(np.floor(f * n + 1e-9))) for n in (50, 30, 7, 1)]
    a, b = class_balanced_subset(labels, 0.5, seed=1), class_balanced_subset(labels, 0.5, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, class_balanced_subset(labels, 0.5, seed=2))
    assert len(class_balanced_subset(labels, 1.0, seed=3)) == 88


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_class_balanced_subset_rejects_bad_fractions(fraction):
    with pytest.raises(VitlensError, match="fraction"):
        class_balanced_subset(torch.arange(10) % 2, fraction, seed=0)


# ---------------------------------------------------------------------------------------------
# Transforms and seeded determinism


def test_none_transform_is_exact_normalization(mini_train):
    info = mini_train.info
    img = mini_train.images[0]
    expected = (img.float() / 255 - info.mean[0]) / info.std[0]
    for preset in ("none", "basic", "paper"):  # every preset's test transform is the same
        assert torch.equal(build_transform(preset, info, train=False)(img), expected)
    assert torch.equal(build_transform("none", info, train=True)(img), expected)
    assert torch.equal(mini_train[0][0], expected)  # transform=None normalizes too
    with pytest.raises(UnknownNameError, match="paper"):
        build_transform("strong", info, train=True)


@pytest.mark.parametrize("name", ["fashion-mnist-mini", "cifar10"])
@pytest.mark.parametrize("preset", ["basic", "paper"])
def test_augmenting_presets_change_images(name, preset, mini_train):
    info = dataset_info(name)
    g = torch.Generator().manual_seed(0)
    if name == "cifar10":
        images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    else:
        images = mini_train.images[:8]
    ds = ArrayDataset(images, torch.zeros(8), info, build_transform(preset, info, train=True), 0)
    plain = ArrayDataset(images, torch.zeros(8), info)
    outs = [ds[i][0] for i in range(8)]
    assert all(o.shape == images.shape[1:] and o.dtype == torch.float32 for o in outs)
    assert any(not torch.equal(o, plain[i][0]) for i, o in enumerate(outs))


def test_random_pad_crop_is_a_window_of_the_padded_image():
    x = torch.arange(1, 37, dtype=torch.uint8).view(1, 6, 6)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    windows = {(t, s): padded[:, t : t + 6, s : s + 6] for t in range(9) for s in range(9)}
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        out = RandomPadCrop(4)(x)
        seen |= {k for k, w in windows.items() if torch.equal(w, out)}
        assert any(torch.equal(w, out) for w in windows.values())
    assert len(seen) > 40  # offsets cover the 9x9 grid
    # The crop keeps the input's size whatever size the transform was built for.
    t = build_transform("basic", dataset_info("cifar10"), train=True)
    assert t(torch.zeros(3, 40, 40, dtype=torch.uint8)).shape == (3, 40, 40)


def test_seeded_augmentation_is_a_pure_function_of_seed_epoch_index(mini_train):
    info = mini_train.info
    t = build_transform("paper", info, train=True)
    ds = mini_train.subset(torch.arange(16)).with_transform(t).with_seed(7)
    ds.set_epoch(3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = [ds[i][0] for i in range(16)]
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    torch.manual_seed(999)  # ...and not consulted
    again = [ds[i][0] for i in reversed(range(16))][::-1]
    fresh = ArrayDataset(ds.images, ds.labels, info, build_transform("paper", info, train=True), 7)
    fresh.set_epoch(3)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(torch.equal(first[i], fresh[i][0]) for i in range(16))
    ds.set_epoch(4)
    assert sum(not torch.equal(first[i], ds[i][0]) for i in range(16)) >= 12
    other = ds.with_seed(8)
    other.set_epoch(3)
    assert any(not torch.equal(first[i], other[i][0]) for i in range(16))


def test_seeded_augmentation_is_the_same_in_dataloader_workers(mini_train):
    info = mini_train.info
    ds = ArrayDataset(
        mini_train.images[:8],
        mini_train.labels[:8],
        info,
        build_transform("paper", info, train=True),
        5,
    )
    ds.set_epoch(2)
    main = torch.stack([ds[i][0] for i in range(8)])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    assert torch.equal(torch.cat([x for x, _ in loader]), main)


def test_mix_seed_is_stable():
    assert mix_seed(0, 0, 0) == mix_seed(0, 0, 0) != mix_seed(0, 0, 1)
    assert mix_seed(1, 2, 3) != mix_seed(3, 2, 1)
    assert 0 <= mix_seed(-1, 2**70) < 2**64
    assert mix_seed(0, 1, 2) == 0x2B0AD23DB07366CA  # pinned: must not change between versions


# ---------------------------------------------------------------------------------------------
# Mixup / CutMix / label smoothing


def test_smooth_targets_values():
    t = smooth_targets(torch.tensor([2, 0]), 10, 0.1)
    assert torch.allclose(t[0, 2], torch.tensor(0.91)) and torch.allclose(
        t[0, 0], torch.tensor(0.01)
    )
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert torch.equal(smooth_targets(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))


def test_mixup_with_known_lambda():
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    mixer = BatchMixer(5, label_smoothing=0.0)
    xm, t = mixer.apply(x, y, MixParams(0.3))
    onehot = torch.nn.functional.one_hot(y, 5).float()
    assert torch.allclose(t, 0.3 * onehot + 0.7 * onehot.flip(0))
    assert torch.allclose(xm, 0.3 * x + 0.7 * x.flip(0))
    # Through __call__ (Mixup only): the sampled lam explains both images and targets.
    mixup = BatchMixer(5, cutmix_alpha=0.0, label_smoothing=0.0)
    xm, t = mixup(x, y, torch.Generator().manual_seed(1))
    lam = mixup.last.lam
    assert mixup.last.box is None and 0.0 < lam < 1.0
    assert torch.allclose(t, lam * onehot + (1 - lam) * onehot.flip(0))
    assert torch.allclose(xm, lam * x + (1 - lam) * x.flip(0))


def test_cutmix_box_area_matches_lambda():
    mixer = BatchMixer(10, mixup_alpha=0.0, cutmix_alpha=0.8, label_smoothing=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 12).clone()  # image b is all b
    y = torch.tensor([0, 1, 2, 3])
    for _ in range(20):
        xm, t = mixer(x, y, g)
        (y0, y1, x0, x1), lam = mixer.last.box, mixer.last.lam
        assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (16 * 12))
        # Pixels from the flipped partner are exactly the box.
        pasted = (xm[0, 0] == 3.0).float()
        assert pasted.sum().item() == (y1 - y0) * (x1 - x0)
        assert pasted.mean().item() == pytest.approx(1 - lam)
        assert torch.allclose(t.sum(1), torch.ones(4))
        assert t[0, 0].item() == pytest.approx(lam * 0.91 + (1 - lam) * 0.01)


def test_mixer_reproducible_switches_and_leaves_input_alone():
    x = torch.randn(6, 1, 8, 8)
    x_copy = x.clone()
    y = torch.arange(6)
    mixer = BatchMixer(6)
    a = mixer(x, y, torch.Generator().manual_seed(3))
    b = mixer(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(x, x_copy)
    assert torch.allclose(a[1].sum(1), torch.ones(6))
    g = torch.Generator().manual_seed(0)
    draws = [mixer.sample(g, 32, 32) for _ in range(2000)]
    cut = [d for d in draws if d.box is not None]
    mix = [d.lam for d in draws if d.box is None]
    assert 0.45 < len(cut) / 2000 < 0.55  # switch_prob 0.5
    assert 0.47 < np.mean(mix) < 0.53  # Beta(1, 1) has mean 0.5
    off = BatchMixer(6, prob=0.0)
    xo, to = off(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(xo, x) and torch.equal(to, smooth_targets(y, 6, 0.1))
