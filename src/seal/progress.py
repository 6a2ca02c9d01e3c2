"""Progress bars with ETA (rich), shared by every long-running command."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def step_bar(description: str) -> Iterator[Callable[[int, int, float], None]]:
    """A training bar; yields the `on_step(step, total, loss)` callback the inner loop calls."""
    with progress_bar() as bar:
        task = bar.add_task(description, total=None, status="")

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, status=f"loss {loss:.3f}")

        yield on_step
