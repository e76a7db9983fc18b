"""Where a study's time goes: the per-step table of a finished study folder, and its claims.

Reads `STUDY/steps.json` (every step's wall seconds, written as the study runs) and groups the
steps by kind (training per member, each analysis per model), writes a JSON table with the
machine's CPU flags and load average, and prints it largest first. With `--claims`, the
claims table of the study's report is added (id, verdict, measured), so two studies (before and
after a change) can be compared side by side.

Usage:
    python benchmarks/study_profile.py STUDY [--label NAME] [--wall SECONDS] [--claims]
        [--out benchmarks/results/study_profile_NAME.json]
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precision_bench import machine  # noqa: E402


def step_table(steps: dict) -> dict:
    """Seconds per step, and summed per kind (`train`, `hessian`, ...)."""
    per_step = {name: round(s.get("seconds", 0.0), 2) for name, s in steps.items()}
    per_kind: dict[str, float] = defaultdict(float)
    for name, seconds in per_step.items():
        per_kind[name.split("/")[0]] += seconds
    return {
        "total_step_seconds": round(sum(per_step.values()), 1),
        "per_kind": dict(
            sorted(((k, round(v, 1)) for k, v in per_kind.items()), key=lambda kv: -kv[1])
        ),  # fmt: skip
        "per_step": dict(sorted(per_step.items(), key=lambda kv: -kv[1])),
    }


def claims(report: Path) -> list[dict]:
    """(id, verdict, measured, note) of every row of a report's claims table; the note is the
    spread over seeds, or why a claim could not be read (e.g. "not testable at this scale: ...")."""
    page = report.read_text()
    cell = r"<td>(.*?)</td>"
    row = (
        rf"<tr><td>(C\d+)</td><td>.*?</td><td>.*?</td>{cell}"
        r"<td><span class=\w+>(.*?)</span>(?:<br><small>(.*?)</small>)?</td>"
    )
    return [
        {"id": c, "verdict": html.unescape(v), "measured": html.unescape(m),
         "note": html.unescape(n)}
        for c, m, v, n in re.findall(row, page, re.S)
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--label", default="study")
    parser.add_argument("--wall", type=float, default=None, help="the command's wall seconds")
    parser.add_argument("--claims", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    steps = json.loads((args.study / "steps.json").read_text())
    report = {"label": args.label, "machine": machine(), "wall_seconds": args.wall}
    report.update(step_table(steps))
    if args.claims:
        report["claims"] = claims(args.study / "report.html")
    report["machine"]["load_average_end"] = os.getloadavg()
    out = args.out or Path(f"benchmarks/results/study_profile_{args.label}.json")
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    for kind, seconds in report["per_kind"].items():
        print(f"{kind:>16} {seconds:8.1f} s")
    print(out)


if __name__ == "__main__":
    main()
