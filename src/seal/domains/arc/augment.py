"""Augmentations for ARC test-time training, grouped as in SEAL's self-edits.

Every grid transform is a small frozen dataclass with ``forward(grid)`` and
``inverse(grid)``: training data is generated in transformed space, and a
prediction made in transformed space is mapped back with ``inverse``.
``inverse(forward(g)) == g`` for every grid ``g``. On grids that ``forward``
did not produce (a model's malformed answer) ``inverse`` is best-effort and may
return an invalid grid; validate with ``grids.make_grid`` before trusting it.

Transforms do not enforce the 30-cell side limit (upscaling a 20x20 grid gives
40x40); ``drop_oversized`` removes such tasks from generated data.

The self-edit chooses among four groups (``AUGMENTATION_GROUPS``):
``basic`` (rotations, flips, transposes, translation), ``size`` (resolution,
height and width scaling), ``chain`` (a geometric transform followed by
upscaling) and ``repeat`` (tiling and mirror concatenation).
``augment_task`` turns one task into deterministic training tasks for a seed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from seal.domains.arc.grids import MAX_SIDE, NUM_COLOURS, Grid, shape
from seal.domains.arc.tasks import ArcTask, Example

Axis = Literal["horizontal", "vertical"]
T = TypeVar("T")


class Transform(Protocol):
    """An invertible grid transform."""

    def forward(self, grid: Grid) -> Grid: ...

    def inverse(self, grid: Grid) -> Grid: ...


def _rotate_clockwise(grid: Grid) -> Grid:
    return tuple(zip(*grid[::-1]))


@dataclass(frozen=True)
class Identity:
    """No change; lets un-augmented tasks flow through the same code path."""

    def forward(self, grid: Grid) -> Grid:
        return grid

    def inverse(self, grid: Grid) -> Grid:
        return grid


@dataclass(frozen=True)
class Rotate:
    """Rotate clockwise by ``quarter_turns`` x 90 degrees (1, 2 or 3)."""

    quarter_turns: int

    def __post_init__(self) -> None:
        if self.quarter_turns not in (1, 2, 3):
            raise ValueError(f"quarter_turns must be 1, 2 or 3, not {self.quarter_turns}")

    def forward(self, grid: Grid) -> Grid:
        for _ in range(self.quarter_turns):
            grid = _rotate_clockwise(grid)
        return grid

    def inverse(self, grid: Grid) -> Grid:
        return Rotate(4 - self.quarter_turns).forward(grid)


@dataclass(frozen=True)
class Flip:
    """Mirror left-right (``horizontal``) or top-bottom (``vertical``); its own inverse."""

    axis: Axis

    def forward(self, grid: Grid) -> Grid:
        return tuple(row[::-1] for row in grid) if self.axis == "horizontal" else grid[::-1]

    def inverse(self, grid: Grid) -> Grid:
        return self.forward(grid)


@dataclass(frozen=True)
class Transpose:
    """Reflect across the main diagonal; its own inverse."""

    def forward(self, grid: Grid) -> Grid:
        return tuple(zip(*grid))

    def inverse(self, grid: Grid) -> Grid:
        return self.forward(grid)


@dataclass(frozen=True)
class AntiTranspose:
    """Reflect across the anti-diagonal; its own inverse."""

    def forward(self, grid: Grid) -> Grid:
        return tuple(row[::-1] for row in zip(*grid))[::-1]

    def inverse(self, grid: Grid) -> Grid:
        return self.forward(grid)


@dataclass(frozen=True)
class Translate:
    """Shift content down by ``dy`` and right by ``dx``, filling the gap with ``fill``.

    The grid grows by (dy, dx) rather than losing the cells pushed past the
    edge, so the inverse is an exact crop.
    """

    dy: int
    dx: int
    fill: int = 0

    def __post_init__(self) -> None:
        if self.dy < 0 or self.dx < 0:
            raise ValueError("translation offsets must be non-negative")

    def forward(self, grid: Grid) -> Grid:
        width = shape(grid)[1] + self.dx
        pad = (self.fill,) * self.dx
        return ((self.fill,) * width,) * self.dy + tuple(pad + row for row in grid)

    def inverse(self, grid: Grid) -> Grid:
        return tuple(row[self.dx :] for row in grid[self.dy :])


@dataclass(frozen=True)
class Scale:
    """Repeat each row ``height`` times and each cell ``width`` times; inverse subsamples.

    Equal factors are resolution scaling; one factor of 1 is height or width scaling.
    """

    height: int
    width: int

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError("scale factors must be positive")

    def forward(self, grid: Grid) -> Grid:
        return tuple(
            tuple(cell for cell in row for _ in range(self.width)) for row in grid for _ in range(self.height)
        )

    def inverse(self, grid: Grid) -> Grid:
        return tuple(row[:: self.width] for row in grid[:: self.height])


@dataclass(frozen=True)
class Tile:
    """Repeat the whole grid ``rows`` x ``cols`` times; inverse takes the top-left tile."""

    rows: int
    cols: int

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError("tile repeats must be positive")

    def forward(self, grid: Grid) -> Grid:
        return tuple(row * self.cols for row in grid) * self.rows

    def inverse(self, grid: Grid) -> Grid:
        height, width = shape(grid)
        return tuple(row[: width // self.cols] for row in grid[: height // self.rows])


@dataclass(frozen=True)
class MirrorConcat:
    """Join the grid with its mirror image, to the right (``horizontal``) or below (``vertical``).

    The inverse takes the first half.
    """

    axis: Axis

    def forward(self, grid: Grid) -> Grid:
        return tuple(row + row[::-1] for row in grid) if self.axis == "horizontal" else grid + grid[::-1]

    def inverse(self, grid: Grid) -> Grid:
        height, width = shape(grid)
        if self.axis == "horizontal":
            return tuple(row[: width // 2] for row in grid)
        return grid[: height // 2]


@dataclass(frozen=True)
class ColourPermutation:
    """Recolour cell ``c`` as ``mapping[c]``; background 0 always maps to itself."""

    mapping: tuple[int, ...]

    def __post_init__(self) -> None:
        if sorted(self.mapping) != list(range(NUM_COLOURS)) or self.mapping[0] != 0:
            raise ValueError(f"mapping must permute 0..{NUM_COLOURS - 1} and fix 0, got {self.mapping}")

    @classmethod
    def random(cls, rng: random.Random) -> ColourPermutation:
        """A uniformly random permutation of colours 1..9."""
        rest = list(range(1, NUM_COLOURS))
        rng.shuffle(rest)
        return cls((0, *rest))

    def forward(self, grid: Grid) -> Grid:
        return tuple(tuple(self.mapping[cell] for cell in row) for row in grid)

    def inverse(self, grid: Grid) -> Grid:
        back = [0] * NUM_COLOURS
        for colour, image in enumerate(self.mapping):
            back[image] = colour
        return ColourPermutation(tuple(back)).forward(grid)


@dataclass(frozen=True)
class Chain:
    """Apply ``steps`` in order; the inverse undoes them in reverse order."""

    steps: tuple[Transform, ...]

    def forward(self, grid: Grid) -> Grid:
        for step in self.steps:
            grid = step.forward(grid)
        return grid

    def inverse(self, grid: Grid) -> Grid:
        for step in reversed(self.steps):
            grid = step.inverse(grid)
        return grid


# --- task-level helpers -------------------------------------------------------


def apply_to_task(task: ArcTask, transform: Transform) -> ArcTask:
    """Apply ``transform.forward`` to every grid of ``task`` (demonstrations and tests)."""
    f = transform.forward
    return ArcTask(
        task.id,
        tuple(Example(f(ex.input), f(ex.output)) for ex in task.train),
        tuple(f(g) for g in task.test_inputs),
        None if task.test_outputs is None else tuple(f(g) for g in task.test_outputs),
    )


def permute_demonstrations(task: ArcTask, order: Sequence[int]) -> ArcTask:
    """Reorder the demonstrations: position ``i`` gets demonstration ``order[i]``."""
    if sorted(order) != list(range(len(task.train))):
        raise ValueError(f"order {list(order)} is not a permutation of {len(task.train)} demonstrations")
    return ArcTask(task.id, tuple(task.train[i] for i in order), task.test_inputs, task.test_outputs)


def leave_k_out(task: ArcTask, k: int) -> list[ArcTask]:
    """Tasks made from the demonstrations alone: each k-subset is held out as the tests.

    Returns C(n, k) tasks with n-k demonstrations each, or ``[]`` when fewer
    than one demonstration would remain. The real test inputs are not used, so
    the result is valid training data even when their answers are unknown.
    """
    n = len(task.train)
    if k < 1 or n - k < 1:
        return []
    out = []
    for held in itertools.combinations(range(n), k):
        kept = tuple(ex for i, ex in enumerate(task.train) if i not in held)
        tests = [task.train[i] for i in held]
        out.append(ArcTask(task.id, kept, tuple(ex.input for ex in tests), tuple(ex.output for ex in tests)))
    return out


def _content_key(task: ArcTask) -> tuple:
    """What makes two tasks the same: their grids, ignoring id and demonstration order."""
    return (tuple(sorted((ex.input, ex.output) for ex in task.train)), task.test_inputs, task.test_outputs)


def dedup(tasks: Iterable[ArcTask]) -> list[ArcTask]:
    """Drop tasks whose grids repeat an earlier task's (demonstration order ignored)."""
    seen: set[tuple] = set()
    out = []
    for task in tasks:
        key = _content_key(task)
        if key not in seen:
            seen.add(key)
            out.append(task)
    return out


