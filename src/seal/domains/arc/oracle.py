"""The oracle configuration: hand-picked self-edits tried in order until one of them solves the task.

This is how the paper chose its ARC subset (tasks that optimal TTT settings solve) and its "oracle"
row. Tries stop at the first success, so the oracle row of `seal bench arc` replays exactly the
try that solved each task in the filter (same seeds, same order).
"""

from __future__ import annotations

import time

from seal.domains.arc.domain import ArcDomain
from seal.domains.arc.selfedit import ArcSelfEdit, Rejection, parse_self_edit, render_self_edit
from seal.domains.arc.tasks import ArcTask
from seal.domains.base import SelfEditError
from seal.episode import adapt_and_evaluate
from seal.domains.base import UpdateError

# Basic views first: with the example cap, "all groups" keeps few examples in the task's own frame.
ORACLE_EDITS = [
    render_self_edit(ArcSelfEdit(True, False, False, False, "output", 1e-3, 3)),
    render_self_edit(ArcSelfEdit(True, True, True, True, "output", 1e-3, 3)),
]


def check_oracle(edits: list[str]) -> None:
    """Fail fast on an oracle list that is empty or holds a self-edit the parser rejects."""
    if not edits:
        raise ValueError("the oracle needs at least one self-edit")
    for text in edits:
        parsed = parse_self_edit(text)
        if isinstance(parsed, Rejection):
            raise ValueError(f"oracle self-edit {text!r} is unusable: {parsed.reason}")


def oracle_tries(model, tokenizer, domain: ArcDomain, task: ArcTask, edits: list[str], inner) -> dict:
    """Train and evaluate each oracle self-edit in turn until one solves `task`; the record of every try."""
    tries = []
    for n, text in enumerate(edits):
        start = time.perf_counter()
        record = {"edit": n, "score": None}
        try:
            outcome = adapt_and_evaluate(model, tokenizer, domain, task, domain.parse(task, text), inner)
            record.update(score=outcome.score.value, details=outcome.score.details, steps=outcome.report.steps)
        except (SelfEditError, UpdateError) as e:
            record["error"] = str(e)
        record["seconds"] = time.perf_counter() - start
        tries.append(record)
        if record["score"] == 1.0:
            break
    solved = tries[-1]["score"] == 1.0
    return {"score": float(solved), "solved_by": tries[-1]["edit"] if solved else None, "tries": tries}
