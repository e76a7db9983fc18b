"""`vitlens study --preset imagenet`: pretrained models imported from a hub cache laid out on
disk, a tiny ImageNet-layout validation folder, nothing trained, claims C9-C12 measured and C13
saying why it cannot be."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

REV = "a" * 40
MODELS = ("test_vit.r160_in1k", "test_resnet.r160_in1k")


def cache_timm(hub, name: str) -> None:
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    repo = hub / f"models--timm--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)
    (repo / "snapshots" / REV).mkdir(parents=True)
    torch.manual_seed(0)
    state = timm.create_model(name, pretrained=False).state_dict()
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(repo / "snapshots" / REV / "model.safetensors"),
    )


def imagenet_folder(root) -> None:
    gen = torch.Generator().manual_seed(0)
    for wnid in ("n01440764", "n01443537", "n01484850"):
        (root / "val" / wnid).mkdir(parents=True)
        for i in range(3):
            pixels = torch.randint(0, 256, (170 + 9 * i, 190, 3), generator=gen, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / "val" / wnid / f"{i}.JPEG")


@pytest.mark.slow
def test_imagenet_preset_imports_and_measures_c9_to_c12(tmp_path, monkeypatch):
    from vitlens.study import start_study

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in MODELS:
        cache_timm(tmp_path / "hub", name)
    imagenet_folder(tmp_path / "data")
    study = start_study(
        preset="imagenet", out=tmp_path / "study", resume=None, quiet=True, ablations=None,
        runs=None, images=6, models=[f"timm:{m}" for m in MODELS], data_dir=str(tmp_path / "data"),
    )  # fmt: skip
    report = study.run(workers=1)

    steps = json.loads((tmp_path / "study" / "steps.json").read_text())
    assert {"import/test_vit", "import/test_resnet"} <= set(steps)
    assert not any(s.startswith(("train/", "landscape/", "trajectory/")) for s in steps)
    # The Hessian runs on validation minibatches, says so, and judges no training claim.
    hessian = json.loads((tmp_path / "study" / "results" / "hessian" / "test_vit.json").read_text())
    assert hessian["provenance"]["split"] == "test" and hessian["weight_decay"] == 0.0
    assert hessian["eigenvalues"] and "held-out images" in report.read_text()
    record = json.loads(
        (tmp_path / "study" / "runs" / "test_vit" / "checkpoints" / "final.json").read_text()
    )
    assert record["dataset"] == "imagenet:6" and record["import"]["preprocessing"]["resize"] == 168
    rows = dict(
        re.findall(
            r"<td[^>]*>(C\d+)</td>.*?<span class=\w+>([^<]+)</span>", report.read_text(), re.S
        )
    )
    assert all(rows[c] != "n/a" for c in ("C9", "C10", "C11", "C12"))  # measured
    assert rows["C1"] == "n/a" and rows["C4"] == "n/a"  # training-only claims: not measured
    # C13 needs MSAs at stage ends (AlterNet, Swin, PiT): a plain ViT and a ResNet have none.
    assert rows["C13"] == "n/a" and "no model with lesions has MSAs in more" in report.read_text()
