"""Results as tables: one tidy, long-format row per number (`Result.to_frame`,
`vitlens export`).

Columns: `model`, `dataset`, `analysis`, `block`, `kind`, `stage`, `depth`, `other`, `metric`,
`index`, `value`. A Result with a block list (`names`, or `names_a` for CKA) has its per-block
fields (lists as long as that list) spread over one row per block, labelled with the block's
kind, stage and depth; deeper lists and dicts become the `index` (`3`, `2.1`, `key`), and where an
inner list runs over a second block list (CKA's `names_b`) its block is the `other` column. Every
other number (scalars, per-minibatch lists) has an empty `block`. Strings and booleans are
metadata, not numbers, and are left out; `value` is written with `repr`, so reading the CSV back
gives the JSON's floats exactly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from vitlens.analysis.result import Result
from vitlens.errors import VitlensError

COLUMNS = (
    "model",
    "dataset",
    "analysis",
    "block",
    "kind",
    "stage",
    "depth",
    "other",
    "metric",
    "index",
    "value",
)


def _blocks(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """The key of the block list whose fields are laid out per block, and of a second one."""
    primary = "names" if "names" in data else "names_a" if "names_a" in data else None
    second = "names_b" if primary == "names_a" and "names_b" in data else None
    return primary, second


def _companions(key: str | None) -> set[str]:
    if key is None:
        return set()
    suffix = key[len("names") :]
    return {key, *(f"{c}{suffix}" for c in ("kinds", "stages", "depths"))}


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(index path, number) for every number inside `value`."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        yield path, value
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, str(i)))
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from _leaves(item, (*path, str(k)))


def rows(result: Result) -> list[dict[str, Any]]:
    """The Result's numbers, one dict per number with the keys of `COLUMNS`."""
    data = result.to_dict()
    prov = data.pop("provenance", {}) or {}
    data.pop("analysis", None), data.pop("schema", None)
    primary, second = _blocks(data)
    names = data.get(primary) or [] if primary else []
    others = data.get(second) or [] if second else []
    suffix = primary[len("names") :] if primary else ""
    label = {c: data.get(f"{c}{suffix}") or [] for c in ("kinds", "stages", "depths")}
    base = {"model": prov.get("model", ""), "dataset": prov.get("dataset", "")}
    base["analysis"] = result.analysis
    out = []
    for metric, value in data.items():
        if metric in _companions(primary) | _companions(second):
            continue
        axis = type(result).block_axes.get(metric, 0)
        per_block = axis is not None and _runs_over(value, axis, len(names)) if names else False
        for path, number in _leaves(value):
            row = dict.fromkeys(COLUMNS, "") | base | {"metric": metric, "value": number}
            if per_block:
                i, path = int(path[axis]), path[:axis] + path[axis + 1 :]
                row["block"] = names[i]
                for column, values in label.items():
                    row[column.rstrip("s")] = values[i] if i < len(values) else ""
                inner = value[i] if axis == 0 else None
                if others and path and isinstance(inner, list) and len(inner) == len(others):
                    row["other"] = others[int(path[0])]
            row["index"] = ".".join(path)
            out.append(row)
    return out


def _runs_over(value: Any, axis: int, n: int) -> bool:
    """Whether index `axis` of the nested list `value` has length `n` everywhere."""
    if not isinstance(value, list):
        return False
    if axis == 0:
        return len(value) == n
    return all(_runs_over(item, axis - 1, n) for item in value) and bool(value)


def to_frame(result: Result):
    """The Result as a pandas DataFrame in long format (pip install 'vitlens[pandas]')."""
    try:
        import pandas as pd
    except ImportError:
        raise VitlensError("Result.to_frame needs pandas: pip install 'vitlens[pandas]'") from None
    return pd.DataFrame(rows(result), columns=list(COLUMNS))


def to_csv_text(result: Result) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows(result):
        writer.writerow({**row, "value": repr(row["value"])})
    return buffer.getvalue()
