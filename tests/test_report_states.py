"""The report states what ran (issue 22, point 4): the scale box from the runs' own records, a
missing Result flagged and redone, an edited plan refused, resume options that would change the
study refused, and the report kept out of a folder a study is writing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from vitlens.errors import VitlensError
from vitlens.report.scale import run_facts, scale_box


def _run(folder, record):
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "final.json").write_text(json.dumps(record))
    return folder


def test_the_scale_box_says_how_each_run_came_to_be(tmp_path):
    trained = _run(
        tmp_path / "a",
        {"epoch": 1, "dataset": "fashion-mnist-mini", "config": {"fraction": 0.05, "seed": 3}},
    )
    imported = _run(
        tmp_path / "b",
        {"dataset": "cifar10", "config": {"epochs": 5, "fraction": 1.0},
         "import": {"source": "timm:resnet18", "pretrained": False}},
    )  # fmt: skip
    facts = [run_facts("vit", trained), run_facts("res", imported), run_facts("x", tmp_path)]
    assert facts[0].how() == "trained for 1 epoch on 5% of fashion-mnist-mini"
    assert facts[0].seed == 3
    # An imported model's config says 5 epochs, but it was never trained: the box says so.
    assert facts[1].how() == "imported (random weights), not trained here; analysed on cifar10"
    assert "no checkpoint record" in facts[2].how()
    box = scale_box({"preset": "quick"}, facts, 120.0)
    assert "trained for 5 epochs" not in box and "3 models" in box
    assert "<b>vit</b>, seed 3: trained for 1 epoch on 5% of fashion-mnist-mini" in box
    assert "2 datasets" in box and "not like for like" in box


def test_resume_refuses_options_that_change_the_study(tmp_path):
    from vitlens.study import start_study

    common = dict(preset="quick", out=None, resume=tmp_path, quiet=True, runs=None)
    with pytest.raises(VitlensError, match="--epochs would change what the study measures"):
        start_study(**common, ablations=None, epochs=5)
    with pytest.raises(VitlensError, match="--ablations, --only"):
        start_study(**common, ablations=False, analyses=["fourier"])


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    """A study of one 1-epoch run on 1 % of the data, with one cheap analysis."""
    from vitlens.config import make_config
    from vitlens.plan import runs_overrides
    from vitlens.study import Study, StudyPlan
    from vitlens.train import Trainer

    root = tmp_path_factory.mktemp("states")
    Trainer(make_config("quick", model="vit_nano", epochs=1, fraction=0.01), root / "vit_nano",
            quiet=True).run()  # fmt: skip
    plan = StudyPlan.from_preset(
        "quick", analyses=["variance"], **runs_overrides([str(root / "vit_nano")], None)
    ).with_overrides(budget={"variance": [1, 8]})
    study = Study.create(root / "study", plan, quiet=True)
    study.run(workers=1)
    study.lock.release()  # as when the study's process exits: other processes may now write
    return root / "study"


def test_a_study_of_runs_reports_their_own_epochs_and_share(small_study):
    page = (small_study / "report.html").read_text()
    assert "trained for 1 epoch on 1% of fashion-mnist-mini" in page
    assert "Not everything ran" not in page


def test_a_deleted_result_is_flagged_then_redone_on_resume(small_study):
    from vitlens.report.html import write_report
    from vitlens.study import start_study

    result = small_study / "results" / "variance" / "vit_nano.json"
    result.unlink()
    page = write_report(small_study).read_text()
    assert "Not everything ran" in page and "variance/vit_nano" in page
    start_study(preset="quick", out=None, resume=small_study, quiet=True, ablations=None,
                runs=None).run(workers=1)  # fmt: skip
    assert result.exists()
    assert "Not everything ran" not in (small_study / "report.html").read_text()


def test_an_edited_plan_is_refused_naming_the_change(small_study, tmp_path):
    import shutil

    from vitlens.report.html import write_report

    copy = tmp_path / "edited"
    shutil.copytree(small_study, copy)
    plan = json.loads((copy / "study.json").read_text())
    plan["epochs"] = 2
    (copy / "study.json").write_text(json.dumps(plan))
    with pytest.raises(VitlensError, match="edited after the study started.*epochs: 5 -> 2"):
        write_report(copy)


def test_a_figures_file_in_the_way_is_a_clear_error(small_study, tmp_path):
    import shutil

    from vitlens.report.html import write_report

    copy = tmp_path / "blocked"
    shutil.copytree(small_study, copy, ignore=shutil.ignore_patterns("figures"))
    (copy / "figures").write_text("not a folder")
    before = (copy / "report.html").read_bytes()
    with pytest.raises(VitlensError, match="cannot write .*figures"):
        write_report(copy)
    assert (copy / "report.html").read_bytes() == before, "the old report is kept whole"


@pytest.mark.slow
def test_report_refuses_while_a_study_writes_the_folder(small_study):
    from vitlens.report.html import write_report

    hold = (
        "import sys, time; from vitlens.locks import folder_lock; "
        f"folder_lock({str(small_study)!r}, 'study folder').acquire(); "
        "print('held', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (small_study / "report.html").stat().st_mtime_ns
        with pytest.raises(VitlensError, match="study folder"):
            write_report(small_study)
        time.sleep(0.01)
        assert (small_study / "report.html").stat().st_mtime_ns == before
    finally:
        holder.kill()
        holder.wait()
