"""Nothing lost, ever: atomic writes, locks, checkpoint generations, NaN guard, metrics repair,
and fault injection at every write and rename of a checkpoint."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from vitlens import atomic
from vitlens.errors import VitlensError

# -- atomic writes ---------------------------------------------------------------------------


def _no_temporaries(folder) -> bool:
    return not [p for p in folder.rglob("*") if atomic.is_temporary(p)]


def test_atomic_writers_write_whole_files(tmp_path):
    import torch
    from matplotlib.figure import Figure
    from safetensors.torch import load_file

    atomic.write_text(tmp_path / "a.txt", "héllo")
    atomic.write_json(tmp_path / "sub" / "b.json", {"x": float("nan")})
    atomic.write_bytes(tmp_path / "c.bin", b"\x00\x01")
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    atomic.write_png(fig, tmp_path / "d.png")
    atomic.write_safetensors(tmp_path / "e.safetensors", {"w": torch.arange(3.0)})
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "sub" / "b.json").read_text() == '{\n "x": NaN\n}'
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert torch.equal(load_file(str(tmp_path / "e.safetensors"))["w"], torch.arange(3.0))
    assert _no_temporaries(tmp_path)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
def test_a_failed_write_removes_its_temporary_and_names_the_path(tmp_path, monkeypatch, code):
    target = tmp_path / "t.json"
    target.write_text("old")

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    for write in (
        lambda: atomic.write_text(target, "new"),
        lambda: atomic.write_json(target, {"new": 1}),
    ):
        with pytest.raises(VitlensError, match=str(target)):
            write()
        assert target.read_text() == "old", "the old file is untouched"
        assert _no_temporaries(tmp_path)
    with pytest.raises(VitlensError, match="t.jsonl"):
        atomic.append_json_line(tmp_path / "t.jsonl", {"row": 1})


def test_a_directory_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "report.html").mkdir()
    with pytest.raises(VitlensError, match="directory is in the way"):
        atomic.write_text(tmp_path / "report.html", "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(VitlensError, match="file is in the way"):
        atomic.write_text(tmp_path / "file" / "inside.txt", "x")
    assert _no_temporaries(tmp_path)


def test_leftover_temporaries_are_recognised_and_ignored(tmp_path):
    (tmp_path / ".last.json.tmp1234").write_text("{")
    (tmp_path / ".x.png.tmp").write_text("")
    assert atomic.visible_entries(tmp_path) == []
    (tmp_path / "kept.txt").write_text("")
    assert [p.name for p in atomic.visible_entries(tmp_path)] == ["kept.txt"]
    atomic.remove_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


def test_writing_html_or_json_does_not_import_torch():
    code = (
        "import sys, vitlens.atomic, vitlens.report.html;"
        "print('torch' in sys.modules, 'safetensors' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"], done.stderr


# -- locks -----------------------------------------------------------------------------------

HOLD = (
    "import sys; from vitlens.locks import folder_lock;"
    "folder_lock(sys.argv[1], 'run folder').acquire(); print('ready', flush=True);"
    "sys.stdin.read()"
)


def _holder(folder):
    """A process that holds the lock of `folder` until its stdin is closed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    from vitlens.locks import FolderLockedError, folder_lock

    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(FolderLockedError, match=f"in use by PID {holder.pid} on "):
            folder_lock(tmp_path / "run", "run folder").acquire()
    finally:
        holder.stdin.close()
        holder.wait()
    assert not (tmp_path / "run").exists(), "the holder made the folder and removed it unused"
    with folder_lock(tmp_path / "run", "run folder"):  # free again
        assert (tmp_path / "run" / atomic.LOCK_NAME).exists()
    assert not (tmp_path / "run").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_notice(tmp_path, capsys):
    import socket

    from vitlens.locks import FolderLockedError, folder_lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / atomic.LOCK_NAME).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname()})
    )
    with folder_lock(tmp_path, "run folder"):
        held = json.loads((tmp_path / atomic.LOCK_NAME).read_text())
        assert held["pid"] == os.getpid()
    assert f"left by PID {dead.pid}" in capsys.readouterr().err
    assert not (tmp_path / atomic.LOCK_NAME).exists()
    # A lock file copied with its folder names a live PID (ours) that holds no flock on it.
    (tmp_path / atomic.LOCK_NAME).write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname()})
    )
    with folder_lock(tmp_path, "run folder"):
        assert json.loads((tmp_path / atomic.LOCK_NAME).read_text())["pid"] == os.getpid()
    # A lock left on another host cannot be checked from here: refused with the way out.
    (tmp_path / atomic.LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(FolderLockedError, match="PID 1 on elsewhere.*delete"):
        folder_lock(tmp_path, "run folder").acquire()


TINY = ["--fraction", "0.01", "--batch-size", "25", "--epochs", "1", "--quiet"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitlens.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_two_runs_into_one_folder_the_second_is_refused(tmp_path):
    import time

    out = tmp_path / "run"
    slow = ["--fraction", "0.01", "--batch-size", "10", "--epochs", "3", "--checkpoint-every", "1"]
    first = subprocess.Popen(
        [sys.executable, "-m", "vitlens.cli", "train", "vit_nano", "--out", str(out), *slow],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "checkpoints" / "last.json").exists() and time.time() < deadline:
        time.sleep(0.01)
    # Another model into the same folder, and the same model resuming the running run.
    for args in (("resnet_nano",), ("vit_nano", "--resume")):
        second = cli("train", *args, "--out", str(out), *TINY)
        assert first.poll() is None, "the first run was still training"
        assert second.returncode == 2, second.stderr
        assert f"in use by PID {first.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
    assert first.wait() == 0, first.stderr.read()
    from vitlens.train.checkpoint import read_checkpoint

    record, _ = read_checkpoint(out / "checkpoints" / "final.json")
    assert record["model_spec"]["name"] == "vit_nano"
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3], "one run's metrics only"
    assert not (out / atomic.LOCK_NAME).exists(), "the lock is released at the end"


# -- fault injection: interrupt every write and rename of a run, then resume ------------------


def _tiny_image_folder(root):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for c in range(2):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = (rng.random((8, 8)) * 100 + 120 * c).astype("uint8")
                Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    return root


def _tiny_config(data):
    from vitlens.config import make_config

    return make_config(
        "quick",
        model="vit_nano",
        model_args={"depth": 1, "dim": 32, "heads": 2, "mlp_dim": 64},
        dataset=f"imagefolder:{data}",
        epochs=2,
        warmup_epochs=1,
        batch_size=4,
        checkpoint_every=1,
        seed=1,
        device="cpu",
    )


class _Interrupt:
    """Counts the file writes, renames and removals inside `folder`; at the `at`-th one, the
    process ends on the spot (os._exit: no cleanup, like a SIGKILL)."""

    def __init__(self, folder, at):
        self.folder, self.at, self.count = str(folder), at, 0

    def hit(self, path) -> None:
        path = os.fspath(path)
        if path.startswith(self.folder) and "tensorboard" not in path:
            self.count += 1
            if self.count == self.at:
                os._exit(3)

    def install(self) -> None:
        import builtins

        import safetensors.torch

        real_open, real_replace, real_unlink = builtins.open, os.replace, os.unlink
        real_save = safetensors.torch.save_file

        def open_(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax"):
                self.hit(file)
            return real_open(file, mode, *args, **kwargs)

        def replace(src, dst, *args, **kwargs):
            self.hit(dst)
            return real_replace(src, dst, *args, **kwargs)

        def unlink(path, *args, **kwargs):
            self.hit(path)
            return real_unlink(path, *args, **kwargs)

        def save_file(tensors, filename, *args, **kwargs):
            self.hit(filename)
            return real_save(tensors, filename, *args, **kwargs)

        builtins.open, os.replace, os.unlink = open_, replace, unlink
        safetensors.torch.save_file = save_file


def _in_child(work, timeout=300) -> int:
    """Run `work()` in a forked process; returns its exit status (0 when `work` returned)."""
    import time

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            work()
            status = 0
        except BaseException as err:  # noqa: BLE001 - reported through the exit status
            print(f"child failed: {err!r}", file=sys.stderr)
        os._exit(status)
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("a training child hung")


def _train_child(cfg, out, interrupt_at=None, count_file=None):
    def work():
        from vitlens.train import Trainer

        counter = _Interrupt(out, interrupt_at or 0)
        counter.install()
        Trainer(cfg, out, resume=(out / "config.yaml").exists(), quiet=True).run()
        if count_file is not None:
            count_file.write_text(str(counter.count))

    return _in_child(work)


def test_interrupting_any_write_or_rename_then_resuming_is_bit_exact(tmp_path):
    import torch
    import torch.utils.tensorboard  # noqa: F401 - imported once here, not in every child
    from safetensors.torch import load_file

    import vitlens.data  # noqa: F401
    import vitlens.models  # noqa: F401
    import vitlens.train  # noqa: F401

    cfg = _tiny_config(_tiny_image_folder(tmp_path / "data"))
    ref, count_file = tmp_path / "ref", tmp_path / "count"
    assert _train_child(cfg, ref, count_file=count_file) == 0
    total = int(count_file.read_text())
    print(f"{total} writes, renames and removals")
    reference = load_file(str(ref / "checkpoints" / "final.model.safetensors"))
    ref_rows = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    # 4 checkpoints of 6-8 operations, the final one, config.yaml and two metric rows.
    assert total >= 36, total
    for at in range(1, total + 1):
        out = tmp_path / f"cut{at}"
        assert _train_child(cfg, out, interrupt_at=at) == 3, f"interrupted at operation {at}"
        assert _train_child(cfg, out) == 0, f"resumed after operation {at}"
        final = load_file(str(out / "checkpoints" / "final.model.safetensors"))
        assert final.keys() == reference.keys()
        assert all(torch.equal(final[k], reference[k]) for k in reference), at
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["test_nll"] for r in rows] == [r["test_nll"] for r in ref_rows], at
        assert [r["train_nll"] for r in rows] == [r["train_nll"] for r in ref_rows], at
        leftovers = [p.name for p in out.rglob("*") if atomic.is_temporary(p)]
        assert not leftovers, (at, leftovers)
        assert len(list((out / "checkpoints").glob("last-*"))) == 2, "one generation is kept"


# -- the four data-loss defects of issue 12 ---------------------------------------------------


class _Killed(BaseException):
    """Raised by a patched call to end a run where it stands."""


def _fail_at(monkeypatch, name: str, nth: int, error: BaseException) -> None:
    """Make the `nth` rename onto a file called `name` raise `error`."""
    real, seen = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == name:
            seen.append(dst)
            if len(seen) == nth:
                raise error
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def _final_weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "checkpoints" / "final.model.safetensors"))


