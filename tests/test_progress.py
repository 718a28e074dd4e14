"""Progress bars keep the counts and the ETA readable on narrow terminals."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress

from synthloop.progress import _columns


@pytest.mark.parametrize("width", [60, 80, 100, 160])
@pytest.mark.parametrize("total", [2_000, 1_000_000])
def test_counts_and_eta_are_never_cut_off(width: int, total: int) -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None)
    progress = Progress(*_columns(width, total), console=console)
    task = progress.add_task("replay support-assistant-v2", total=total,
                             extra="errors=3  cached=1,204")
    progress.update(task, completed=total - 117)
    console.print(progress.make_tasks_table(progress.tasks))
    line = buf.getvalue().rstrip("\n")
    assert "\n" not in line  # one line
    assert f"{total - 117}/{total}" in line
    assert ("eta -:--:--" if width >= 80 else "-:--:--") in line  # the ETA whole
    if width >= 100:
        assert "replay support-assistant-v2" in line and "cached=1,204" in line
