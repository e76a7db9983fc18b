"""Execute the example notebooks and render them, with their outputs, as Markdown in docs/.

The notebooks in examples/ are stored without outputs (small, diffable; tests/test_notebooks.py
checks it). This script runs each top to bottom in a fresh kernel (nbclient), then writes
`docs/notebooks/NAME.md`: markdown cells as they are, code cells as Python blocks, text outputs
as plain blocks, figures as PNG files beside it (`docs/notebooks/NAME_files/`), and the run time.

Usage:
    python scripts/render_notebooks.py [examples/how_vits_work.ipynb ...] [--out docs/notebooks]
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, timeout: int = 600) -> tuple[nbformat.NotebookNode, float]:
    """The notebook run top to bottom in a fresh kernel, and its wall seconds."""
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3").execute()
    return notebook, time.perf_counter() - started


_DATA_PNG = re.compile(r"""src=(['"])data:image/png;base64,([A-Za-z0-9+/=]+)\1""")


def _save_png(data: str, files: Path, stem: str, count: list[int]) -> str:
    count[0] += 1
    name = f"{stem}_{count[0]}.png"
    (files / name).write_bytes(base64.b64decode(data))
    return f"{files.name}/{name}"


def _output_markdown(output, files: Path, stem: str, count: list[int]) -> str:
    """One cell output as Markdown: a figure as a PNG file beside the page, a rich display
    (a Result's `_repr_html_`) as its HTML with the inlined image moved to a file, text as a
    plain block. Warnings and progress bars on stderr are left out of the page."""
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        return ""
    data = output.get("data", {})
    if "image/png" in data:
        return f"![output]({_save_png(data['image/png'], files, stem, count)})\n"
    if "text/html" in data:
        page = _DATA_PNG.sub(
            lambda m: f"src={m[1]}{_save_png(m[2], files, stem, count)}{m[1]}", data["text/html"]
        )
        return page.strip() + "\n"
    text = output.get("text") or data.get("text/plain") or ""
    return f"```text\n{text.rstrip()}\n```\n" if text.strip() else ""


def to_markdown(notebook, out: Path, stem: str, seconds: float) -> Path:
    files = out / f"{stem}_files"
    shutil.rmtree(files, ignore_errors=True)  # no figure of an earlier rendering stays behind
    files.mkdir(parents=True)
    parts, count = [], [0]
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source + "\n")
            continue
        parts.append(f"```python\n{cell.source}\n```\n")
        parts += [_output_markdown(o, files, stem, count) for o in cell.get("outputs", [])]
    parts.append(f"*Executed top to bottom in {seconds:.0f} s (nbclient, 2 CPU cores).*\n")
    path = out / f"{stem}.md"
    path.write_text("\n".join(p for p in parts if p))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "notebooks")
    args = parser.parse_args()
    for path in args.notebooks or sorted((ROOT / "examples").glob("*.ipynb")):
        notebook, seconds = execute(path)
        print(to_markdown(notebook, args.out, path.stem, seconds), f"{seconds:.0f} s")


if __name__ == "__main__":
    main()
