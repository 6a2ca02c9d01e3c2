"""Augmented inference maps every view's answer back, votes, and counts a task solved within two attempts."""

import pytest
from test_arc_prompts import recolour_task

from seal.domains.arc.augment import Flip
from seal.domains.arc.grids import make_grid
from seal.domains.arc.inference import VIEWS, augmented_inference, vote
from seal.domains.arc.tasks import ArcTask, Example

G = make_grid
FLIP = Flip("horizontal")


def flip_task(tests=1) -> ArcTask:
    demos = [[[1, 2, 3], [4, 5, 6]], [[7, 0], [0, 8], [9, 9]]]
    inputs = [G([[1, 2], [3, 4], [5, 6]]), G([[7, 8, 9]])][:tests]
    return ArcTask("flip", tuple(Example(G(d), FLIP.forward(G(d))) for d in demos), tuple(inputs),
                   tuple(FLIP.forward(g) for g in inputs))


def recolour(grid):
    return tuple(tuple(2 if c == 1 else c for c in row) for row in grid)


def test_vote_orders_by_count_then_first_seen():
    a, b, c = G([[1]]), G([[2]]), G([[3]])
    assert vote([None, b, a, a, c, b, None]) == [(b, 2), (a, 2), (c, 1)]
    assert vote([None, None]) == []


def test_a_model_that_knows_the_rule_solves_under_every_view():
    seen = []

    def answer(jobs):
        seen.extend(jobs)
        assert all(view.test_outputs is None for view, _ in jobs)  # the answering side never sees the answer
        return [recolour(view.test_inputs[i]) for view, i in jobs]

    score = augmented_inference(recolour_task(), list(VIEWS), answer)
    assert score.value == 1.0 and len(seen) == 8
    (d,) = score.details
    assert d["correct"] and d["votes"] == [{"grid": "23|20", "count": 8}] and d["attempts"] == ["23|20"]


def test_inverse_mapping_and_two_attempts():
    """A model that always flips left-right in its own frame: right in the 4 views that commute with the flip,
    and the top-bottom flip (wrong) in the 4 that swap the axes; 4-4, identity first, so gold ranks first."""
    def answer(jobs):
        return [FLIP.forward(view.test_inputs[i]) for view, i in jobs]

    task = flip_task()
    score = augmented_inference(task, list(VIEWS), answer)
    (d,) = score.details
    assert [v["count"] for v in d["votes"]] == [4, 4]
    assert d["attempts"][0] == "21|43|65" and d["attempts"][1] == "56|34|12"
    assert score.value == 1.0
    # seen from the transposed view first, the wrong answer leads; one attempt then fails, two succeed
    order = ["transpose", "identity", "rot90", "rot180", "rot270", "flip_h", "flip_v", "antitranspose"]
    assert augmented_inference(task, order, answer, attempts=1).value == 0.0
    assert augmented_inference(task, order, answer, attempts=2).value == 1.0


def test_unreadable_answers_cast_no_vote_and_every_test_must_be_right():
    task = flip_task(tests=2)

    def answer(jobs):  # right on test 0, unreadable on test 1
        return [FLIP.forward(view.test_inputs[i]) if i == 0 else None for view, i in jobs]

    score = augmented_inference(task, ["identity", "rot180"], answer)
    assert [d["correct"] for d in score.details] == [True, False]
    assert score.details[1]["unreadable"] == 2 and score.details[1]["votes"] == []
    assert score.value == 0.0


def test_answers_that_do_not_invert_to_a_grid_cast_no_vote():
    def answer(jobs):
        return [((1, 2, 3),) * 40 for _ in jobs]  # 40 rows: invalid once mapped back

    score = augmented_inference(recolour_task(), ["identity"], answer)
    assert score.details[0]["unreadable"] == 1 and score.value == 0.0


def test_unknown_view_is_an_error():
    with pytest.raises(ValueError, match="views"):
        augmented_inference(recolour_task(), ["spin"], lambda jobs: [])
