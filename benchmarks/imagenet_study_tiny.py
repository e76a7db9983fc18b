"""`study --preset imagenet` end to end on 2 CPU cores with tiny models, offline: timm's
test_vit.r160_in1k and test_resnet.r160_in1k at random init laid out as a Hugging Face hub
cache, and N random JPEGs of odd sizes in 4 ImageNet wnid folders (no ImageNet here). Real
weights would not change the cost; real models (resnet50, vit_tiny at 224 px) cost more.

Usage: /usr/bin/time -v python benchmarks/imagenet_study_tiny.py OUT N [WORKERS]
then:  python benchmarks/study_profile.py OUT/study --label imagenet_tiny_N --wall S --claims
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from PIL import Image

MODELS = ("test_vit.r160_in1k", "test_resnet.r160_in1k")
WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")
REV = "a" * 40


def cache(hub: Path, name: str) -> None:
    """The snapshot timm reads for `name`, holding random-init weights."""
    import timm
    from safetensors.torch import save_file

    repo = hub / f"models--{timm.models.get_pretrained_cfg(name).hf_hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True, exist_ok=True)
    state = timm.create_model(name, pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))


def images(val: Path, count: int) -> None:
    gen = torch.Generator().manual_seed(0)
    for wnid in WNIDS:
        (val / wnid).mkdir(parents=True, exist_ok=True)
        for i in range(count // len(WNIDS) + 1):
            shape = (180 + i % 9, 200, 3)
            pixels = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(val / wnid / f"{i}.JPEG")


def main() -> None:
    root, count = Path(sys.argv[1]), int(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else None
    os.environ.update(HF_HUB_CACHE=str(root / "hub"), HF_HUB_OFFLINE="1")
    for name in MODELS:
        cache(root / "hub", name)
    images(root / "val", count)
    from vitlens.study import start_study

    started = time.time()
    study = start_study(
        preset="imagenet", out=root / "study", resume=None, quiet=False, ablations=None,
        runs=None, images=count, models=[f"timm:{m}" for m in MODELS], data_dir=str(root),
    )  # fmt: skip
    report = study.run(workers=workers)
    print("WALL", round(time.time() - started, 1), report)


if __name__ == "__main__":  # the study's worker processes import this file again
    main()
