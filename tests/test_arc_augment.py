"""Augmentation transforms are exact inverses, and task generation is sound and deterministic."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_arc_grids import grids

from seal.domains.arc.augment import (
    AUGMENTATION_GROUPS,
    AntiTranspose,
    Chain,
    ColourPermutation,
    Flip,
    Identity,
    MirrorConcat,
    Rotate,
    Scale,
    Tile,
    Translate,
    Transpose,
    apply_to_task,
    augment_task,
    cap,
    dedup,
    drop_oversized,
    group_transforms,
    leave_k_out,
    permute_demonstrations,
)
from seal.domains.arc.grids import make_grid, shape
from seal.domains.arc.tasks import ArcTask, Example

FIXED = [
    Identity(),
    Rotate(1),
    Rotate(2),
    Rotate(3),
    Flip("horizontal"),
    Flip("vertical"),
    Transpose(),
    AntiTranspose(),
    Translate(2, 1),
    Scale(2, 2),
    Scale(3, 1),
    Scale(1, 2),
    Tile(2, 2),
    Tile(1, 3),
    MirrorConcat("horizontal"),
    MirrorConcat("vertical"),
    Chain((Rotate(1), Scale(2, 2))),
    Chain((Transpose(), Flip("vertical"), Tile(2, 1))),
    ColourPermutation((0, 9, 8, 7, 6, 5, 4, 3, 2, 1)),
]
ALL_TRANSFORMS = FIXED + [t for g in AUGMENTATION_GROUPS for t in group_transforms(g, random.Random(0))]


@settings(max_examples=150)
@given(grid=grids(max_side=10))
def test_inverse_undoes_forward(grid):
    for transform in ALL_TRANSFORMS:
        out = transform.forward(grid)
        assert make_grid(out) == out, transform  # still a valid grid at these sizes
        assert transform.inverse(out) == grid, transform


@given(grid=grids(max_side=30))
def test_geometric_transforms_at_full_size(grid):
    for transform in (Rotate(1), Rotate(3), Transpose(), AntiTranspose(), Flip("vertical")):
        assert transform.inverse(transform.forward(grid)) == grid


def test_transforms_on_a_small_grid():
    g = ((1, 2), (3, 4))
    assert Rotate(1).forward(g) == ((3, 1), (4, 2))
    assert Flip("horizontal").forward(g) == ((2, 1), (4, 3))
    assert AntiTranspose().forward(g) == ((4, 2), (3, 1))
    assert Translate(1, 1).forward(g) == ((0, 0, 0), (0, 1, 2), (0, 3, 4))
    assert Scale(1, 2).forward(g) == ((1, 1, 2, 2), (3, 3, 4, 4))
    assert Tile(1, 2).forward(g) == ((1, 2, 1, 2), (3, 4, 3, 4))
    assert MirrorConcat("vertical").forward(g) == ((1, 2), (3, 4), (3, 4), (1, 2))


@given(st.randoms(use_true_random=False), grids(max_side=6))
def test_colour_permutation_fixes_background(rng, grid):
    perm = ColourPermutation.random(rng)
    assert perm.mapping[0] == 0
    out = perm.forward(grid)
    assert all((a == 0) == (b == 0) for ra, rb in zip(grid, out) for a, b in zip(ra, rb))
    assert perm.inverse(out) == grid


@pytest.mark.parametrize("mapping", [(1, 0, 2, 3, 4, 5, 6, 7, 8, 9), (0, 1, 1, 3, 4, 5, 6, 7, 8, 9), (0, 1, 2)])
def test_colour_permutation_rejects_bad_mappings(mapping):
    with pytest.raises(ValueError):
        ColourPermutation(mapping)


@st.composite
def tasks(draw, min_train=1, max_train=6):
    """Random tasks with few colours, so that duplicate grids and symmetric grids do occur."""
    n = draw(st.integers(min_train, max_train))
    side = draw(st.integers(1, 5))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))

    def grid():
        h, w = rng.randint(1, side), rng.randint(1, side)
        return tuple(tuple(rng.randrange(3) for _ in range(w)) for _ in range(h))

    train = tuple(Example(grid(), grid()) for _ in range(n))
    return ArcTask("t", train, (grid(),), (grid(),) if draw(st.booleans()) else None)


@given(tasks())
def test_leave_out_counts(task):
    n = len(task.train)
    loo = leave_k_out(task, 1)
    assert len(loo) == (n if n >= 2 else 0)
    assert len(leave_k_out(task, 2)) == (math.comb(n, 2) if n >= 3 else 0)
    for held, t in enumerate(loo):
        assert len(t.train) == n - 1
        assert (t.test_inputs, t.test_outputs) == ((task.train[held].input,), (task.train[held].output,))
        assert task.train[held] not in t.train or task.train.count(task.train[held]) > 1


@given(tasks(), st.randoms(use_true_random=False))
def test_dedup_ignores_order_and_copies(task, rng):
    order = list(range(len(task.train)))
    rng.shuffle(order)
    shuffled = permute_demonstrations(task, order)
    other = apply_to_task(task, Translate(1, 0))
    assert dedup([task, shuffled, other, task]) == [task, other]


def test_permute_demonstrations_checks_order():
    task = ArcTask("t", (Example(((1,),), ((2,),)),), ((((1,),)),))
    with pytest.raises(ValueError):
        permute_demonstrations(task, [1])


@given(st.lists(st.integers(), max_size=12), st.integers(0, 12), st.integers(0, 100))
def test_cap(items, limit, seed):
    capped = cap(items, limit, random.Random(seed))
    assert len(capped) == min(limit, len(items))
    assert cap(items, limit) == items[:limit]
    assert capped == cap(items, limit, random.Random(seed))
    assert all(x in items for x in capped)


def test_drop_oversized():
    small = ArcTask("s", (Example(((1,),), ((1,),)),), (((1,),),))
    big = apply_to_task(small, Scale(31, 1))
    assert drop_oversized([small, big]) == [small]
    assert drop_oversized([small, big], max_side=40) == [small, big]


@settings(max_examples=10)
@given(tasks(min_train=2, max_train=4), st.sets(st.sampled_from(AUGMENTATION_GROUPS)), st.integers(0, 2**16))
def test_augment_task_is_deterministic_and_bounded(task, groups, seed):
    kwargs = dict(max_examples=25, max_side=12, leave_out=(1, 2), colour_permutations=1)
    out = augment_task(task, groups, seed, **kwargs)
    assert out == augment_task(task, sorted(groups, reverse=True), seed, **kwargs)
    assert 1 <= len(out) <= 25
    assert len(dedup(out)) == len(out)
    assert all(max(shape(g)) <= 12 for t in out for ex in t.train for g in (ex.input, ex.output))


def test_groups_add_examples():
    task = ArcTask(
        "t",
        tuple(Example(((i, 1, 0), (0, 2, 3)), ((3, i),)) for i in range(1, 4)),
        (((5, 5, 0),),),
    )
    plain = augment_task(task, [], seed=0)
    assert len(plain) == 3  # leave-one-out only
    sizes = [len(augment_task(task, [g], seed=0)) for g in AUGMENTATION_GROUPS]
    assert all(size > len(plain) for size in sizes)
    assert len(augment_task(task, AUGMENTATION_GROUPS, seed=0)) > max(sizes)
    with pytest.raises(ValueError, match="unknown"):
        augment_task(task, ["bogus"], seed=0)
