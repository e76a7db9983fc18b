"""Check that a refactor changed no number: run a tiny seeded study and compare its Results.

    python benchmarks/refactor_equivalence.py --out /tmp/after
    python benchmarks/refactor_equivalence.py --compare /tmp/before /tmp/after

The first form runs a two-model study (vit_nano, resnet_nano; one epoch on 2% of
fashion-mnist-mini; one small batch per analysis) on one thread, so two runs of the same code give
the same bits. The second form compares every Result JSON of two such studies, provenance
(times, hosts, versions) aside, and every training metric, and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

MODELS = ["vit_nano", "resnet_nano"]
# Timings, hosts and versions differ between any two runs; they are not results.
VOLATILE = {
    "provenance",
    "wall_seconds",
    "seconds",
    "time",
    "created",
    "host",
    "train_seconds",
    "images_per_second",
}


def run_tiny_study(out: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from vitlens.analysis.runner import ANALYSES
    from vitlens.study import Study, StudyPlan

    budget = {name: [1, 16] for name in ANALYSES}
    budget["trajectory"] = [None, None]
    plan = StudyPlan.from_preset(
        "quick", models=MODELS, epochs=1, fraction=0.02, budget=budget, landscape_steps=3
    )
    Study.create(out, plan, quiet=True).run()


def _numbers(value, path=""):
    """Flatten a JSON value into (path, leaf) pairs, leaving out volatile keys."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in VOLATILE:
                yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{path}[{i}]")
    else:
        yield path, value


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _metrics(folder: Path) -> dict[str, list]:
    rows = {}
    for path in sorted(folder.glob("runs/*/metrics.jsonl")):
        lines = path.read_text().splitlines()
        rows[str(path.relative_to(folder))] = [json.loads(line) for line in lines if line]
    return rows


def compare(before: Path, after: Path) -> int:
    names = sorted(p.relative_to(before) for p in before.glob("results/**/*.json"))
    differences, compared = [], 0
    for name in names:
        if not (after / name).exists():
            differences.append(f"{name}: missing after")
            continue
        # Paths inside Results name their own study folder: compare them relative to it.
        old = dict(_numbers(json.loads((before / name).read_text().replace(str(before), "."))))
        new = dict(_numbers(json.loads((after / name).read_text().replace(str(after), "."))))
        for key in sorted(set(old) | set(new)):
            compared += 1
            if key not in new or key not in old or not _same(old[key], new[key]):
                differences.append(f"{name}{key}: {old.get(key)!r} -> {new.get(key)!r}")
    old_rows, new_rows = _metrics(before), _metrics(after)
    for run, rows in old_rows.items():
        old = dict(_numbers(rows))
        new = dict(_numbers(new_rows.get(run, [])))
        compared += len(old)
        differences += [
            f"{run}{k}: {old[k]!r} -> {new.get(k)!r}"
            for k in old
            if k not in new or not _same(old[k], new[k])
        ]
    print(
        f"{len(names)} Results and {len(old_rows)} runs, {compared} values compared, "
        f"{len(differences)} differ"
    )
    for line in differences[:40]:
        print("  ", line)
    return 1 if differences else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="run the tiny study into this new folder")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.out:
        run_tiny_study(args.out)
    if args.compare:
        return compare(*args.compare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
