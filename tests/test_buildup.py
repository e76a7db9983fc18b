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


def test_validation_split_is_class_balanced_seeded_and_disjoint():
    import torch

    from vitlens.buildup import validation_split

    labels = torch.arange(10).repeat_interleave(50)[torch.randperm(500)]
    val, rest = validation_split(labels, 0.1, seed=3)
    assert torch.bincount(labels[val], minlength=10).tolist() == [5] * 10
    assert sorted(torch.cat([val, rest]).tolist()) == list(range(500))  # a partition
    assert torch.equal(val, validation_split(labels, 0.1, seed=3)[0])
    assert not torch.equal(val, validation_split(labels, 0.1, seed=4)[0])
    with pytest.raises(ConfigError, match="validation fraction"):
        validation_split(labels, 1.0, seed=3)


def test_buildup_decides_on_validation_and_reads_test_only_afterwards(tmp_path, monkeypatch):
    """Fails if the search loads the test split while it is still keeping/rejecting candidates."""
    import vitlens.buildup as bu
    import vitlens.data
    import vitlens.data.sources
    from vitlens.data import class_balanced_subset, load_dataset

    reads: list[tuple[str, bool]] = []  # (split, read while deciding?)
    deciding = [False]

    def recording_load(name, split="train", **kw):
        reads.append((split, deciding[0]))
        return load_dataset(name, split, **kw)

    def recording_search(*args, **kw):
        deciding[0] = True
        try:
            return real_search(*args, **kw)
        finally:
            deciding[0] = False

    real_search = bu._search
    monkeypatch.setattr(vitlens.data, "load_dataset", recording_load)
    monkeypatch.setattr(vitlens.data.sources, "load_dataset", recording_load)
    monkeypatch.setattr(bu, "_search", recording_search)
    result = bu.buildup(
        tmp_path, epochs=1, fraction=0.02, max_candidates=2, quiet=True, device="cpu", seed=1
    )
    assert ("train", True) in reads and ("test", True) not in reads
    assert ("test", False) in reads  # the test column is measured, after deciding
    assert result.decided_on == "validation" and result.provenance.split == "validation"
    assert result.validation == {
        "fraction": 0.1,
        "seed": 1,
        "class_balanced": True,
        "size": 1000,
        "train_size": 9000,
    }
    # Each candidate's deciding accuracy is its accuracy on the held-out validation images.
    from vitlens.train.evaluation import evaluate_checkpoint
    from vitlens.train.loop import evaluate
    from vitlens.train.runs import load_model

    train = load_dataset("fashion-mnist-mini", "train")
    val_idx, rest = bu.validation_split(train.labels, 0.1, 1)
    trained_on = rest[class_balanced_subset(train.labels[rest], 0.02, 1)]
    assert not set(trained_on.tolist()) & set(val_idx.tolist())
    for cand in result.candidates:
        model, _ = load_model(cand["run"])
        val = evaluate(model, train.subset(val_idx), 256, "cpu")
        assert cand["accuracy"] == pytest.approx(val["acc"])
        test = evaluate_checkpoint(cand["run"], split="test", device="cpu")
        assert cand["test_accuracy"] == pytest.approx(test["acc"])
    kept = [c for c in result.candidates if c["msa"] == result.best_msa]
    assert result.best_test_accuracy == kept[0]["test_accuracy"]
    assert result.best_accuracy == kept[0]["accuracy"]
    assert load_result(tmp_path / "buildup.json") == result
    # Runs made under another validation split are refused, not silently reused.
    with pytest.raises(ConfigError, match="validation split"):
        bu.buildup(tmp_path, epochs=1, fraction=0.02, max_candidates=2, quiet=True, seed=2)