def _same(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """The tiny run's config and its uninterrupted result."""
    from vitlens.train import Trainer

    tmp = tmp_path_factory.mktemp("reference")
    cfg = _tiny_config(_tiny_image_folder(tmp / "data"))
    Trainer(cfg, tmp / "ref", quiet=True).run()
    rows = (tmp / "ref" / "metrics.jsonl").read_text().splitlines()
    return cfg, _final_weights(tmp / "ref"), [json.loads(r) for r in rows]


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(
    tiny_reference, tmp_path, monkeypatch
):
    from vitlens.train import Trainer
    from vitlens.train.checkpoint import read_checkpoint

    cfg, reference, _ = tiny_reference
    out = tmp_path / "full"
    # The second checkpoint's tensor files are written; switching its record fails: disk full.
    _fail_at(monkeypatch, "last.json", 2, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(VitlensError, match="last.json: the disk is full"):
        Trainer(cfg, out, quiet=True).run()
    monkeypatch.undo()
    record, _ = read_checkpoint(out / "checkpoints" / "last.json")  # complete and verified
    assert record["step"] == 1
    assert _no_temporaries(out)
    Trainer(cfg, out, resume=True, quiet=True).run()
    assert _same(_final_weights(out), reference)
    assert len(list((out / "checkpoints").glob("last-*.safetensors"))) == 2


def test_the_nan_guard_keeps_only_finite_checkpoints_and_its_advice_works(tmp_path, capsys):
    import torch
    from test_bad_input import run_cli  # the in-process command line

    from vitlens.train.checkpoint import read_checkpoint, read_optimizer
    from vitlens.train.resume import divergence_message

    out = tmp_path / "nan"
    tiny = ["--fraction", "0.02", "--batch-size", "20", "--epochs", "2", "--quiet"]
    code, err = run_cli(
        ["train", "vit_nano", "--lr", "1e6", "--checkpoint-every", "1", "--out", out, *tiny], capsys
    )
    assert code == 2 and "Traceback" not in err, err
    assert "non-finite" in err or "loss became" in err
    assert "gradient clipping" not in err.lower(), "clipping is on: no advice to enable it"
    record, weights = read_checkpoint(out / "checkpoints" / "last.json")
    tensors = [
        *weights.values(),
        *read_optimizer(out / "checkpoints" / "last.json", record).values(),
    ]
    assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())
    assert f"step {record['step']}" in err, "the message names the checkpoint that is kept"
    # Continuing with a lower learning rate is allowed (not "a different configuration")
    # and recorded, whether or not that checkpoint can still be saved.
    code, err = run_cli(
        ["train", "vit_nano", "--resume", "--lr", "1e-3", "--out", out, "--quiet"], capsys
    )
    assert code in (0, 2) and "Traceback" not in err and "different configuration" not in err
    assert "lr: 0.001" in (out / "config.yaml").read_text()
    assert (
        f"resumed at step {record['step']} with lr 1000000.0 -> 0.001"
        in (out / "config.yaml").read_text()
    )
    # Without any checkpoint, the message says so instead of naming one.
    cfg_text = divergence_message(tmp_path / "empty", _tiny_config(tmp_path), "the loss became nan")
    assert "no checkpoint was written" in cfg_text and "last good checkpoint" not in cfg_text


def test_resume_may_change_the_learning_rate_and_the_epochs_and_records_it(tmp_path, capsys):
    from test_bad_input import run_cli

    out = tmp_path / "run"
    tiny = ["--fraction", "0.01", "--batch-size", "25", "--quiet", "--out", out]
    assert run_cli(["train", "vit_nano", "--epochs", "1", *tiny], capsys)[0] == 0
    code, err = run_cli(
        ["train", "vit_nano", "--resume", "--epochs", "2", "--lr", "5e-4", *tiny], capsys
    )
    assert code == 0, err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "config_changes" not in rows[0]
    changed = {"epochs": [1, 2], "lr": [0.001, 0.0005]}
    assert rows[1]["config_changes"] == [{"step": 4, "changed": changed}]
    text = (out / "config.yaml").read_text()
    assert (
        "epochs: 2" in text and "lr: 0.0005" in text and "epochs 1 -> 2, lr 0.001 -> 0.0005" in text
    )
    code, err = run_cli(
        ["train", "vit_nano", "--resume", "--batch-size", "10", "--out", out], capsys
    )
    assert code == 2 and "batch_size 25 -> 10" in err, err


def test_a_damaged_metrics_file_is_repaired_on_resume_after_every_check(
    tiny_reference, tmp_path, monkeypatch, capsys
):
    from vitlens.train import Trainer

    cfg, reference, ref_rows = tiny_reference
    out = tmp_path / "run"
    # Killed at the end of epoch 1, after its metric row, before its checkpoint's record.
    _fail_at(monkeypatch, "last.json", 2, _Killed())
    with pytest.raises(_Killed):
        Trainer(cfg, out, quiet=True).run()
    monkeypatch.undo()
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_nll": 0.')  # and a torn line, as a kill mid-append leaves
    # A damaged line elsewhere is refused before anything is written.
    good = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text("oops\n" + good)
    from test_bad_input import digest

    before = digest(out)
    with pytest.raises(VitlensError, match="line 1"):
        Trainer(cfg, out, resume=True, quiet=True).run()
    assert digest(out) == before, "a refused resume writes nothing"
    (out / "metrics.jsonl").write_text(good)
    capsys.readouterr()
    Trainer(cfg, out, resume=True, quiet=True).run()
    err = capsys.readouterr().err
    assert "dropped a torn last line" in err and "dropped the rows of epochs [1]" in err
    assert _same(_final_weights(out), reference)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["test_nll"] for r in rows] == [r["test_nll"] for r in ref_rows]
