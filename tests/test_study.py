"""The study end to end: a tiny study, its report in headless Chromium, resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from vitlens.analysis import load_result
from vitlens.analysis.runner import ANALYSES
from vitlens.study import Study, StudyPlan

MODELS = ["vit_nano", "resnet_nano"]
TINY_BUDGET = {name: [1, 16] for name in ANALYSES}
TINY_BUDGET["trajectory"] = [None, None]


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitlens.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study") / "tiny"
    plan = StudyPlan.from_preset(
        "quick", models=MODELS, epochs=1, fraction=0.02, budget=TINY_BUDGET, landscape_steps=3
    )
    Study.create(folder, plan, quiet=True).run()
    return folder


def test_every_result_and_figure_exists(tiny_study):
    from vitlens.analysis.registry import get_analysis

    for analysis in ANALYSES:
        for model in MODELS:
            path = tiny_study / "results" / analysis / f"{model}.json"
            if "msa" in get_analysis(analysis).needs and model == "resnet_nano":
                assert not path.exists()  # no MSA blocks: attention and the per-image views
                continue
            result = load_result(path)
            assert result.analysis == analysis and result.provenance.model == model
    figures = {p.stem for p in (tiny_study / "figures").glob("*.png")}
    expected = {
        "fourier",
        "variance",
        "cka",
        "lesion",
        "attention",
        "hessian",
        "landscape_1d",
        "trajectory",
        "corruptions",
        "corruptions_heatmap",
        "freqnoise",
        "attention_maps",
        "embeddings",
        "tokens",
    }
    assert expected <= figures
    assert all(p.stat().st_size > 5000 for p in (tiny_study / "figures").glob("*.png"))
    steps = json.loads((tiny_study / "steps.json").read_text())
    assert all(s["status"] == "done" for s in steps.values())


def test_report_is_self_contained_and_states_claims(tiny_study):
    page = (tiny_study / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count("data:image/png;base64,") >= 10
    for section in (
        "What do MSAs do to optimization?",
        "Do MSAs act like Convs?",
        "How do we harmonize MSAs with Convs?",
        "Scale of this study",
    ):
        assert section in page
    for claim in ("C1", "C4", "C5", "C8", "C9", "C10", "C11"):
        assert f"<td>{claim}</td>" in page


def test_report_command_redraws_from_saved_results(tiny_study, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_study, copy, ignore=shutil.ignore_patterns("runs", "figures"))
    (copy / "report.html").unlink()
    done = cli("report", str(copy))
    assert done.returncode == 0, done.stderr
    assert (copy / "report.html").exists() and (copy / "figures" / "fourier.png").exists()


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise AssertionError("headless Chromium is needed (Debian: apt-get install chromium)")


def test_report_renders_in_headless_chromium(tiny_study, tmp_path):
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-sync",
        "--disable-component-update",
        "--window-size=1200,1600",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get((tiny_study / "report.html").as_uri())
        assert "vitlens study" in driver.title
        images = driver.find_elements("tag name", "img")
        assert len(images) >= 10
        assert all(driver.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    pixels = Image.open(shot).convert("L")
    lo, hi = pixels.getextrema()
    assert hi - lo > 100, "the screenshot is not blank"


def test_killed_study_resumes_without_retraining(tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "vitlens.cli",
        "study",
        "--out",
        str(out),
        "--models",
        ",".join(MODELS),
        "--epochs",
        "1",
        "--fraction",
        "0.02",
        "--only",
        "variance",
        "--quiet",
    ]
    proc = subprocess.Popen(args, env={**os.environ, "OMP_NUM_THREADS": "1"})
    steps_file = out / "steps.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if steps_file.exists() and "train/vit_nano" in json.loads(steps_file.read_text() or "{}"):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = json.loads(steps_file.read_text())
    assert "train/vit_nano" in first
    final = out / "runs" / "vit_nano" / "checkpoints" / "final.model.safetensors"
    stamp = final.stat().st_mtime_ns
    done = cli("study", "--resume", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert final.stat().st_mtime_ns == stamp, "the trained model was not retrained"
    rows = (out / "runs" / "vit_nano" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1
    steps = json.loads(steps_file.read_text())
    assert steps["train/vit_nano"] == first["train/vit_nano"]
    assert (out / "results" / "variance" / "resnet_nano.json").exists()
    assert (out / "report.html").exists()


def test_bad_study_input_is_a_clear_error(tmp_path):
    (tmp_path / "not-a-study").mkdir()
    cases = [
        ("study", "--out", str(tmp_path / "a"), "--models", "vit_nano,frobnet"),
        ("study", "--out", str(tmp_path / "b"), "--only", "astrology"),
        ("study", "--resume", str(tmp_path / "not-a-study")),
        ("report", str(tmp_path / "not-a-study")),
        ("study", "--preset", "huge", "--out", str(tmp_path / "c")),
    ]
    for args in cases:
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and "error" in done.stderr, args
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_plot_draws_what_the_report_draws(tiny_study, tmp_path):
    """Every saved Result draws itself with the report's own function: the same PNG bytes."""
    from matplotlib.figure import Figure

    from vitlens.analysis.registry import get_analysis
    from vitlens.atomic import write_png

    for path in sorted((tiny_study / "results").glob("*/vit_nano.json")):
        result = load_result(path)
        figure = get_analysis(result.analysis).figures[0]
        fig = result.plot()
        assert isinstance(fig, Figure), result.analysis
        mine = write_png(fig, tmp_path / f"{result.analysis}.png", dpi=120).read_bytes()
        drawn = figure.drawer()([result], tmp_path / f"report-{result.analysis}.png")
        assert mine == drawn.read_bytes(), result.analysis
        assert "data:image/png;base64," in result._repr_html_()
