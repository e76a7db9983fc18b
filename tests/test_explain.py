"""`vitlens explain` (issue 18): images read safely, the page's data equal to the model's maps,
bad input refused with nothing written, and the page driven in headless Chromium (slow)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitlens.analysis.attention_maps import capture_attention
from vitlens.data.images import read_images
from vitlens.errors import VitlensError
from vitlens.explaining import explain
from vitlens.report.explain_page import quantized_rows


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    from vitlens.config import make_config
    from vitlens.train import Trainer

    out = tmp_path_factory.mktemp("run") / "vit"
    cfg = make_config("quick", model="vit_nano", epochs=1, fraction=0.01)
    Trainer(cfg, out, quiet=True).run()
    return out


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    from vitlens.config import make_config
    from vitlens.train import Trainer

    out = tmp_path_factory.mktemp("run") / "cnn"
    Trainer(
        make_config("quick", model="resnet_nano", epochs=1, fraction=0.01), out, quiet=True
    ).run()
    return out


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode).save(path)
    return path


# -- reading images ----------------------------------------------------------------------------


def test_images_are_converted_where_safe_and_resized_as_evaluation_does(tmp_path):
    rgb = save(tmp_path / "wide.png", np.full((30, 60, 3), (200, 100, 50), np.uint8))
    gray = save(tmp_path / "gray.png", np.full((40, 40), 77, np.uint8))
    one = read_images([rgb, gray], channels=1, size=28)
    assert one.pixels.shape == (2, 1, 28, 28) and one.pixels.dtype == torch.uint8
    luma = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert int(one.pixels[0, 0, 14, 14]) == pytest.approx(luma, abs=1)
    assert one.notes == ["wide.png: RGB converted to grayscale (luma) for a 1-channel model"]
    three = read_images([gray], channels=3, size=32)
    assert three.pixels.shape == (1, 3, 32, 32) and (three.pixels == 77).all()
    assert "converted to RGB" in three.notes[0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "no image at"),
        (lambda d: d, "is not a file"),
        (lambda d: write(d / "empty.png", b""), "is empty"),
        (lambda d: write(d / "text.png", b"not an image"), "cannot read"),
        (lambda d: write(d / "cut.png", _png_bytes()[:60]), "cannot read"),  # truncated
        (lambda d: save(d / "cmyk.jpg", np.zeros((8, 8, 4), np.uint8), "CMYK"), "converts only"),
    ],
)
def test_bad_images_are_clear_errors(tmp_path, make, message):
    with pytest.raises(VitlensError, match=message):
        read_images([make(tmp_path)], channels=1, size=28)


def _png_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    bomb = save(tmp_path / "bomb.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(VitlensError, match="decompression bomb"):
        read_images([bomb], channels=1, size=28)


# -- explain: what it writes, and what it refuses ------------------------------------------------


def _page_data(page: Path) -> dict:
    text = page.read_text()
    blob = re.search(r'<script type="application/json" id=data>(.*?)</script>', text, re.S)
    return json.loads(blob.group(1).replace("<\\/", "</"))


def test_explain_writes_results_and_a_page_whose_maps_are_the_models(vit_run, tmp_path):
    done = explain(vit_run, out=tmp_path / "out", n_images=2, device="cpu")
    assert set(done.results) == {"attention_maps", "embeddings", "tokens", "attention"}
    text = done.page.read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", text)  # nothing from the network
    assert "default-src 'none'" in text
    data = _page_data(done.page)
    assert len(data["images"]) == 2 and len(data["blocks"]) == 6 and data["positions"]
    # The page's rows are the model's attention, grid query by grid query.
    from vitlens.analysis.runner import clean_batches, load_subject

    subject = load_subject(vit_run, torch.device("cpu"))
    loader, _ = clean_batches(subject, batch_size=2, limit=1)
    images, _ = next(iter(loader))
    with torch.no_grad():
        capture = capture_attention(subject.model, images)
    for k, b in enumerate(capture.blocks):
        want = quantized_rows(b.full()[1], b.prefix).numpy()
        got = np.frombuffer(base64.b64decode(data["rows"][1][k]), np.uint8)
        assert np.array_equal(got.reshape(want.shape), want)
        assert (want.max(-1) == 255).all()
    # The folder exports like a run's: one CSV per Result, its numbers those of the JSON.
    from vitlens.export import export_csv

    tables = export_csv(tmp_path / "out", tmp_path / "csv")
    assert sorted(p.name for p in tables) == sorted(f"{k}.csv" for k in done.results)
    import csv

    from vitlens.analysis.result import load_result

    result = load_result(tmp_path / "out" / "results" / "attention_maps.json")
    with open(tmp_path / "csv" / "attention_maps.csv") as f:
        maps = [r for r in csv.DictReader(f) if r["metric"] == "maps"]
    assert len(maps) == sum(len(head) for image in result.maps for b in image for head in b)
    assert {r["block"] for r in maps} == set(result.names)  # image -> block: blocks named


def test_explain_refuses_before_writing(vit_run, cnn_run, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(VitlensError, match="outside the model's 10 classes"):
        explain(vit_run, out=out, class_index=10, device="cpu")
    with pytest.raises(VitlensError, match="no MSA block"):
        explain(cnn_run, out=out, device="cpu")
    with pytest.raises(VitlensError, match="no image at"):
        explain(vit_run, out=out, images=[tmp_path / "nope.png"], device="cpu")
    assert not out.exists()


def test_explain_takes_user_images_and_a_named_class(vit_run, tmp_path):
    rgb = save(tmp_path / "photo.png", np.random.default_rng(1).integers(0, 255, (50, 40, 3),
                                                                         np.uint8))  # fmt: skip
    done = explain(vit_run, out=tmp_path / "out", images=[rgb], class_index=3, device="cpu")
    data = _page_data(done.page)
    assert data["images"][0]["name"] == "photo.png" and data["images"][0]["explained"] == 3
    assert data["images"][0]["label"] == -1
    assert "converted to grayscale" in done.notes[0]


# -- the command and the page in a browser (slow) -----------------------------------------------


def test_the_command_exits_2_on_bad_input_and_writes_nothing(vit_run, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vitlens.cli", "explain", str(vit_run), "--out", str(out)]
    for args in (["--class", "99"], ["--image", str(tmp_path / "nope.png")]):
        done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and not out.exists()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise AssertionError("headless Chromium is needed (Debian: apt-get install chromium)")


def _driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", "--window-size=1200,1500",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def _expected_row(data: dict, image: int, block: int, head: int, query: int) -> np.ndarray:
    b = data["blocks"][block]
    G = b["grid"][0] * b["grid"][1]
    rows = np.frombuffer(base64.b64decode(data["rows"][image][block]), np.uint8)
    rows = rows.reshape(b["heads"], G, G).astype(float)
    return rows[:, query].mean(0) if head < 0 else rows[head, query]


def test_the_page_works_in_headless_chromium(vit_run, tmp_path):
    done = explain(vit_run, out=tmp_path / "out", n_images=2, device="cpu")
    data = _page_data(done.page)
    driver = _driver(tmp_path)
    try:
        driver.get(done.page.as_uri())
        assert driver.execute_script("return document.body.dataset.ready") == "1"
        network = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(n => !n.startsWith('data:'))"
        )
        assert network == []
        canvas = driver.find_element("id", "image")
        # Click the patch in row 2, column 5 of the 7x7 grid: the map shown is that query's.
        size = canvas.size
        from selenium.webdriver.common.action_chains import ActionChains

        x = int((5 + 0.5) / 7 * size["width"] - size["width"] / 2)
        y = int((2 + 0.5) / 7 * size["height"] - size["height"] / 2)
        ActionChains(driver).move_to_element_with_offset(canvas, x, y).click().perform()
        assert driver.execute_script("return document.body.dataset.query") == str(2 * 7 + 5)
        shown = driver.execute_script("return window.vitlens.shown")
        np.testing.assert_allclose(shown, _expected_row(data, 0, 0, -1, 19), rtol=1e-9)
        # The block and head pickers change the map to that block's and head's row.
        Select = __import__("selenium.webdriver.support.select", fromlist=["Select"]).Select
        Select(driver.find_element("id", "block")).select_by_index(3)
        Select(driver.find_element("id", "head")).select_by_index(2)  # head 1
        assert driver.execute_script("return document.body.dataset.head") == "1"
        shown = driver.execute_script("return window.vitlens.shown")
        np.testing.assert_allclose(shown, _expected_row(data, 0, 3, 1, 19), rtol=1e-9)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    lo, hi = Image.open(shot).convert("L").getextrema()
    assert hi - lo > 100, "the screenshot is not blank"
