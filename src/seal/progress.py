"""Progress bars with ETA (rich), shared by every long-running command.

Rich draws nothing until the end when stderr is not a terminal (nohup, CI logs, `2> file`), which would
leave a run of hours silent. There the bars are drawn on a forced-terminal console every 30 seconds
instead, so `tail` on the log shows where a run is and its ETA.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
_LOG_REFRESH_SECONDS = 30


def progress_bar() -> Progress:
    live = console.is_terminal
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console if live else Console(stderr=True, force_terminal=True, no_color=True, width=120),
        transient=False,
        refresh_per_second=10 if live else 1 / _LOG_REFRESH_SECONDS,
        speed_estimate_period=3600,  # episodes take minutes: rich's 30 s window would never show an ETA
    )


@contextlib.contextmanager
def step_bar(description: str) -> Iterator[Callable[[int, int, float], None]]:
    """A training bar; yields the `on_step(step, total, loss)` callback the inner loop calls."""
    with progress_bar() as bar:
        task = bar.add_task(description, total=None, status="")

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, status=f"loss {loss:.3f}")

        yield on_step