def cap(items: Sequence[T], max_examples: int, rng: random.Random | None = None) -> list[T]:
    """At most ``max_examples`` items: a random subset (in original order) with ``rng``, else the first ones."""
    if len(items) <= max_examples:
        return list(items)
    if rng is None:
        return list(items[:max_examples])
    keep = sorted(rng.sample(range(len(items)), max_examples))
    return [items[i] for i in keep]


def _grids(task: ArcTask) -> Iterable[Grid]:
    for ex in task.train:
        yield ex.input
        yield ex.output
    yield from task.test_inputs
    yield from task.test_outputs or ()


def drop_oversized(tasks: Iterable[ArcTask], max_side: int = MAX_SIDE) -> list[ArcTask]:
    """Keep only tasks whose every grid has both sides at most ``max_side``."""
    return [t for t in tasks if all(max(shape(g)) <= max_side for g in _grids(t))]


# --- SEAL's augmentation groups ----------------------------------------------

AUGMENTATION_GROUPS = ("basic", "size", "chain", "repeat")

_GEOMETRIC: tuple[Transform, ...] = (
    Rotate(1),
    Rotate(2),
    Rotate(3),
    Flip("horizontal"),
    Flip("vertical"),
    Transpose(),
)


def group_transforms(group: str, rng: random.Random) -> tuple[Transform, ...]:
    """The transforms of one augmentation group; ``rng`` draws the translation offset."""
    if group == "basic":
        return (*_GEOMETRIC, AntiTranspose(), Translate(rng.randint(1, 3), rng.randint(1, 3)))
    if group == "size":
        return (Scale(2, 2), Scale(2, 1), Scale(1, 2))
    if group == "chain":
        return tuple(Chain((t, Scale(2, 2))) for t in _GEOMETRIC)
    if group == "repeat":
        return (Tile(1, 2), Tile(2, 1), Tile(2, 2), MirrorConcat("horizontal"), MirrorConcat("vertical"))
    raise ValueError(f"unknown augmentation group {group!r}; expected one of {AUGMENTATION_GROUPS}")


