"""The one progress bar of vitlens (rich): description, bar, count, rate, elapsed time and ETA.

Used by training (with the running loss) and by every analysis; `--quiet` and ranks other than
rank 0 get a disabled bar, which prints nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from vitlens import distributed as dist


class _RateColumn(ProgressColumn):
    """Units per second (rich has only a bytes-per-second column)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = "" if task.speed is None else f"{task.speed:.2f} {self.unit}/s"
        return Text(speed, style="cyan")


def new_bar(enabled: bool, *, unit: str = "it", loss: bool = False) -> Progress:
    """A bar for `unit`s; with `loss`, each task shows its `loss` field."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(unit),
    ]
    if loss:
        columns.append(TextColumn("loss {task.fields[loss]:.4f}"))
    columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, disable=not (enabled and dist.is_main()))


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, enabled: bool, *, unit: str = "it"
) -> Iterator[Callable]:
    """One task on a new bar (rank 0 only); yields `advance(n=1)`."""
    bar = new_bar(enabled, unit=unit)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
