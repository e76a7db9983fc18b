"""The `vitlens` command line: listing models and failing cleanly on bad input."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitlens.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_models_lists_the_zoo_with_counts():
    done = run("models", "--pattern", "vit_*")
    assert done.returncode == 0, done.stderr
    assert "vit_ti" in done.stdout and "5,403,172" in done.stdout
    assert "resnet50" not in done.stdout
    assert "3.338" in done.stdout  # ViT-Ti forward GFLOPs at 32x32, patch 2


def test_unknown_pattern_is_a_clear_error_with_status_2():
    done = run("models", "--pattern", "nope*")
    assert done.returncode == 2
    assert "no model matches" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_command_exits_2_without_traceback():
    done = run("frobnicate")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
