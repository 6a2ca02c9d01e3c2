"""`seal bench status` for knowledge benchmarks: the table of a run still going or killed, or of shards of
one run (the same config at different offsets, e.g. one per core), over the passages whose every episode
is done; read-only. Every episode stores its graded answers, so the table can also be recomputed under
another grader (`regrade`): runs made under different graders are then compared on one measure."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from pathlib import Path

from seal.bench.knowledge import KnowledgeBenchConfig, conditions_of, samples
from seal.bench.knowledge_table import comparisons, summarise
from seal.config import load_config
from seal.domains.knowledge.answers import credit, summary
from seal.runs import read_records


def _shard(out: str | Path) -> tuple[KnowledgeBenchConfig, list[dict]]:
    """A benchmark run's config and episodes, passages renumbered by their place in the split."""
    path = Path(out)
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"{path} is not a knowledge benchmark run (no config.yaml)")
    cfg = load_config(KnowledgeBenchConfig, path / "config.yaml")
    episodes = read_records(path / "metrics.jsonl", event="episode")
    return cfg, [{**e, "passages": [cfg.offset + i for i in e["passages"]]} for e in episodes]


def regrade(episode: dict, grader) -> dict:
    """The episode with each passage's accuracy recomputed from its stored answers under `grader` (the same
    credit rule as live grading: a generic answer is credited for none of its questions), and with it the
    unrecited accuracy; F1, exact match, recitation and identical rates do not depend on the grader and are kept."""
    if "scores" not in episode:  # a failed episode: nothing was answered
        return episode
    scores = []
    for score in episode["scores"]:
        answers = score["answers"]
        judged = [bool(a["answer"]) and bool(grader(a["question"], a["gold"], a["answer"])) for a in answers]
        credited = credit(judged, [a["answer"] for a in answers], [a["gold"] for a in answers])
        answers = [{**a, "judged": j, "correct": c} for a, j, c in zip(answers, judged, credited)]
        regraded = {"accuracy": sum(credited) / len(answers)}
        if "unrecited" in score:  # runs from before the rate have no recitation flags to compute it from
            regraded["unrecited"] = summary(answers)["unrecited"]
        scores.append({**score, **regraded, "answers": answers})
    return {**episode, "scores": scores}


def _complete(cfg: KnowledgeBenchConfig, episodes: list[dict]) -> set[tuple[int, ...]]:
    """The passages (index tuples) whose every planned episode is in `episodes`."""
    done = Counter((tuple(e["passages"]), e["condition"]) for e in episodes)
    return {idx for idx, _ in done if all(done[idx, c] >= samples(cfg, c) for c in conditions_of(cfg))}


def interim(*outs: str | Path, grader=None) -> dict:
    """The table of one benchmark, or of shards of one (the same config at different `offset`s, run in
    parallel), still running or killed: over the passages whose every episode is done, so that every row
    averages the same passages; read-only. With `grader`, every stored answer is graded again by it."""
    shards = [_shard(out) for out in outs]
    cfg = shards[0][0]
    for out, (other, _) in zip(outs, shards):
        if dataclasses.replace(other, offset=cfg.offset, passages=cfg.passages) != cfg:
            raise ValueError(f"{out} is not a shard of {outs[0]}: their configs differ beyond offset and passages")
    if len(shards) > 1 and cfg.setting == "multi":
        raise ValueError("multi-passage runs are one update over all their passages and cannot be pooled")
    if len(shards) > 1 and "retrieval" in cfg.conditions:
        raise ValueError("retrieval searches only its own run's passages, so shards of it cannot be pooled")
    # A killed run continued by a shard at the passage where it stopped: the killed run planned (and may have
    # begun) passages the shard finished. Each passage counts from the run that finished it; two runs that both
    # finished one are not shards of one benchmark.
    finished_by = [_complete(cfg, eps) for _, eps in shards]
    for (a, first), (b, second) in itertools.combinations(zip(outs, finished_by), 2):
        if first & second:
            both = sorted(i for passages in first & second for i in passages)
            raise ValueError(f"the runs' passages overlap: {a} and {b} both finished passage(s) {both}")
    planned = set().union(*(range(c.offset, c.offset + c.passages) for c, _ in shards))
    complete = set().union(*finished_by)
    finished = [e for (_, eps), mine in zip(shards, finished_by) for e in eps if tuple(e["passages"]) in mine]
    if grader is not None:
        finished = [regrade(e, grader) for e in finished]
    return {"model": cfg.model.name, "setting": cfg.setting, "passages_done": sum(len(i) for i in complete),
            "passages": len(planned), "k": cfg.k,
            "rows": summarise(finished, conditions_of(cfg)) if complete else [],
            "comparisons": comparisons(finished, cfg.conditions)}
