"""Augmented inference: answer a task under several geometric views, map answers back, vote, two attempts.

A model's answer to a rotated (flipped, transposed) copy of a task is a second opinion on the original
task once it is rotated back. Every view's answer to every test input is mapped back with the view's
inverse; answers that are not valid grids cast no vote; the most voted grids (ties: the view listed
first wins) are the attempts. A task is solved only when every test output is among its attempts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from seal.domains.arc.augment import AntiTranspose, Flip, Identity, Rotate, Transform, Transpose, apply_to_task
from seal.domains.arc.grids import Grid, GridFormat, grid_to_text, make_grid
from seal.domains.arc.tasks import ArcTask
from seal.domains.base import Score

VIEWS: dict[str, Transform] = {
    "identity": Identity(),
    "rot90": Rotate(1),
    "rot180": Rotate(2),
    "rot270": Rotate(3),
    "flip_h": Flip("horizontal"),
    "flip_v": Flip("vertical"),
    "transpose": Transpose(),
    "antitranspose": AntiTranspose(),
}

# answer(views) -> one reply per (view, test index): the model-facing part, stubbed in tests
Answer = Callable[[list[tuple[ArcTask, int]]], list[Grid | None]]

_LOG_FORMAT = GridFormat(row_sep="|")  # one-line grids in the run records


def vote(candidates: Sequence[Grid | None]) -> list[tuple[Grid, int]]:
    """Distinct valid grids with their vote counts, most votes first; ties keep first-seen order."""
    counts = Counter(g for g in candidates if g is not None)
    order = {g: i for i, g in reversed(list(enumerate(candidates))) if g is not None}
    return sorted(counts.items(), key=lambda item: (-item[1], order[item[0]]))


def _back(transform: Transform, grid: Grid | None) -> Grid | None:
    """A view's answer in the original task's frame, or None if it is not a valid grid there."""
    if grid is None:
        return None
    try:
        return make_grid(transform.inverse(grid))
    except ValueError:
        return None


def augmented_inference(task: ArcTask, views: Sequence[str], answer: Answer, attempts: int = 2) -> Score:
    """Solve `task` (value 1.0) or not (0.0); details record each test's votes, attempts and verdict."""
    if task.test_outputs is None:
        raise ValueError(f"task {task.id} has no test outputs to score against")
    unknown = sorted(set(views) - set(VIEWS))
    if unknown or not views:
        raise ValueError(f"unknown or no inference views {unknown}; choose from {', '.join(VIEWS)}")
    hidden = ArcTask(task.id, task.train, task.test_inputs)  # the answering side never sees the outputs
    transformed = [apply_to_task(hidden, VIEWS[v]) for v in views]
    jobs = [(view, i) for view in transformed for i in range(len(task.test_inputs))]
    replies = answer(jobs)
    details = []
    for i, gold in enumerate(task.test_outputs):
        back = [_back(VIEWS[v], replies[n * len(task.test_inputs) + i]) for n, v in enumerate(views)]
        ranked = vote(back)
        tried = [g for g, _ in ranked[:attempts]]
        details.append({
            "test": i,
            "correct": gold in tried,
            "attempts": [grid_to_text(g, _LOG_FORMAT) for g in tried],
            "votes": [{"grid": grid_to_text(g, _LOG_FORMAT), "count": c} for g, c in ranked],
            "unreadable": sum(g is None for g in back),
        })
    return Score(float(all(d["correct"] for d in details)), details)