def augment_task(
    task: ArcTask,
    groups: Iterable[str],
    seed: int,
    *,
    max_examples: int | None = None,
    max_side: int = MAX_SIDE,
    leave_out: Sequence[int] = (1,),
    colour_permutations: int = 0,
    shuffle_demonstrations: bool = True,
) -> list[ArcTask]:
    """Test-time training tasks for ``task``, deterministic for a given ``seed``.

    Builds leave-k-out tasks from the demonstrations (for each k in
    ``leave_out``), applies the identity and every transform of the enabled
    ``groups`` to each, adds ``colour_permutations`` randomly recoloured copies
    of every result, shuffles each task's demonstration order, then drops
    tasks with a side over ``max_side``, removes duplicates and keeps at most
    ``max_examples`` (a seeded random subset).
    """
    enabled = set(groups)
    unknown = enabled - set(AUGMENTATION_GROUPS)
    if unknown:
        raise ValueError(f"unknown augmentation groups {sorted(unknown)}; expected {AUGMENTATION_GROUPS}")
    rng = random.Random(seed)
    transforms: list[Transform] = [Identity()]
    for group in AUGMENTATION_GROUPS:  # canonical order: the result must not depend on how groups are listed
        if group in enabled:
            transforms.extend(group_transforms(group, rng))
    generated = []
    for base in (t for k in leave_out for t in leave_k_out(task, k)):
        for transform in transforms:
            moved = apply_to_task(base, transform)
            recoloured = (apply_to_task(moved, ColourPermutation.random(rng)) for _ in range(colour_permutations))
            for t in (moved, *recoloured):
                if shuffle_demonstrations:
                    t = permute_demonstrations(t, rng.sample(range(len(t.train)), len(t.train)))
                generated.append(t)
    tasks = dedup(drop_oversized(generated, max_side))
    return tasks if max_examples is None else cap(tasks, max_examples, rng)
