"""ImageNet validation data: the wnid-folder layout and the flat layout with a ground-truth file
read the same images with the same labels, in timm's and torchvision's class order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitlens.data import load_dataset
from vitlens.data.imagenet import balanced, imagenet_classes
from vitlens.errors import VitlensError

WNIDS = ("n01440764", "n01443537", "n15075141")  # tench, goldfish, toilet tissue: 0, 1, 999


def jpeg(path, seed: int, size: tuple[int, int]):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=gen, dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(path, quality=95)


@pytest.fixture
def layouts(tmp_path):
    """The same 9 images as wnid folders and as a flat folder with both ground-truth files."""
    folders, flat = tmp_path / "folders" / "val", tmp_path / "flat"
    flat.mkdir(parents=True)
    csv_rows, n = ["ImageId,PredictionString"], 0
    for w in WNIDS:
        (folders / w).mkdir(parents=True)
        for i in range(3):
            n += 1
            name = f"ILSVRC2012_val_{n:08d}"
            size = (37 + 5 * i, 29 + 3 * n)  # odd, non-square sizes
            jpeg(folders / w / f"{name}.JPEG", n, size)
            jpeg(flat / f"{name}.JPEG", n, size)
            csv_rows.append(f"{name},{w} 1 2 3 4")
    (flat / "LOC_val_solution.csv").write_text("\n".join(csv_rows) + "\n")
    return tmp_path / "folders", flat


def test_both_layouts_read_the_same_images_and_labels(layouts):
    folders, flat = layouts
    a = load_dataset("imagenet:9", "test", data_dir=folders, image_size=24)
    b = load_dataset("imagenet:9", "test", data_dir=flat, image_size=24)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (9, 3, 24, 24)
    assert a.labels.tolist() == [0, 0, 0, 1, 1, 1, 999, 999, 999]  # sorted-wnid indices
    wnids, names = imagenet_classes()
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids) and names[1] == "goldfish"
    assert a.info.num_classes == 1000 and a.info.classes[0] == "tench"


def test_wnids_per_line_ground_truth(layouts):
    _, flat = layouts
    (flat / "LOC_val_solution.csv").unlink()
    (flat / "val_wnids.txt").write_text("\n".join(w for w in WNIDS for _ in range(3)) + "\n")
    b = load_dataset("imagenet:9", "test", data_dir=flat, image_size=16)
    assert b.labels.tolist() == [0, 0, 0, 1, 1, 1, 999, 999, 999]
    (flat / "val_wnids.txt").write_text("n01440764\n")  # wrong length
    with pytest.raises(VitlensError, match="1 labels for 9 images"):
        load_dataset("imagenet:9", "test", data_dir=flat, image_size=16)


def test_class_balanced_subset():
    files = [(f"{c}{i}", c) for c in range(3) for i in range(4)]
    assert [label for _, label in balanced(files, 5)] == [0, 0, 1, 1, 2]
    assert balanced(files, None) == files


def test_subset_by_name_and_bad_folders(layouts, tmp_path):
    folders, _ = layouts
    sub = load_dataset("imagenet:4", "test", data_dir=folders, image_size=16)
    assert sub.labels.tolist() == [0, 0, 1, 999] and sub.info.name == "imagenet:4"
    with pytest.raises(VitlensError, match="imagenet:N"):
        load_dataset("imagenet:zero", "test", data_dir=folders)
    with pytest.raises(VitlensError, match="validation set only"):
        load_dataset("imagenet", "train", data_dir=folders)
    (folders / "val" / "n99999999").mkdir()
    with pytest.raises(VitlensError, match="not ImageNet-1k wnids"):
        load_dataset("imagenet", "test", data_dir=folders)
    (folders / "val" / "n99999999").rmdir()
    # `imagenet` is the whole validation set: a folder with 3 of the 1000 classes is refused.
    with pytest.raises(VitlensError, match=r"3 of the 1000 classes \(missing 997.*imagenet:N"):
        load_dataset("imagenet", "test", data_dir=folders, image_size=16)
    (folders / "val" / WNIDS[0] / "broken.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(VitlensError, match="broken.JPEG"):
        load_dataset("imagenet:10", "test", data_dir=folders, image_size=16)
    with pytest.raises(VitlensError, match="no ImageNet validation images"):
        load_dataset("imagenet", "test", data_dir=tmp_path / "nowhere")


@pytest.mark.slow
def test_worker_processes_decode_what_one_process_does(tmp_path):
    from vitlens.data import imagenet

    paths = []
    for i in range(130):  # enough for two workers
        paths.append(tmp_path / f"{i}.JPEG")
        jpeg(paths[-1], i, (20 + i % 7, 18 + i % 5))
    parallel = imagenet.decode_all(paths, 12, None)
    serial = torch.from_numpy(np.stack([imagenet._decode((p, 12, None)) for p in paths]))
    assert torch.equal(parallel, serial)


def test_the_devkit_ground_truth_reads_ids_through_meta_mat(layouts, tmp_path):
    savemat = pytest.importorskip(
        "scipy.io", reason="the devkit's meta.mat is a MATLAB file"
    ).savemat
    _, flat = layouts
    (flat / "LOC_val_solution.csv").unlink()
    # The devkit numbers synsets in its own order, not the sorted wnids': 1 is toilet tissue here.
    devkit = {1: WNIDS[2], 2: WNIDS[0], 3: WNIDS[1]}
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
              ("num_children", "O")]  # fmt: skip
    rows = [(i, w, "", "", 0) for i, w in devkit.items()] + [(1001, "n00001740", "", "", 5)]
    (tmp_path / "ILSVRC2012_devkit_t12" / "data").mkdir(parents=True)
    savemat(str(tmp_path / "ILSVRC2012_devkit_t12" / "data" / "meta.mat"),
            {"synsets": np.array(rows, dtype=fields)})  # fmt: skip
    ids = [2, 2, 2, 3, 3, 3, 1, 1, 1]  # the 9 images, in sorted file order
    (flat / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, ids)))
    got = load_dataset("imagenet:9", "test", data_dir=flat, image_size=16)
    assert got.labels.tolist() == [0, 0, 0, 1, 1, 1, 999, 999, 999]
    (flat / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n" * 9)
    (tmp_path / "ILSVRC2012_devkit_t12" / "data" / "meta.mat").unlink()
    with pytest.raises(VitlensError, match="devkit IDs.*data/meta.mat, not found"):
        load_dataset("imagenet:9", "test", data_dir=flat, image_size=16)
