"""`seal bench status` for knowledge benchmarks: the table of a run still going or killed, or of shards of
one run (the same config at different offsets, e.g. one per core), over the passages whose every episode
is done; read-only."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from seal.bench.knowledge import KnowledgeBenchConfig, conditions_of, samples
from seal.bench.knowledge_table import comparisons, summarise
from seal.config import load_config
from seal.runs import read_records


def _shard(out: str | Path) -> tuple[KnowledgeBenchConfig, list[dict]]:
    """A benchmark run's config and episodes, passages renumbered by their place in the split."""
    path = Path(out)
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"{path} is not a knowledge benchmark run (no config.yaml)")
    cfg = load_config(KnowledgeBenchConfig, path / "config.yaml")
    episodes = read_records(path / "metrics.jsonl", event="episode")
    return cfg, [{**e, "passages": [cfg.offset + i for i in e["passages"]]} for e in episodes]


def interim(*outs: str | Path) -> dict:
    """The table of one benchmark, or of shards of one (the same config at different `offset`s, run in
    parallel), still running or killed: over the passages whose every episode is done, so that every row
    averages the same passages; read-only."""
    shards = [_shard(out) for out in outs]
    cfg = shards[0][0]
    for out, (other, _) in zip(outs, shards):
        if dataclasses.replace(other, offset=cfg.offset, passages=cfg.passages) != cfg:
            raise ValueError(f"{out} is not a shard of {outs[0]}: their configs differ beyond offset and passages")
    if len(shards) > 1 and cfg.setting == "multi":
        raise ValueError("multi-passage runs are one update over all their passages and cannot be pooled")
    if len(shards) > 1 and "retrieval" in cfg.conditions:
        raise ValueError("retrieval searches only its own run's passages, so shards of it cannot be pooled")
    ranges = sorted((c.offset, c.offset + c.passages) for c, _ in shards)
    if any(end > start for (_, end), (start, _) in zip(ranges, ranges[1:])):
        raise ValueError(f"the runs' passages overlap: {ranges}")
    episodes = [e for _, eps in shards for e in eps]
    done = Counter((tuple(e["passages"]), e["condition"]) for e in episodes)
    complete = {idx for idx, _ in done if all(done[idx, c] >= samples(cfg, c) for c in conditions_of(cfg))}
    finished = [e for e in episodes if tuple(e["passages"]) in complete]
    return {"model": cfg.model.name, "setting": cfg.setting, "passages_done": sum(len(i) for i in complete),
            "passages": sum(c.passages for c, _ in shards), "k": cfg.k,
            "rows": summarise(finished, conditions_of(cfg)) if complete else [],
            "comparisons": comparisons(finished, cfg.conditions)}
