"""Nothing lost, ever: atomic writes, locks, checkpoint generations, NaN guard, metrics repair,
and fault injection at every write and rename of a checkpoint."""

from __future__ import annotations

import errno
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
