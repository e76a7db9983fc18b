"""Every kind of bad input, on every subcommand: exit status 2, one clear line, no traceback,
and an earlier run folder left byte for byte as it was.

The commands run in-process (`vitlens.cli.main` with its argv), which keeps the suite fast; an
exception that escapes `main` is reported as the traceback a user would see. A second table
checks the Python API's edges (model constructors, Result and record loaders, analyses).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import shutil
import struct
import sys
import traceback
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitlens.errors import VitlensError

# -- running the command in-process ----------------------------------------------------------


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of `vitlens ARGS`; an escaping exception becomes a traceback."""
    from vitlens.cli import main

    saved = sys.argv
    sys.argv = ["vitlens", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - what a user would see
        sys.stderr.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- the earlier run, made once --------------------------------------------------------------


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """A finished tiny run; every case must leave it exactly as it is."""
    from vitlens.config import make_config
    from vitlens.train import Trainer

    out = tmp_path_factory.mktemp("bad-input") / "run"
    cfg = make_config(
        "quick", model="vit_nano", epochs=1, fraction=0.01, batch_size=50, seed=0, device="cpu"
    )
    Trainer(cfg, out, quiet=True).run()
    return out


@pytest.fixture
def env(earlier_run, tmp_path):
    return Env(earlier_run, tmp_path)


class Env:
    """Paths a case needs, made on demand inside the test's own tmp folder."""

    def __init__(self, run: Path, tmp: Path):
        self.run, self.tmp = run, tmp

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def copy(self) -> Path:
        """A copy of the earlier run, to damage."""
        dest = self.tmp / "copy"
        shutil.copytree(self.run, dest)
        return dest

    def record(self, edit) -> Path:
        """A copy of the run whose final and last records were changed by `edit(record)`."""
        copy = self.copy()
        for name in ("final.json", "last.json"):
            path = copy / "checkpoints" / name
            path.write_text(json.dumps(edit(json.loads(path.read_text()))))
        return copy

    def study(self, plan=None, steps=None) -> Path:
        folder = self.tmp / "study"
        folder.mkdir()
        base = {"preset": "quick", "models": ["vit_nano"], "epochs": 1, "fraction": 0.01}
        (folder / "study.json").write_text(json.dumps(base if plan is None else plan))
        (folder / "steps.json").write_text(json.dumps({} if steps is None else steps))
        return folder

    def study_with_result(self, result) -> Path:
        folder = self.study()
        path = folder / "results" / "fourier" / "vit_nano.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(result))
        return folder

    def image_folder(self, classes=("a", "b"), bomb=False) -> str:
        from PIL import Image

        root = self.tmp / "images"
        for split in ("train", "test"):
            for c in classes:
                folder = root / split / c
                folder.mkdir(parents=True)
                for i in range(3):
                    Image.new("L", (8, 8), color=40 * i).save(folder / f"{i}.png")
        if bomb:
            (root / "train" / classes[0] / "bomb.png").write_bytes(bomb_png(100_000, 100_000))
        return f"imagefolder:{root}"


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def result_json(**extra) -> dict:
    from vitlens.analysis.fourier import FourierResult

    return {**FourierResult().to_dict(), **extra}


# -- the cases: (id, args built from env, text the message must contain) ---------------------

T = ["--quiet", "--epochs", "1", "--fraction", "0.01"]  # a tiny training if it ever started


def new(env):
    return env.tmp / "new"


CASES = [
    # models
    ("models-image-size-0", lambda e: ["models", "--image-size", "0"], "image-size"),
    ("models-image-size-neg", lambda e: ["models", "--image-size", "-32"], "image-size"),
    ("models-classes-0", lambda e: ["models", "--num-classes", "0"], "num-classes"),
    ("models-pattern", lambda e: ["models", "--pattern", "nothing*"], "no model matches"),
    ("models-bad-option", lambda e: ["models", "--frobnicate"], "frobnicate"),
    # train: numbers
    ("train-seed-neg", lambda e: ["train", "vit_nano", "--seed", "-1", "--out", new(e)], "seed"),
    ("train-epochs-0", lambda e: ["train", "vit_nano", "--epochs", "0", "--out", new(e)], "epochs"),
    ("train-lr-0", lambda e: ["train", "vit_nano", "--lr", "0", "--out", new(e), *T], "lr"),
    ("train-lr-neg", lambda e: ["train", "vit_nano", "--lr", "-1", "--out", new(e), *T], "lr"),
    ("train-lr-nan", lambda e: ["train", "vit_nano", "--lr", "nan", "--out", new(e), *T], "lr"),
    (
        "train-batch-0",
        lambda e: ["train", "vit_nano", "--batch-size", "0", "--out", new(e)],
        "batch",
    ),
    (
        "train-batch-neg",
        lambda e: ["train", "vit_nano", "--batch-size", "-4", "--out", new(e)],
        "batch",
    ),
    (
        "train-fraction-0",
        lambda e: ["train", "vit_nano", "--fraction", "0", "--out", new(e)],
        "fraction",
    ),
    (
        "train-fraction-2",
        lambda e: ["train", "vit_nano", "--fraction", "2", "--out", new(e)],
        "fraction",
    ),
    (
        "train-image-size-0",
        lambda e: ["train", "vit_nano", "--image-size", "0", "--out", new(e), *T],
        "image_size",
    ),
    (
        "train-image-size-neg",
        lambda e: ["train", "vit_nano", "--image-size", "-8", "--out", new(e), *T],
        "image_size",
    ),
    (
        "train-ckpt-every-neg",
        lambda e: ["train", "vit_nano", "--checkpoint-every", "-1", "--out", new(e)],
        "every",
    ),
    (
        "train-snapshot-neg",
        lambda e: ["train", "vit_nano", "--snapshot-every", "-2", "--out", new(e)],
        "every",
    ),
    (
        "train-workers-neg",
        lambda e: ["train", "vit_nano", "--workers", "-1", "--out", new(e)],
        "workers",
    ),
    (
        "train-epochs-text",
        lambda e: ["train", "vit_nano", "--epochs", "many", "--out", new(e)],
        "epochs",
    ),
    # train: names and choices
    ("train-model", lambda e: ["train", "vit_9000", "--out", new(e)], "unknown model"),
    (
        "train-dataset",
        lambda e: ["train", "vit_nano", "--dataset", "imagenet-22k", "--out", new(e)],
        "unknown dataset",
    ),
    (
        "train-augment",
        lambda e: ["train", "vit_nano", "--augment", "heavy", "--out", new(e)],
        "augment",
    ),
    (
        "train-freeze",
        lambda e: ["train", "vit_nano", "--freeze", "head", "--out", new(e)],
        "freeze",
    ),
    (
        "train-preset",
        lambda e: ["train", "vit_nano", "--preset", "fast", "--out", new(e)],
        "preset",
    ),
    ("train-device", lambda e: ["train", "vit_nano", "--device", "tpu", "--out", new(e)], "device"),
    (
        "train-device-cuda",
        lambda e: ["train", "vit_nano", "--device", "cuda:7", "--out", new(e), *T],
        "cuda",
    ),
    (
        "train-missing-data",
        lambda e: [
            "train",
            "vit_nano",
            "--dataset",
            "cifar10",
            "--data-dir",
            e.tmp / "none",
            "--out",
            new(e),
        ],
        "cifar",
    ),
    # train: model arguments
    (
        "train-arg-depth-neg",
        lambda e: ["train", "vit_nano", "--model-arg", "depth=-1", "--out", new(e), *T],
        "depth",
    ),
    (
        "train-arg-depth-0",
        lambda e: ["train", "vit_nano", "--model-arg", "depth=0", "--out", new(e), *T],
        "depth",
    ),
    (
        "train-arg-patch-0",
        lambda e: ["train", "vit_nano", "--model-arg", "patch_size=0", "--out", new(e), *T],
        "patch_size",
    ),
    (
        "train-arg-heads-0",
        lambda e: ["train", "vit_nano", "--model-arg", "heads=0", "--out", new(e), *T],
        "heads",
    ),
    (
        "train-arg-dim-0",
        lambda e: ["train", "vit_nano", "--model-arg", "dim=0", "--out", new(e), *T],
        "dim",
    ),
    (
        "train-arg-window-0",
        lambda e: ["train", "swin_nano", "--model-arg", "window=0", "--out", new(e), *T],
        "window",
    ),
    (
        "train-arg-depths-neg",
        lambda e: ["train", "resnet_nano", "--model-arg", "depths=[2,-1,2,2]", "--out", new(e), *T],
        "depths",
    ),
    (
        "train-arg-unknown",
        lambda e: ["train", "vit_nano", "--model-arg", "wings=2", "--out", new(e), *T],
        "wings",
    ),
    (
        "train-arg-no-value",
        lambda e: ["train", "vit_nano", "--model-arg", "depth", "--out", new(e), *T],
        "KEY=VALUE",
    ),
    (
        "train-arg-bad-yaml",
        lambda e: ["train", "vit_nano", "--model-arg", "depth=[1,", "--out", new(e), *T],
        "YAML",
    ),
    (
        "train-arg-drop-path",
        lambda e: ["train", "vit_nano", "--model-arg", "drop_path=1.5", "--out", new(e), *T],
        "drop_path",
    ),
    # train: config files
    (
        "config-dir",
        lambda e: ["train", "vit_nano", "--config", e.tmp, "--out", new(e)],
        "config file",
    ),
    (
        "config-binary",
        lambda e: [
            "train",
            "vit_nano",
            "--config",
            e.file("b.yaml", b"\x00\x01\x02"),
            "--out",
            new(e),
        ],
        "config file",
    ),
    (
        "config-not-utf8",
        lambda e: [
            "train",
            "vit_nano",
            "--config",
            e.file("l.yaml", "lr: 0.1 # caf\xe9".encode("latin-1")),
            "--out",
            new(e),
        ],
        "UTF-8",
    ),
    (
        "config-int-keys",
        lambda e: ["train", "vit_nano", "--config", e.file("k.yaml", "1: 2\n"), "--out", new(e)],
        "keys",
    ),
    (
        "config-list-key",
        lambda e: ["train", "vit_nano", "--config", e.file("k.yaml", "[a]: 2\n"), "--out", new(e)],
        "config file",
    ),
    (
        "config-a-list",
        lambda e: ["train", "vit_nano", "--config", e.file("l.yaml", "- lr\n"), "--out", new(e)],
        "mapping",
    ),
    (
        "config-bad-yaml",
        lambda e: ["train", "vit_nano", "--config", e.file("y.yaml", "lr: [1\n"), "--out", new(e)],
        "YAML",
    ),
    (
        "config-unknown-key",
        lambda e: [
            "train",
            "vit_nano",
            "--config",
            e.file("u.yaml", "speed: 3\n"),
            "--out",
            new(e),
        ],
        "speed",
    ),
    (
        "config-wrong-type",
        lambda e: [
            "train",
            "vit_nano",
            "--config",
            e.file("w.yaml", "lr: fast\n"),
            "--out",
            new(e),
        ],
        "lr",
    ),
    (
        "config-bool-int",
        lambda e: [
            "train",
            "vit_nano",
            "--config",
            e.file("w.yaml", "epochs: true\n"),
            "--out",
            new(e),
        ],
        "epochs",
    ),
    (
        "config-missing",
        lambda e: ["train", "vit_nano", "--config", e.tmp / "no.yaml", "--out", new(e)],
        "does not exist",
    ),
    # train: output folders
    ("train-out-is-run", lambda e: ["train", "vit_nano", "--out", e.run, *T], "not empty"),
    (
        "train-out-is-file",
        lambda e: ["train", "vit_nano", "--out", e.file("f", "x"), *T],
        "not a folder",
    ),
    (
        "train-out-under-file",
        lambda e: ["train", "vit_nano", "--out", e.file("f", "x") / "run", *T],
        "in the way",
    ),
    (
        "train-out-read-only",
        lambda e: ["train", "vit_nano", "--out", "/sys/vitlens-run", *T],
        "/sys/vitlens-run",
    ),
    # train: resume
    ("resume-no-out", lambda e: ["train", "vit_nano", "--resume"], "--out"),
    (
        "resume-nothing",
        lambda e: ["train", "vit_nano", "--resume", "--out", new(e)],
        "cannot resume",
    ),
    (
        "resume-other-model",
        lambda e: ["train", "resnet_nano", "--resume", "--out", e.run],
        "vit_nano",
    ),
    (
        "resume-other-batch",
        lambda e: ["train", "vit_nano", "--resume", "--out", e.run, "--batch-size", "7"],
        "batch_size",
    ),
    (
        "resume-fewer-epochs",
        lambda e: ["train", "vit_nano", "--resume", "--out", e.run, "--epochs", "0"],
        "epochs",
    ),
    (
        "resume-no-model-file",
        lambda e: [
            "train",
            "vit_nano",
            "--resume",
            "--quiet",
            "--out",
            e.record(lambda r: {k: v for k, v in r.items() if k != "model_file"}),
        ],
        "model_file",
    ),
    (
        "resume-bad-config",
        lambda e: ["train", "vit_nano", "--resume", "--out", _damaged_config(e)],
        "config",
    ),
    (
        "resume-bad-metrics",
        lambda e: ["train", "vit_nano", "--resume", "--quiet", "--out", _damaged_metrics(e)],
        "line 1",
    ),
    (
        "train-init-missing",
        lambda e: ["train", "vit_nano", "--init", e.tmp / "none", "--out", new(e), *T],
        "none",
    ),
    (
        "train-init-list",
        lambda e: ["train", "vit_nano", "--init", e.file("r.json", "[1, 2]"), "--out", new(e), *T],
        "not a vitlens checkpoint",
    ),
    # train: images
    (
        "images-one-class",
        lambda e: [
            "train",
            "vit_nano",
            "--dataset",
            e.image_folder(("only",)),
            "--out",
            new(e),
            *T,
        ],
        "class",
    ),
    (
        "images-bomb",
        lambda e: [
            "train",
            "vit_nano",
            "--dataset",
            e.image_folder(bomb=True),
            "--out",
            new(e),
            *T,
        ],
        "bomb.png",
    ),
    (
        "images-none",
        lambda e: [
            "train",
            "vit_nano",
            "--dataset",
            f"imagefolder:{e.tmp / 'nope'}",
            "--out",
            new(e),
            *T,
        ],
        "does not exist",
    ),
    # eval
    ("eval-batch-0", lambda e: ["eval", e.run, "--batch-size", "0"], "batch-size"),
    ("eval-batch-neg", lambda e: ["eval", e.run, "--batch-size", "-1"], "batch-size"),
    ("eval-split", lambda e: ["eval", e.run, "--split", "validation"], "split"),
    ("eval-nothing", lambda e: ["eval", e.tmp / "nothing-here"], "nothing-here"),
    ("eval-device", lambda e: ["eval", e.run, "--device", "tpu"], "device"),
    ("eval-dataset", lambda e: ["eval", e.run, "--dataset", "cifar-1000"], "unknown dataset"),
    ("eval-json-dir", lambda e: ["eval", e.run, "--json", e.tmp], "directory"),
    (
        "eval-json-read-only",
        lambda e: ["eval", e.run, "--json", "/sys/vitlens.json"],
        "/sys/vitlens.json",
    ),
    (
        "eval-json-under-file",
        lambda e: ["eval", e.run, "--json", e.file("f", "x") / "m.json"],
        "in the way",
    ),
    ("eval-truncated", lambda e: ["eval", _truncated(e)], "truncated"),
    ("eval-record-list", lambda e: ["eval", e.file("r.json", "[]")], "not a vitlens checkpoint"),
    ("eval-record-not-json", lambda e: ["eval", e.file("r.json", "{")], "not JSON"),
    (
        "eval-no-model-file",
        lambda e: ["eval", e.record(lambda r: {k: v for k, v in r.items() if k != "model_file"})],
        "model_file",
    ),
    (
        "eval-model-file-path",
        lambda e: ["eval", e.record(lambda r: {**r, "model_file": "../../etc/passwd"})],
        "model_file",
    ),
    (
        "eval-sha-number",
        lambda e: ["eval", e.record(lambda r: {**r, "model_sha256": 7})],
        "model_sha256",
    ),
    (
        "eval-no-spec",
        lambda e: ["eval", e.record(lambda r: {k: v for k, v in r.items() if k != "model_spec"})],
        "model_spec",
    ),
    (
        "eval-spec-bad",
        lambda e: [
            "eval",
            e.record(lambda r: {**r, "model_spec": {**r["model_spec"], "num_classes": 0}}),
        ],
        "num_classes",
    ),
    ("eval-wrong-suffix", lambda e: ["eval", e.file("weights.pt", "x")], "weights.pt"),
    # analyze
    ("analyze-unknown", lambda e: ["analyze", "telepathy", e.run], "unknown analysis"),
    (
        "analyze-batches-neg",
        lambda e: ["analyze", "fourier", e.run, "--batches", "-1", "--out", new(e)],
        "batches",
    ),
    (
        "analyze-batches-0",
        lambda e: ["analyze", "fourier", e.run, "--batches", "0", "--out", new(e)],
        "batches",
    ),
    (
        "analyze-batch-size-0",
        lambda e: ["analyze", "fourier", e.run, "--batch-size", "0", "--out", new(e)],
        "batch-size",
    ),
    (
        "analyze-seed-neg",
        lambda e: ["analyze", "fourier", e.run, "--seed", "-1", "--out", new(e)],
        "seed",
    ),
    (
        "analyze-no-run",
        lambda e: ["analyze", "fourier", e.tmp / "nothing", "--out", new(e)],
        "nothing",
    ),
    (
        "analyze-out-file",
        lambda e: ["analyze", "fourier", e.run, "--out", e.file("f", "x")],
        "not a folder",
    ),
    (
        "analyze-out-read-only",
        lambda e: ["analyze", "fourier", e.run, "--out", "/sys/vitlens-a"],
        "/sys/vitlens-a",
    ),
    (
        "analyze-cka-no-other",
        lambda e: ["analyze", "cka", e.run, "--other", e.tmp / "none", "--out", new(e)],
        "none",
    ),
    (
        "analyze-device",
        lambda e: ["analyze", "fourier", e.run, "--device", "tpu", "--out", new(e)],
        "device",
    ),
    (
        "analyze-no-model-file",
        lambda e: [
            "analyze",
            "fourier",
            e.record(lambda r: {k: v for k, v in r.items() if k != "model_file"}),
            "--out",
            new(e),
        ],
        "model_file",
    ),
    # study
    ("study-preset", lambda e: ["study", "--preset", "huge", "--out", new(e)], "preset"),
    ("study-seed-neg", lambda e: ["study", "--seed", "-1", "--out", new(e)], "seed"),
    ("study-epochs-0", lambda e: ["study", "--epochs", "0", "--out", new(e)], "epochs"),
    ("study-fraction-0", lambda e: ["study", "--fraction", "0", "--out", new(e)], "fraction"),
    ("study-models", lambda e: ["study", "--models", "vit_9000", "--out", new(e)], "vit_9000"),
    ("study-only", lambda e: ["study", "--only", "telepathy", "--out", new(e)], "telepathy"),
    ("study-out-file", lambda e: ["study", "--out", e.file("f", "x")], "not a folder"),
    ("study-out-run", lambda e: ["study", "--out", e.run], "not empty"),
    (
        "study-out-read-only",
        lambda e: ["study", "--out", "/sys/vitlens-study"],
        "/sys/vitlens-study",
    ),
    ("study-resume-none", lambda e: ["study", "--resume", e.tmp / "none"], "not a study folder"),
    (
        "study-json-unknown-key",
        lambda e: ["study", "--resume", e.study(plan={"colour": "red"})],
        "colour",
    ),
    (
        "study-json-wrong-type",
        lambda e: ["study", "--resume", e.study(plan={"epochs": "three"})],
        "epochs",
    ),
    ("study-json-list", lambda e: ["study", "--resume", e.study(plan=[1, 2])], "study.json"),
    (
        "study-json-corrupt",
        lambda e: ["study", "--resume", _corrupt(e.study(), "study.json")],
        "corrupt",
    ),
    ("study-steps-list", lambda e: ["study", "--resume", e.study(steps=[1, 2])], "steps.json"),
    (
        "study-steps-bad-entry",
        lambda e: ["study", "--resume", e.study(steps={"train/vit_nano": 3})],
        "steps.json",
    ),
    # report
    ("report-not-study", lambda e: ["report", e.tmp], "not a study folder"),
    ("report-study-corrupt", lambda e: ["report", _corrupt(e.study(), "study.json")], "corrupt"),
    ("report-study-list", lambda e: ["report", e.study(plan=[1])], "study.json"),
    ("report-result-list", lambda e: ["report", e.study_with_result([1, 2])], "vit_nano.json"),
    (
        "report-result-provenance",
        lambda e: ["report", e.study_with_result(result_json(provenance={"mood": "x"}))],
        "mood",
    ),
    (
        "report-result-field",
        lambda e: ["report", e.study_with_result(result_json(colour=1))],
        "colour",
    ),
    (
        "report-result-not-json",
        lambda e: ["report", _corrupt(e.study_with_result({}), "results/fourier/vit_nano.json")],
        "vit_nano.json",
    ),
    # buildup
    ("buildup-base", lambda e: ["buildup", "--out", new(e), "--base", "vit_nano"], "AlterNet"),
    ("buildup-epochs-0", lambda e: ["buildup", "--out", new(e), "--epochs", "0"], "epochs"),
    ("buildup-fraction-0", lambda e: ["buildup", "--out", new(e), "--fraction", "0"], "fraction"),
    (
        "buildup-candidates-0",
        lambda e: ["buildup", "--out", new(e), "--max-candidates", "0"],
        "max-candidates",
    ),
    ("buildup-seed-neg", lambda e: ["buildup", "--out", new(e), "--seed", "-1"], "seed"),
    ("buildup-out-file", lambda e: ["buildup", "--out", e.file("f", "x")], "not a folder"),
    ("buildup-out-read-only", lambda e: ["buildup", "--out", "/sys/vitlens-b"], "/sys/vitlens-b"),
    ("buildup-device", lambda e: ["buildup", "--out", new(e), "--device", "tpu"], "device"),
    # the command itself
    ("unknown-command", lambda e: ["frobnicate"], "frobnicate"),
]


def _damaged_config(env) -> Path:
    copy = env.copy()
    (copy / "config.yaml").write_bytes(b"\xff\xfe not yaml")
    return copy


def _damaged_metrics(env) -> Path:
    copy = env.copy()
    path = copy / "metrics.jsonl"
    path.write_text("{not json\n" + path.read_text())
    return copy


def _truncated(env) -> Path:
    copy = env.copy()
    weights = copy / "checkpoints" / "final.model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return copy


def _corrupt(folder: Path, name: str) -> Path:
    (folder / name).write_text("{corrupt")
    return folder


@pytest.mark.parametrize("make_args, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_a_clear_message(env, capsys, make_args, expected):
    before = digest(env.run)
    args = make_args(env)
    code, err = run_cli(args, capsys)
    assert "Traceback" not in err, err
    assert code == 2, err
    assert expected.lower() in err.lower(), err
    assert digest(env.run) == before, "the earlier run folder was changed"
    assert not Path("/sys/vitlens-run").exists()


def test_there_are_enough_cases():
    assert len(CASES) >= 80
    groups = {name.split("-")[0] for name, *_ in CASES}
    assert {"models", "train", "eval", "analyze", "study", "report", "buildup"} <= groups


# -- the Python API's edges -------------------------------------------------------------------


def _model(name, **kw):
    from vitlens.models import create_model

    return lambda: create_model(name, **kw)


def _analysis(module, function, **kw):
    """Call an analysis of a tiny ViT on an empty batch iterable."""

    def call():
        import importlib

        from vitlens.models import create_model

        model = create_model("vit_nano", num_classes=10, image_size=32, in_chans=1)
        getattr(importlib.import_module(f"vitlens.analysis.{module}"), function)(model, [], **kw)

    return call


def _load_result(tmp_path, data):
    from vitlens.analysis.result import load_result

    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    return lambda: load_result(path)


def _record_without(tmp_path, key):
    import torch

    from vitlens.train.checkpoint import read_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path, "last", torch.nn.Linear(2, 2), None, {"epoch": 1})
    record = json.loads(path.read_text())
    del record[key]
    path.write_text(json.dumps(record))
    return lambda: read_checkpoint(path)


def _on_batch(module, function, images, labels=None, *, other=None, **kw):
    """Call an analysis of a tiny 1-channel, 32 px, 10-class ViT on one batch it must refuse."""

    def call():
        import importlib

        import torch

        from vitlens.models import create_model

        torch.manual_seed(0)
        model = create_model("vit_nano", num_classes=10, image_size=32, in_chans=1)
        x = images() if callable(images) else images
        y = torch.zeros(x.shape[0] if x.ndim else 1, dtype=torch.long) if labels is None else labels
        if other is not None:
            kw["other"] = create_model("vit_nano", num_classes=10, **other)
        fn = getattr(importlib.import_module(f"vitlens.analysis.{module}"), function)
        fn(model, [(x, y)], **kw)

    return call


def _images(*shape, dtype="float32", fill=None):
    def make():
        import torch

        x = torch.rand(*shape).to(getattr(torch, dtype))
        if fill is not None:
            x.view(-1)[0] = fill
        return x

    return make


def _labels(*values):
    import torch

    return torch.tensor(values, dtype=torch.long)


def _record(images):
    def call():
        from vitlens.anatomy import record
        from vitlens.models import create_model

        model = create_model("vit_nano", num_classes=10, image_size=32, in_chans=1)
        record(model, images())

    return call


API_CASES = [
    ("create-model-none", lambda t: _model(None), "name"),
    ("create-model-number", lambda t: _model(3), "name"),
    ("record-rgb-for-gray", lambda t: _record(_images(2, 3, 32, 32)), "channels"),
    ("record-rank-3", lambda t: _record(_images(1, 32, 32)), "(b, c, h, w)"),
    ("record-rank-5", lambda t: _record(_images(1, 1, 1, 32, 32)), "(b, c, h, w)"),
    ("record-integers", lambda t: _record(_images(2, 1, 32, 32, dtype="uint8")), "floating"),
    ("record-wrong-size", lambda t: _record(_images(2, 1, 28, 28)), "shape"),
    ("record-a-list", lambda t: _record(lambda: [[0.0]]), "tensor"),
    (
        "fourier-nan",
        lambda t: _on_batch("fourier", "fourier", _images(2, 1, 32, 32, fill=float("nan"))),
        "nan",
    ),
    (
        "fourier-inf",
        lambda t: _on_batch("fourier", "fourier", _images(2, 1, 32, 32, fill=float("inf"))),
        "infinite",
    ),
    (
        "fourier-wrong-shape",
        lambda t: _on_batch("fourier", "fourier", _images(2, 32, 32)),
        "(b, c, h, w)",
    ),
    (
        "variance-rgb",
        lambda t: _on_batch("variance", "variance", _images(2, 3, 32, 32)),
        "channels",
    ),
    (
        "cka-other-size",
        lambda t: _on_batch(
            "cka", "cka", _images(4, 1, 32, 32), other=dict(image_size=16, in_chans=1)
        ),
        "shape",
    ),
    (
        "lesion-label-10-of-10",
        lambda t: _on_batch("lesion", "lesion", _images(2, 1, 32, 32), _labels(3, 10)),
        "10 classes",
    ),
    (
        "lesion-label-negative",
        lambda t: _on_batch("lesion", "lesion", _images(2, 1, 32, 32), _labels(-1, 0)),
        "labels run from -1",
    ),
    (
        "lesion-label-count",
        lambda t: _on_batch("lesion", "lesion", _images(2, 1, 32, 32), _labels(1, 2, 3)),
        "3 labels for a batch of 2",
    ),
    (
        "hessian-label-out",
        lambda t: _on_batch(
            "hessian",
            "hessian_spectrum",
            _images(2, 1, 32, 32),
            _labels(0, 12),
            weight_decay=0.0,
            k=1,
            batch_size=2,
        ),
        "10 classes",
    ),
    (
        "hessian-wd-negative",
        lambda t: _on_batch(
            "hessian", "hessian_spectrum", _images(2, 1, 32, 32), weight_decay=-1.0
        ),
        "weight_decay",
    ),
    (
        "hessian-wd-nan",
        lambda t: _on_batch(
            "hessian", "hessian_spectrum", _images(2, 1, 32, 32), weight_decay=float("nan")
        ),
        "weight_decay",
    ),
    (
        "landscape-wd-negative",
        lambda t: _on_batch(
            "landscape", "loss_landscape", _images(2, 1, 32, 32), weight_decay=-0.1
        ),
        "weight_decay",
    ),
    (
        "landscape-label-out",
        lambda t: _on_batch(
            "landscape", "loss_landscape", _images(2, 1, 32, 32), _labels(0, 99), steps=3
        ),
        "10 classes",
    ),
    ("vit-patch-0", lambda t: _model("vit_nano", patch_size=0), "patch_size"),
    ("vit-heads-0", lambda t: _model("vit_nano", heads=0), "heads"),
    ("vit-depth-neg", lambda t: _model("vit_nano", depth=-1), "depth"),
    ("vit-dim-0", lambda t: _model("vit_nano", dim=0), "dim"),
    ("vit-image-size-0", lambda t: _model("vit_nano", image_size=0), "image_size"),
    ("vit-image-size-neg", lambda t: _model("vit_nano", image_size=-32), "image_size"),
    ("vit-classes-0", lambda t: _model("vit_nano", num_classes=0), "num_classes"),
    ("vit-classes-neg", lambda t: _model("vit_nano", num_classes=-3), "num_classes"),
    ("vit-in-chans-0", lambda t: _model("vit_nano", in_chans=0), "in_chans"),
    ("vit-local-window-0", lambda t: _model("vit_nano", local_window=0), "local_window"),
    ("vit-drop-path-1", lambda t: _model("vit_nano", drop_path=1.0), "drop_path"),
    ("vit-drop-path-neg", lambda t: _model("vit_nano", drop_path=-0.1), "drop_path"),
    ("swin-window-0", lambda t: _model("swin_nano", window=0), "window"),
    ("swin-heads-0", lambda t: _model("swin_nano", heads=(1, 0, 2, 4)), "heads"),
    ("pit-patch-0", lambda t: _model("pit_nano", patch_size=0), "patch_size"),
    ("resnet-depths-0", lambda t: _model("resnet_nano", depths=(2, 0, 2, 2)), "depths"),
    ("resnet-widths-neg", lambda t: _model("resnet_nano", widths=(8, -16, 32, 64)), "widths"),
    ("alternet-msa-neg", lambda t: _model("alternet_nano", msa=(0, -1, 1, 1)), "msa"),
    ("alternet-window-0", lambda t: _model("alternet_nano", window=0), "window"),
    ("result-a-list", lambda t: _load_result(t, [1, 2]), "list"),
    ("result-extra-provenance", lambda t: _load_result(t, result_json(provenance={"x": 1})), "x"),
    (
        "result-provenance-list",
        lambda t: _load_result(t, result_json(provenance=[1])),
        "provenance",
    ),
    ("result-unknown-field", lambda t: _load_result(t, result_json(colour=1)), "colour"),
    ("result-unknown-kind", lambda t: _load_result(t, {"analysis": "telepathy"}), "telepathy"),
    ("record-no-model-file", lambda t: _record_without(t, "model_file"), "model_file"),
    ("record-no-sha", lambda t: _record_without(t, "model_sha256"), "model_sha256"),
    ("fourier-empty", lambda t: _analysis("fourier", "fourier"), "empty"),
    ("variance-empty", lambda t: _analysis("variance", "variance"), "empty"),
    ("lesion-empty", lambda t: _analysis("lesion", "lesion"), "empty"),
    (
        "hessian-empty",
        lambda t: _analysis("hessian", "hessian_spectrum", weight_decay=0.0),
        "batch",
    ),
    ("landscape-empty", lambda t: _analysis("landscape", "loss_landscape"), "batch"),
    ("attention-empty", lambda t: _analysis("attention", "attention_stats"), "empty"),
]


@pytest.mark.parametrize(
    "make_call, expected", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_the_api_refuses_bad_values_with_a_vitlens_error(tmp_path, make_call, expected):
    call = make_call(tmp_path)
    with pytest.raises(VitlensError) as caught:
        call()
    assert expected.lower() in str(caught.value).lower()


def test_sizes_that_cannot_be_built_or_would_not_fit_are_refused(tmp_path):
    from vitlens.config import make_config
    from vitlens.errors import ConfigError
    from vitlens.importing import import_model

    with pytest.raises(ConfigError, match="between 1 and 4096"):
        make_config("quick", model="vit_nano", image_size=100_000)
    with pytest.raises(ConfigError, match="1144 GiB"):
        make_config("quick", model="vit_nano", batch_size=100_000_000)
    with pytest.raises(VitlensError, match="between 1 and 4096"):
        import_model("timm:test_vit", tmp_path / "a", image_size=100_000)
    if importlib.util.find_spec("timm"):  # a 1x1 patch grid that drops 14 of 30 pixels
        with pytest.raises(VitlensError, match="16-pixel patches .*1x1 grid.*e.g. 32"):
            import_model("timm:vit_tiny_patch16_224", tmp_path / "b", image_size=30)
        assert not (tmp_path / "b").exists()
    pytest.importorskip("torchvision")
    with pytest.raises(VitlensError, match="indivisible by patch size"):
        import_model("torchvision:vit_b_16", tmp_path / "b", image_size=30, dataset="cifar10")
    assert not any(tmp_path.iterdir())


def test_no_silent_substitution_on_import_and_study(tmp_path):
    from vitlens.importing import import_model
    from vitlens.study import start_study

    for flag in ("num_classes", "in_chans"):
        with pytest.raises(VitlensError, match="must be at least 1"):
            import_model("timm:test_vit", tmp_path / "a", **{flag: 0})
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "vit", "num_labels": 10}')
    (folder / "pytorch_model.bin").write_bytes(b"not executed")
    with pytest.raises(VitlensError, match="pytorch_model.bin, a pickle"):
        import_model(f"hf:{folder}", tmp_path / "b")
    common = dict(preset="quick", out=tmp_path / "s", resume=None, quiet=True, ablations=None)
    with pytest.raises(VitlensError, match="same run more than once"):
        start_study(**common, runs=[str(folder), str(folder) + "/"])
    with pytest.raises(VitlensError, match="not both"):
        start_study(**common, runs=[str(folder)], models=["vit_nano"])
    assert not any(p.name in ("a", "b", "s") for p in tmp_path.iterdir())


def test_the_generic_probe_uses_the_models_own_channels(tmp_path):
    pytest.importorskip("timm")
    from vitlens.anatomy import anatomy_of
    from vitlens.importing import import_model
    from vitlens.train.runs import load_model

    import_model(
        "timm:convnext_atto", tmp_path / "run", num_classes=10, in_chans=1, image_size=32,
        dataset="fashion-mnist-mini",
    )  # fmt: skip
    model, _ = load_model(tmp_path / "run")
    assert anatomy_of(model).has("conv")  # probed with 1-channel images (was a 3-channel crash)


@functools.cache
def _gray_vit():
    import torch

    from vitlens.models import create_model

    torch.manual_seed(0)
    return create_model("vit_nano", num_classes=10, image_size=32, in_chans=1).eval()


def _wrong_batches() -> st.SearchStrategy:
    """Batches a 1-channel 32 px model must refuse: each is wrong in exactly one way."""
    import torch

    def tensor(shape, dtype=torch.float32):
        return torch.rand(tuple(shape)).to(dtype)

    def poisoned(value, at):
        x = tensor((2, 1, 32, 32))
        x.view(-1)[at] = value
        return x

    dims = st.integers(1, 6)
    return st.one_of(
        st.lists(dims, min_size=0, max_size=3).map(tensor),
        st.lists(dims, min_size=5, max_size=5).map(tensor),
        st.sampled_from([2, 3, 4]).map(lambda c: tensor((1, c, 32, 32))),
        st.sampled_from([torch.uint8, torch.int32, torch.int64, torch.bool]).map(
            lambda d: tensor((1, 1, 32, 32), d)
        ),
        st.builds(poisoned, st.sampled_from([float("nan"), float("inf"), -float("inf")]),
                  st.integers(0, 2 * 32 * 32 - 1)),
        st.integers(4, 40).filter(lambda s: s != 32).map(lambda s: tensor((1, 1, s, s))),
    )  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(x=_wrong_batches())
def test_record_refuses_every_wrong_batch_with_a_vitlens_error(x):
    """Issue 22, point 7: the public API checks shape, rank, channels, dtype and finiteness."""
    from vitlens.anatomy import record

    with pytest.raises(VitlensError):
        record(_gray_vit(), x)


def test_an_empty_class_folder_is_warned_about(tmp_path):
    from PIL import Image

    from vitlens.data.imagefolder import read_image_folder

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    for i in range(2):
        Image.new("L", (8, 8), color=60 * i).save(tmp_path / "a" / f"{i}.png")
        Image.new("L", (8, 8), color=90 * i).save(tmp_path / "c" / f"{i}.png")
    with pytest.warns(UserWarning, match=r"\['b'\] hold no images"):
        images, labels, classes = read_image_folder(tmp_path)
    assert classes == ("a", "b", "c") and labels.tolist() == [0, 0, 2, 2]


@pytest.mark.parametrize("fails", ["optimizer", "record"])
def test_a_checkpoint_that_cannot_be_written_leaves_no_orphan_file(tmp_path, monkeypatch, fails):
    """Issue 22, full disk: the failed save removes the tensor files it wrote."""
    import errno

    import torch

    from vitlens.train import checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    real = checkpoint._atomic_save_tensors

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fails == "optimizer":
        calls = []

        def second_fails(path, *args, **kwargs):
            calls.append(path)
            return real(path, *args, **kwargs) if len(calls) == 1 else full_disk()

        monkeypatch.setattr(checkpoint, "_atomic_save_tensors", second_fails)
    else:
        monkeypatch.setattr(checkpoint, "write_text", full_disk)
    for generations, tag in ((False, "final"), (True, "last")):
        with pytest.raises(OSError, match="No space"):
            checkpoint.save_checkpoint(tmp_path, tag, model, optimizer, {}, generations=generations)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
