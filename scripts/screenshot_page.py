"""Render a vitlens page (explain.html or report.html) in headless Chromium and save a PNG.

Used for the screenshots in docs/. Needs Debian's chromium and chromium-driver and selenium.

Usage:
    python scripts/screenshot_page.py PAGE.html OUT.png [--click ROW,COL] [--block K]
        [--width 1200] [--height 1400]

--click selects a patch of the explain page's image (its row and column on the grid of the
selected block), --block picks the block first.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.select import Select


def driver(width: int, height: int, profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-sync", "--disable-quic",
                 "--disable-component-update", f"--window-size={width},{height}",
                 f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def click_patch(browser: webdriver.Chrome, row: int, col: int) -> None:
    grid = browser.execute_script("return window.vitlens.data.blocks[window.vitlens.state.block]")
    H, W = grid["grid"]
    canvas = browser.find_element("id", "image")
    size = canvas.size
    x = int((col + 0.5) / W * size["width"] - size["width"] / 2)
    y = int((row + 0.5) / H * size["height"] - size["height"] / 2)
    ActionChains(browser).move_to_element_with_offset(canvas, x, y).click().perform()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--click", default=None, help="ROW,COL of a patch to click")
    parser.add_argument("--block", type=int, default=None)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as profile:
        browser = driver(args.width, args.height, Path(profile))
        try:
            browser.get(args.page.resolve().as_uri())
            if args.block is not None:
                Select(browser.find_element("id", "block")).select_by_index(args.block)
            if args.click:
                row, col = (int(v) for v in args.click.split(","))
                click_patch(browser, row, col)
            browser.save_screenshot(str(args.out))
        finally:
            browser.quit()
    print(args.out)


if __name__ == "__main__":
    main()
