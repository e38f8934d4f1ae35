"""Progress bars for long work (replay, export, batch): count, rate and ETA on stderr, and only
for a person at a terminal: with --quiet or when stderr is not a TTY nothing is drawn (and
rich.progress is not even imported), so scripts and tests read clean output."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def shown(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def stderr_console(quiet: bool) -> Console:
    """A console on stderr that stays silent unless a person is watching."""
    from rich.console import Console

    return Console(stderr=True, quiet=not shown(quiet))


def columns() -> list[Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("-/s" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")

    return [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]


@contextmanager
def progress(
    description: str, total: Callable[[], int | None], *, quiet: bool
) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`. `total` is only called when the bar is shown (it may query)."""
    if not shown(quiet):
        yield lambda n: None
        return
    from rich.progress import Progress

    with Progress(*columns(), console=stderr_console(quiet), transient=False) as bar:
        task = bar.add_task(description, total=total())
        yield lambda n: bar.advance(task, n)
