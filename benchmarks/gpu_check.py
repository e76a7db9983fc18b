"""One GPU, one command, at most ~8 minutes: does vitlens work and keep up on CUDA?

Sections, each timed and reported even when another fails:

1. tests: `pytest -m cuda` (the tests that need CUDA; elsewhere they skip and say why).
2. steps: a training step of vit_ti, pit_ti, swin_ti, resnet50 and alternet50 at the paper's
   batch 96 in bf16 (convolutional models channels-last), interleaved with the timm/torchvision
   peer of the same architecture (benchmarks/train_step.py; AlterNet's peer is ResNet-50).
3. epoch: one synthetic CIFAR-100-shaped epoch of vit_ti with the paper's recipe through
   `vitlens train` (random CIFAR-format pickles; their MD5s cannot be the official ones, so the
   checksum is bypassed for this run only; warm-up over that one epoch instead of five).
4. hessian: top-5 Hessian eigenvalues of vit_ti on a batch of 16 (vitlens Lanczos), against
   PyHessian if it is installed (else reported absent).
5. nccl: a one-process NCCL group and an all-reduce.

Writes one JSON, benchmarks/results/gpu_check.json (or --out).

    python benchmarks/gpu_check.py                # on the GPU machine
    python benchmarks/gpu_check.py --dry-run      # on a CPU: small sizes, GPU parts skipped
    python benchmarks/gpu_check.py --sections steps,hessian   # rerun some sections only

On this workplace's H200 (its image has torch, timm, torchvision, typer, rich, safetensors and
tensorboard, not PyHessian, and cannot download): keep PyHessian's pure-Python wheel in an ignored
folder (`pip download --no-deps pyhessian==0.1 -d .whl`), carry `.whl`, and run one command with
a timeout that leaves room for a rerun, e.g.

    pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=src:/tmp/site
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json   # timeout 540
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NO_CUDA = "skipped: no CUDA device here"


def section_tests(args, device: torch.device) -> dict:
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-rs", "-p", "no:cacheprovider"]
        cmd += [f"--junitxml={junit}", str(ROOT / "tests")]
        done = subprocess.run(
            cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.test_timeout
        )
        suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    skips = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    return {
        "returncode": done.returncode,  # 0: all passed (or all skipped); 5: none collected
        "counts": counts,
        "skip_reasons": skips,
        "tail": done.stdout.strip().splitlines()[-15:],
    }


def section_steps(args, device: torch.device) -> dict:
    sys.path.insert(0, str(HERE))
    import train_step

    step_args = train_step.parse_args(
        ["--device", str(device), "--pairs", args.pairs, "--batch", str(args.batch)]
        + ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--out", ""]
        + ["--precision", args.step_precision, "--channels-last"]
    )
    report = train_step.run(step_args)
    return {
        "batch": args.batch,
        "precision": args.step_precision,
        "channels_last": True,
        "ratios_peer_over_vitlens": {k: v["speedup_vs_peer"] for k, v in report["results"].items()},
        "results": report["results"],
    }


def write_synthetic_cifar100(root: Path, n_train: int, n_test: int) -> None:
    """CIFAR-100 "python version" pickles of random images (the layout tests/test_data.py uses)."""
    from vitlens.data.info import CIFAR100_CLASSES

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 100, n).tolist()
        with open(folder / split, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": labels}, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": list(CIFAR100_CLASSES)}, f, protocol=2)


def section_epoch(args, device: torch.device) -> dict:
    import vitlens.data.cifar as cifar
    from vitlens.cli import app

    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_cifar100(Path(tmp) / "data", args.train_images, args.test_images)
        out = Path(tmp) / "run"
        # The paper's recipe, but its 5 warm-up epochs cannot fit in a 1-epoch run: warm up over 1.
        overrides = Path(tmp) / "one_epoch.yaml"
        overrides.write_text("warmup_epochs: 1\n")
        argv = ["train", args.epoch_model, "--preset", "paper", "--dataset", "cifar100"]
        argv += ["--config", str(overrides)]
        argv += ["--data-dir", str(Path(tmp) / "data"), "--epochs", "1", "--out", str(out)]
        argv += ["--device", str(device.type), "--workers", str(args.workers), "--quiet"]
        check = cifar.check_integrity
        cifar.check_integrity = lambda path, md5: True  # random pickles: no official MD5
        start = time.perf_counter()
        try:
            app(argv, standalone_mode=False)
        finally:
            cifar.check_integrity = check
        wall = time.perf_counter() - start
        row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        precision = json.loads((out / "precision.json").read_text())
    return {
        "command": "vitlens " + " ".join(argv),
        "wall_seconds": wall,
        "train_images": args.train_images,
        "images_per_second": row["images_per_second"],
        "train_seconds": row["train_seconds"],
        "test_acc_on_random_labels": row["test_acc"],
        "precision": precision,
    }


def pyhessian_top5(model, x, t, wd: float, tol: float, max_iter: int):
    from pyhessian import hessian

    from vitlens.analysis.loss_surface import nll_loss
    from vitlens.anatomy import explicit_attention

    params = [p for p in model.parameters() if p.requires_grad]

    def criterion(out, target):
        return nll_loss(out, target) + 0.5 * wd * sum(p.pow(2).sum() for p in params)

    torch.manual_seed(0)
    start = time.perf_counter()
    with explicit_attention(model):  # fused SDPA has no double backward
        comp = hessian(model, criterion, data=(x, t), cuda=x.device.type == "cuda")
        values, _ = comp.eigenvalues(maxIter=max_iter, tol=tol, top_n=5)
    model.zero_grad(set_to_none=True)
    return [float(v) for v in values], time.perf_counter() - start


def section_hessian(args, device: torch.device) -> dict:
    from vitlens.analysis.curvature import HessianOperator
    from vitlens.analysis.linalg import lanczos
    from vitlens.data import BatchMixer
    from vitlens.models import create_model

    torch.manual_seed(0)
    model = create_model(args.hessian_model, num_classes=100).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.hessian_batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 100, (args.hessian_batch,), generator=g)
    x, t = BatchMixer(100)(x, y, torch.Generator().manual_seed(1))
    x, t = x.to(device), t.to(device)
    wd, tol = 0.05, 1e-3
    start = time.perf_counter()
    with HessianOperator(model, (x, t), objective="nll+l2", weight_decay=wd) as op:
        eigs = lanczos(op, 5, which="magnitude", tol=tol, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ours = sorted(eigs.eigenvalues.tolist(), key=abs, reverse=True)
    result = {
        "model": args.hessian_model,
        "batch": args.hessian_batch,
        "vitlens_eigenvalues": ours,
        "vitlens_seconds": time.perf_counter() - start,
        "vitlens_hvps": eigs.n_matvecs,
        "tol": tol,
    }
    try:
        import pyhessian  # noqa: F401
    except ImportError:
        result["pyhessian"] = "absent: pip install pyhessian to compare"
        return result
    theirs, seconds = pyhessian_top5(model, x, t, wd, tol, args.pyhessian_max_iter)
    theirs = sorted(theirs, key=abs, reverse=True)
    result.update(
        pyhessian_eigenvalues=theirs,
        pyhessian_seconds=seconds,
        speedup_vs_pyhessian=seconds / result["vitlens_seconds"],
        max_rel_diff=max(abs(a - b) / abs(b) for a, b in zip(ours, theirs, strict=True)),
    )
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_nccl(args, device: torch.device) -> dict:
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise RuntimeError("this torch build has no NCCL")
    start = time.perf_counter()
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
    )
    try:
        value = torch.arange(4.0, device=device)
        dist.all_reduce(value)
        ok = value.tolist() == [0.0, 1.0, 2.0, 3.0]
    finally:
        dist.destroy_process_group()
    result = {"backend": backend, "all_reduce_ok": ok, "seconds": time.perf_counter() - start}
    if backend == "nccl":
        result["nccl_version"] = ".".join(map(str, torch.cuda.nccl.version()))
    else:
        result["nccl"] = f"{NO_CUDA}; gloo ran in its place (the code path only)"
    return result


SECTIONS = {
    "tests": section_tests,
    "steps": section_steps,
    "epoch": section_epoch,
    "hessian": section_hessian,
    "nccl": section_nccl,
}


def run_section(name: str, fn, report: dict, deadline: float, *fn_args) -> None:
    """Run one section into `report[name]`; a failure is recorded, not fatal."""
    if time.perf_counter() > deadline:
        report[name] = {"status": "skipped: the time budget was used up by earlier sections"}
        return
    start = time.perf_counter()
    print(f"== {name}", flush=True)
    try:
        report[name] = {"status": "ok", **fn(*fn_args)}
    except Exception as err:  # report and go on: one broken part must not hide the others
        report[name] = {"status": f"failed: {err!r}", "traceback": traceback.format_exc()[-3000:]}
    report[name]["section_seconds"] = time.perf_counter() - start
    print(json.dumps({k: v for k, v in report[name].items() if k != "results"})[:1500], flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, small sizes, GPU parts off")
    parser.add_argument("--budget", type=float, default=None, help="seconds (450; dry run: none)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    parser.add_argument("--pairs", default="paper")
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--step-precision", default="bf16")
    parser.add_argument("--epoch-model", default="vit_ti")
    parser.add_argument("--train-images", type=int, default=50000)
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--hessian-model", default="vit_ti")
    parser.add_argument("--hessian-batch", type=int, default=16)
    parser.add_argument("--pyhessian-max-iter", type=int, default=100, help="its default")
    parser.add_argument("--test-timeout", type=int, default=240)
    parser.add_argument("--out", default=str(HERE / "results" / "gpu_check.json"))
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if args.budget is None:  # past it, later sections skip: 450 s leaves room within 8 minutes
        args.budget = float("inf") if args.dry_run else 450.0
    if args.dry_run:  # exercise every code path on a CPU in a few minutes
        args.batch, args.repeats, args.warmup, args.step_precision = 2, 1, 0, "fp32"
        args.train_images, args.test_images, args.workers = 96, 32, 0
        args.hessian_model, args.hessian_batch, args.pyhessian_max_iter = "vit_nano", 4, 3
        if args.out == str(HERE / "results" / "gpu_check.json"):  # keep the GPU's file
            args.out = str(HERE / "results" / "gpu_check_dry_run.json")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda and not args.dry_run else "cpu")
    start = time.perf_counter()
    deadline = start + args.budget
    report = {
        "benchmark": "gpu_check: CUDA tests, paper-model steps vs peers, one epoch, Hessian, NCCL",
        "dry_run": args.dry_run,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if cuda else None,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    if device.type != "cuda":
        print(f"no CUDA device{' used (--dry-run)' if cuda else ''}: GPU-only parts run small "
              "on the CPU to check their code; the numbers mean nothing", flush=True)  # fmt: skip
    for name in args.sections.split(","):
        run_section(name, SECTIONS[name], report, deadline, args, device)
    report["total_seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    failed = [
        k for k, v in report.items() if isinstance(v, dict) and "failed" in v.get("status", "")
    ]
    print(f"wrote {out} in {report['total_seconds']:.0f} s; failed sections: {failed or 'none'}")
    return report


if __name__ == "__main__":
    main()
