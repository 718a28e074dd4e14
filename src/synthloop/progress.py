"""Progress bars for long work (rich), quiet when stderr is not a terminal.

    with progress_bar(total=n, description="replay") as bar:
        bar.advance(1, errors=3, cached=10)

Extra keyword fields are shown after the bar (e.g. errors, cache hits). Set
`SYNTHLOOP_PROGRESS=1` to force bars on, `0` to force them off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text


class _RateColumn(ProgressColumn):
    """Items per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s")


def _enabled() -> bool:
    flag = os.environ.get("SYNTHLOOP_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return sys.stderr.isatty()


class Bar:
    def __init__(self, progress: Progress | None, task: Any) -> None:
        self._p = progress
        self._task = task
        self.fields: dict[str, Any] = {}

    def advance(self, n: float = 1, **fields: Any) -> None:
        self.fields.update(fields)
        if self._p is not None:
            extra = "  ".join(f"{k}={v}" for k, v in self.fields.items())
            self._p.update(self._task, advance=n, extra=extra)

    def set_total(self, total: float | None) -> None:
        if self._p is not None:
            self._p.update(self._task, total=total)


def _columns(width: int, total: float | None) -> list[ProgressColumn]:
    """Everything on a wide terminal; below 110 columns a short bar and no elapsed time. The
    counts and the ETA keep their full width at any size (an 80-column CI log, a split pane):
    the description and the counters after the ETA give way first."""
    wide = width >= 110
    digits = len(f"{int(total)}") if total else 1
    cols: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=40 if wide else 10),
        MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=2 * digits + 1)),
        TaskProgressColumn(),
        _RateColumn(),
    ]
    if wide:
        cols.append(TimeElapsedColumn())
    cols += [TextColumn("eta", table_column=Column(no_wrap=True, min_width=3)),
             TimeRemainingColumn(table_column=Column(no_wrap=True, min_width=7)),
             TextColumn("{task.fields[extra]}",
                        table_column=Column(no_wrap=True, overflow="ellipsis"))]
    return cols


@contextmanager
def progress_bar(total: float | None, description: str, *, enabled: bool | None = None) -> Iterator[Bar]:
    on = _enabled() if enabled is None else enabled
    if not on:
        yield Bar(None, None)
        return
    console = Console(stderr=True)
    progress = Progress(*_columns(console.width, total), console=console, transient=False)
    with progress:
        task = progress.add_task(description, total=total, extra="")
        yield Bar(progress, task)
