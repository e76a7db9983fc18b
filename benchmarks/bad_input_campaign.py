"""The bad-input campaign of issue 22, re-run on the command line: each case the issue names, by
surface, and how the code answers it now.

Each case is a `vitlens` command run in a fresh subprocess. A case the issue names as wrong input
is *clear* when it exits with status 2 and no traceback, a *traceback* when Python's traceback
reaches the user, *wrong 0* when it exits 0, and *killed* when it runs past the time limit or is
killed. A case of valid input the old code refused (a one-item list, a valid block name) must
exit 0. The tally per surface goes to benchmarks/results/bad_input_campaign.json.

    python benchmarks/bad_input_campaign.py [--out benchmarks/results/bad_input_campaign.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

TINY = ["--epochs", "1", "--fraction", "0.01", "--batch-size", "25", "--quiet"]


def cli(*args: str, timeout: int = 300) -> tuple[int | None, str]:
    """(exit status or None if killed, stderr) of one `vitlens` command."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vitlens.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return None, "timed out"
    return done.returncode, done.stderr


def outcome(status: int | None, stderr: str, valid: bool) -> str:
    if status is None or status < 0 or status == 137:
        return "killed"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if valid:
        return "ok" if status == 0 else "refused valid input"
    return {0: "wrong 0", 2: "clear"}.get(status, f"status {status}")


def hf_folders(root: Path) -> dict[str, Path]:
    """Damaged Hugging Face folders: config not JSON, no model_type, garbage weights, and a
    folder that holds only a pickle."""
    good = {"model_type": "vit", "image_size": 28, "patch_size": 7, "num_channels": 1}
    cases = {
        "config-not-json": ("{not json", b"x"),
        "no-model-type": (json.dumps({"image_size": 28}), b"x"),
        "garbage-safetensors": (json.dumps(good), b"\x00garbage" * 8),
    }
    out = {}
    for name, (config, weights) in cases.items():
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(config)
        (folder / "model.safetensors").write_bytes(weights)
        out[name] = folder
    pickle_only = root / "pickle-only"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text(json.dumps(good))
    (pickle_only / "pytorch_model.bin").write_bytes(b"PK\x03\x04")
    out["pickle-only"] = pickle_only
    return out


def damaged_results(root: Path) -> dict[str, Path]:
    nested = root / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    wrong = root / "wrong-type.json"
    wrong.write_text(json.dumps({"analysis": "variance", "schema": 1, "names": 3}))
    return {"deeply-nested": nested, "wrong-field-type": wrong}


def cases(root: Path, run: Path) -> list[tuple[str, str, list[str], bool]]:
    """(surface, case, command, valid) for every case."""
    out = root / "out"
    rows = []
    for analysis, setting, valid in [
        ("fourier", "eps=abc", False),
        ("freqnoise", "eps=abc", False),
        ("fourier", "eps=1e308", False),
        ("freqnoise", "eps=0.1,abc", False),
        ("fourier", "eps=-1", False),
        ("hessian", "k=0", False),
        ("hessian", "k=-3", False),
        ("hessian", "k=2.5", False),
        ("hessian", "k=100000000", False),
        ("hessian", "tol=-1", False),
        ("hessian", "curvature_batches=-1", False),
        ("landscape", "steps=nan", False),
        ("landscape", "steps=1000000", False),
        ("landscape", "span=-1", False),
        ("corruptions", "severities=9", False),
        ("corruptions", "severities=-1", False),
        ("corruptions", "severities=3", True),
        ("corruptions", "corruptions=fog", True),
        ("lesion", "blocks=block0.msa", True),
    ]:
        command = ["analyze", analysis, str(run), "--set", setting, "--batches", "1"]
        rows.append(("analyze --set", f"{analysis} {setting}", command, valid))
    for name, folder in hf_folders(root / "hf").items():
        rows.append(("import", f"hf {name}", ["import", f"hf:{folder}", "--out", str(out)], False))
    for flag in ("--num-classes", "--in-chans", "--image-size"):
        command = ["import", "timm:test_vit", flag, "0", "--out", str(out)]
        rows.append(("import", f"{flag} 0", command, False))
    rows.append(
        (
            "import",
            "timm vit at 30 px",
            ["import", "timm:vit_tiny_patch16_224", "--image-size", "30", "--out", str(out)],
            False,
        )
    )
    rows.append(
        (
            "import",
            "--out under /proc",
            ["import", "timm:test_vit", "--image-size", "32", "--out", "/proc/vitlens-run"],
            False,
        )
    )
    rows.append(
        (
            "sizes",
            "torchvision vit_b_16 at 30 px",
            [
                "import",
                "torchvision:vit_b_16",
                "--image-size",
                "30",
                "--dataset",
                "cifar10",
                "--out",
                str(out),
            ],
            False,
        )
    )
    rows.append(
        (
            "sizes",
            "train --image-size 100000",
            ["train", "vit_nano", "--image-size", "100000", "--out", str(out)],
            False,
        )
    )
    rows.append(
        (
            "sizes",
            "train --batch-size 1e12",
            ["train", "vit_nano", "--batch-size", "1000000000000", "--out", str(out)],
            False,
        )
    )
    for name, path in damaged_results(root).items():
        rows.append(("export", name, ["export", str(path), "--csv", str(root / "csv")], False))
    rows.append(
        (
            "study --runs",
            "--runs A,A",
            ["study", "--runs", f"{run},{run}", "--out", str(out)],
            False,
        )
    )
    rows.append(
        (
            "study --runs",
            "--models beside --runs",
            ["study", "--runs", str(run), "--models", "vit_nano", "--out", str(out)],
            False,
        )
    )
    rows.append(
        (
            "precision",
            "--precision fp16",
            ["train", "vit_nano", "--precision", "fp16", "--out", str(out)],
            False,
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/bad_input_campaign.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = root / "run"
        status, err = cli("train", "vit_nano", "--out", str(run), *TINY)
        assert status == 0, err
        table, per_surface = [], defaultdict(Counter)
        for surface, case, command, valid in cases(root, run):
            status, stderr = cli(*command)
            result = outcome(status, stderr, valid)
            if result in ("ok", "clear", "wrong 0"):  # a success wrote: clear it for the next
                subprocess.run(["rm", "-rf", str(root / "out")], check=False)
            per_surface[surface][result] += 1
            last = (stderr.strip().splitlines() or [""])[-1][:160]
            table.append({"surface": surface, "case": case, "outcome": result, "message": last})
            print(f"{surface:14s} {case:34s} {result:10s} {last}", flush=True)
    totals = Counter(r["outcome"] for r in table)
    report = {
        "cases": len(table),
        "totals": dict(totals),
        "per_surface": {k: dict(v) for k, v in per_surface.items()},
        "table": table,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["totals"]), f"-> {args.out}")


if __name__ == "__main__":
    main()
