"""One slice of a ReST-EM round, the plain path against the path seal takes: wall time to sample k self-edits
on each of the first `--passages` training passages, train a fresh LoRA on each and score it.

- `plain`: transformers' generation (`model.backend=hf`) and one peft adapter after another
  (`inner.parallel=1`), what a straightforward implementation does;
- `seal`: the default backend (`auto`: llama.cpp where `scripts/setup.sh --with-llamacpp` installed it, else
  hf) and the batched inner loop (`inner.parallel`, default 4).

Everything else is `seal train knowledge`'s default (self-edit, inner loop, answer protocol, seed). Each path
loads the model itself (in the time). The two backends draw samples differently, so their self-edits, and
with them the scores, differ: the mean score of each path is printed beside its time so that a fast path
that learns less shows. Runs the paths one after another in this process; on a machine shared with other
jobs the ratio moves with their load (the load average is printed).

    python benchmarks/restem_slice.py                   # 4 passages x 5 self-edits, the default model

The last line is JSON: seconds per path, `speedup` (plain / seal) and each path's hours for the paper's
round of 50 passages x 5 self-edits, extrapolated per episode.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections import Counter

from seal import backends, models
from seal.config import load_config
from seal.progress import progress_bar
from seal.rl.restem import ContextJob, local_episodes
from seal.train import TrainKnowledgeConfig, knowledge_domain, training_contexts

PAPER_EPISODES = 50 * 5  # the paper's ReST-EM round on knowledge incorporation


def run_path(name: str, cfg: TrainKnowledgeConfig, contexts: list) -> dict:
    restem = cfg.restem
    domain = knowledge_domain(cfg)
    start = time.perf_counter()
    model, tokenizer = models.load(restem.generator)
    engine = backends.for_model(model).name
    jobs = [ContextJob(1, i, None, list(range(restem.k))) for i in range(len(contexts))]
    records = []
    with progress_bar() as bar:
        task = bar.add_task(name, total=len(contexts) * restem.k, status="")
        for record in local_episodes(domain, contexts, restem, model, tokenizer, model, tokenizer)(jobs):
            records.append(record)
            if record["event"] == "episode":
                bar.update(task, advance=1, status=f"context {record['context']}")
    seconds = time.perf_counter() - start
    episode_records = [r for r in records if r["event"] == "episode"]
    scores = [r["score"] for r in episode_records if r["score"] is not None]
    errors = Counter(r["error"] or "no score, no error" for r in episode_records if r["score"] is None)
    episodes = len(contexts) * restem.k
    result = {"backend": engine, "parallel": restem.inner.parallel, "seconds": seconds,
              "episodes": episodes, "failed": episodes - len(scores), "errors": dict(errors),
              "mean_score": sum(scores) / len(scores) if scores else None,
              "paper_round_hours": seconds / episodes * PAPER_EPISODES / 3600}
    score = "-" if result["mean_score"] is None else f"{result['mean_score']:.1%}"
    print(f"{name}: {seconds:.0f} s ({engine}, parallel {restem.inner.parallel}), mean score {score} over "
          f"{len(scores)} of {episodes} episodes, paper's round ~{result['paper_round_hours']:.1f} h", flush=True)
    for error, count in errors.items():
        print(f"  failed x{count}: {error}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passages", type=int, default=4)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="an override of seal train knowledge's config, applied to both paths")
    args = ap.parse_args()
    cfg = load_config(TrainKnowledgeConfig, None, [*args.overrides, f"restem.k={args.k}", f"passages={args.passages}"])
    contexts = training_contexts(cfg)
    plain = dataclasses.replace(cfg, restem=dataclasses.replace(
        cfg.restem, generator=dataclasses.replace(cfg.restem.generator, backend="hf"),
        inner=dataclasses.replace(cfg.restem.inner, parallel=1)))
    load = [os.getloadavg()[0]]
    results = {"plain": run_path("plain", plain, contexts), "seal": run_path("seal", cfg, contexts)}
    load.append(os.getloadavg()[0])
    print(f"load average before / after: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores")
    print(json.dumps({"model": cfg.restem.generator.name, "passages": len(contexts), "k": args.k, **results,
                      "speedup": results["plain"]["seconds"] / results["seal"]["seconds"],
                      "load_average_before_after": load}))


if __name__ == "__main__":
    main()
