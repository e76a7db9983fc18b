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
