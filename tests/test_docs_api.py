"""docs/api.md's worked examples run as written (in order, in one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_worked_examples_run(capsys):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    pytest.importorskip("pandas")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 5
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 (our own documentation)
    out = capsys.readouterr().out
    assert "['embed', 'block0.msa', 'block0.mlp']" in out
    assert "block1.mlp" in out and "msa" in out  # the lesion table, one row per block
    assert "2 <div><b>variance</b> of" in out  # the notebook section: two panels, the display


def test_the_table_of_analyses_is_what_the_specs_say():
    import importlib.util

    path = DOC.parents[1] / "scripts" / "api_tables.py"
    loader = importlib.util.spec_from_file_location("api_tables", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    text = DOC.read_text()
    assert module.rewritten(text) == text, "stale: run python scripts/api_tables.py"
    hessian = next(line for line in text.splitlines() if line.startswith("| `hessian`"))
    assert "`curvature_batches=" in hessian and "`trace`" in hessian  # the drift the issue found
    freqnoise = next(line for line in text.splitlines() if line.startswith("| `freqnoise`"))
    assert "`eps=0.7`" in freqnoise
