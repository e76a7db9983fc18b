"""Results as tables: the CSV (and DataFrame) hold exactly the numbers of the JSON.

Real Results of a tiny vitlens ViT (Fourier, variance, CKA, lesion, attention, Hessian) are saved,
exported and read back; every number of each JSON must appear once in its CSV, at its block and
index, with the same value, and nothing else may.
"""

from __future__ import annotations

import csv
import functools
import json
import subprocess
import sys

import pytest
import torch

from vitlens.errors import VitlensError
from vitlens.export import COLUMNS, export_csv, rows
from vitlens.models import create_model


@functools.cache
def results():
    from vitlens.analysis.attention import attention_stats
    from vitlens.analysis.cka import cka
    from vitlens.analysis.fourier import fourier
    from vitlens.analysis.hessian import hessian_spectrum
    from vitlens.analysis.lesion import lesion
    from vitlens.analysis.variance import variance

    torch.manual_seed(0)
    model = create_model("vit_nano", num_classes=5, in_chans=1).eval()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, 1, 32, 32, generator=g), torch.randint(0, 5, (4,), generator=g))]
    return [
        fourier(model, data),
        variance(model, data),
        cka(model, data),
        lesion(model, data),
        attention_stats(model, data),
        hessian_spectrum(model, data, weight_decay=0.05, k=2, batch_size=4, max_iter=4),
    ]


def numbers(value, path=()):
    """(path, number) of every number in a JSON value, booleans and strings excluded."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        yield path, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, (*path, i))
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from numbers(item, (*path, k))


LABELS = {"names", "kinds", "stages", "depths", "names_a", "kinds_a", "stages_a", "depths_a"}
LABELS |= {"names_b", "kinds_b", "stages_b", "depths_b"}


def expected(data: dict) -> dict[tuple, float]:
    """What the CSV must hold: (metric, block, index) -> value, computed from the JSON alone."""
    names = data.get("names") or data.get("names_a") or []
    out = {}
    for metric, value in data.items():
        if metric in LABELS | {"analysis", "schema", "provenance"}:
            continue
        per_block = bool(names) and isinstance(value, list) and len(value) == len(names)
        for path, number in numbers(value):
            block, rest = (names[path[0]], path[1:]) if per_block else ("", path)
            out[(metric, block, ".".join(map(str, rest)))] = number
    return out


def same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN here


@pytest.mark.parametrize("index", range(6))
def test_csv_numbers_equal_the_json(tmp_path, index):
    result = results()[index]
    saved = result.save(tmp_path / f"{result.analysis}.json")
    [written] = export_csv(saved, tmp_path / "tables")
    with open(written, newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == COLUMNS
    want = expected(json.loads(saved.read_text()))
    got = {(r["metric"], r["block"], r["index"]): float(r["value"]) for r in table}
    assert len(got) == len(table)  # no number twice
    assert got.keys() == want.keys()
    assert all(same(got[k], float(want[k])) for k in want)
    assert {r["analysis"] for r in table} == {result.analysis}
    # Per-block rows carry the block's labels.
    data = json.loads(saved.read_text())
    if "kinds" in data:
        kind_of = dict(zip(data["names"], data["kinds"], strict=True))
        assert all(r["kind"] == kind_of[r["block"]] for r in table if r["block"])


def test_cka_rows_name_both_blocks():
    result = results()[2]
    table = [r for r in rows(result) if r["metric"] == "matrix"]
    assert len(table) == len(result.names_a) * len(result.names_b)
    for r in table:
        i, j = result.names_a.index(r["block"]), result.names_b.index(r["other"])
        assert r["value"] == result.matrix[i][j] and r["index"] == str(j)


def test_per_image_fields_are_not_taken_for_blocks():
    from vitlens.analysis.attention_maps import AttentionMapsResult

    # Two images and two blocks: equal lengths must not make `labels` look per block.
    maps = [[[[0.25] * 4], [[0.5, 0.5, 0.0, 0.0]]], [[[0.1] * 4], [[0.4] * 4]]]
    result = AttentionMapsResult(
        names=["blocks.0", "blocks.1"], heads=[1, 1], maps=maps, labels=[3, 7], predicted=[3, 1]
    )
    table = rows(result)
    labels = [r for r in table if r["metric"] == "labels"]
    assert [(r["block"], r["index"], r["value"]) for r in labels] == [("", "0", 3), ("", "1", 7)]
    second = [r for r in table if r["metric"] == "maps" and r["block"] == "blocks.1"]
    assert [r["value"] for r in second] == [0.5, 0.5, 0.0, 0.0, 0.4, 0.4, 0.4, 0.4]
    assert second[0]["index"] == "0.0.0" and second[-1]["index"] == "1.0.3"  # image.head.patch


def test_to_frame_is_the_same_table():
    pd = pytest.importorskip("pandas")
    result = results()[0]
    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame) and tuple(frame.columns) == COLUMNS
    assert frame["value"].tolist() == [r["value"] for r in rows(result)]
    curve = frame[(frame.metric == "high_frequency") & (frame.kind == "msa")]
    assert len(curve) == result.kinds.count("msa")


def test_a_run_and_a_study_export_every_result(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for result in results()[:2]:
        result.save(run / "analysis" / f"{result.analysis}.json")
    assert sorted(p.name for p in export_csv(run, tmp_path / "a")) == [
        "fourier.csv",
        "variance.csv",
    ]
    study = tmp_path / "study"
    (study / "results").mkdir(parents=True)
    (study / "study.json").write_text("{}")
    for model in ("vit", "resnet"):
        results()[0].save(study / "results" / "fourier" / f"{model}.json")
    written = export_csv(study, tmp_path / "b")
    assert sorted(str(p.relative_to(tmp_path / "b")) for p in written) == [
        "fourier/resnet.csv",
        "fourier/vit.csv",
    ]
    with pytest.raises(VitlensError, match="neither a Result JSON"):
        export_csv(tmp_path / "a", tmp_path / "c")


def test_the_command_writes_csv_and_refuses_a_missing_path(tmp_path):
    from typer.testing import CliRunner

    from vitlens.cli import app

    saved = results()[1].save(tmp_path / "variance.json")
    ok = CliRunner().invoke(app, ["export", str(saved), "--csv", str(tmp_path / "t")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "t" / "variance.csv").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "vitlens.cli", "export", str(tmp_path / "no"), "--csv", "t"],
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 2 and "nothing to export" in bad.stderr and "Traceback" not in bad.stderr
    )


def test_damaged_results_are_refused_before_any_table(tmp_path):
    result = results()[0]
    data = json.loads(result.save(tmp_path / "good.json").read_text())
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**data, "names": 7}))  # a number where a list belongs
    with pytest.raises(VitlensError, match="'names' holds a int, not list"):
        export_csv(wrong, tmp_path / "t1")
    deep = tmp_path / "deep.json"
    deep.write_text('{"analysis": "fourier", "names": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(VitlensError, match="nested too deeply"):
        export_csv(deep, tmp_path / "t2")
    assert not (tmp_path / "t1").exists() and not (tmp_path / "t2").exists()
    from vitlens.analysis.result import load_result

    assert load_result(tmp_path / "good.json") == result  # a sound file still loads
