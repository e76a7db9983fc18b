"""The AlterNet build-up search: candidates in the rule's order, reuse of trained ones, bad base."""

from __future__ import annotations

import pytest

from vitlens.analysis import load_result
from vitlens.buildup import buildup
from vitlens.errors import ConfigError


def test_buildup_trains_candidates_from_the_last_stage_and_reuses_them(tmp_path):
    kw = dict(epochs=1, fraction=0.02, max_candidates=3, quiet=True, device="cpu")
    result = buildup(tmp_path, **kw)
    layouts = [c["msa"] for c in result.candidates]
    assert layouts[0] == [0, 0, 0, 0] and result.candidates[0]["kept"]
    # The first MSA goes to the end of the last stage; later ones follow the rule.
    assert layouts[1] == [0, 0, 0, 1]
    best = result.candidates[0]
    for cand in result.candidates[1:]:
        # Each candidate adds one MSA block to the best layout so far, and is kept only if it
        # beats that layout's accuracy.
        diff = [b - a for a, b in zip(best["msa"], cand["msa"], strict=True)]
        assert sorted(diff) == [0, 0, 0, 1]
        assert cand["kept"] == (cand["accuracy"] > best["accuracy"])
        if cand["kept"]:
            best = cand
    assert result.best_msa == best["msa"]
    saved = load_result(tmp_path / "buildup.json")
    assert saved == result
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/checkpoints/final.json")}
    again = buildup(tmp_path, **kw)
    assert again.candidates == result.candidates
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}, "no candidate is retrained"


def test_buildup_needs_an_alternet_base(tmp_path):
    with pytest.raises(ConfigError, match="AlterNet"):
        buildup(tmp_path, base="resnet_nano")
