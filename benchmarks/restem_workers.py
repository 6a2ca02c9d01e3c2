"""ReST-EM's E-step on Ray: wall time of one round's episodes with 1 worker vs N workers, one thread each.

The slice: the first `--passages` training passages (outside the 200-passage evaluation set), `--k`
self-edits each, with short self-edits, answers and updates so that the slice takes minutes on a CPU.
Both runs use one local Ray instance (num_cpus = N), the same jobs and the same seed; each worker loads
the model itself (included in the time, as in a real round). The records of both runs must be equal
(same self-edits and scores): the script says so before the figures.

    python benchmarks/restem_workers.py                 # 2 workers vs 1, 4 passages x 2 self-edits

The last line printed is JSON with `speedup` (1-worker seconds / N-worker seconds). On a machine shared
with other jobs the ratio moves with their load: the load average before and after is printed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from seal import models
from seal.config import EvalConfig, InnerConfig, ModelConfig, SamplingConfig
from seal.domains.knowledge.data import load_squad, split_eval
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.rl.restem import ContextJob, RestEMConfig

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/data/squad/squad_val.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--passages", type=int, default=4)
    ap.add_argument("--questions", type=int, default=2, help="questions per passage")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import ray

    from seal.distributed.episodes import RayEpisodes

    _, rest = split_eval(load_squad(args.data))
    contexts = [dataclasses.replace(p, questions=p.questions[: args.questions]) for p in rest if p.questions]
    contexts = contexts[: args.passages]
    cfg = RestEMConfig(generator=ModelConfig(name=args.model), k=args.k,
                       sampling=SamplingConfig(temperature=1.0, top_p=0.95, max_new_tokens=48),
                       inner=InnerConfig(epochs=2))
    domain = KnowledgeDomain(eval=EvalConfig(max_new_tokens=16))
    source = str(models.resolve(args.model))
    jobs = [ContextJob(1, i, None, list(range(args.k))) for i in range(len(contexts))]
    load = [os.getloadavg()[0]]
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    seconds, records = {}, {}
    try:
        for n in (1, args.workers):
            start = time.perf_counter()
            pool = RayEpisodes(domain, contexts, cfg, workers=n)
            try:
                records[n] = sorted((r["event"], r["context"], r.get("sample", -1), r.get("text"), r["score"])
                                    for r in pool(jobs, source))
            finally:
                pool.close()
            seconds[n] = time.perf_counter() - start
            print(f"{n} worker(s): {seconds[n]:.1f} s for {len(contexts)} passages x {args.k} self-edits", flush=True)
    finally:
        ray.shutdown()
    load.append(os.getloadavg()[0])
    same = records[1] == records[args.workers]
    print(f"records equal: {same}; load average before / after: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores")
    print(json.dumps({"model": args.model, "passages": len(contexts), "k": args.k, "workers": args.workers,
                      "seconds": {str(n): s for n, s in seconds.items()}, "records_equal": same,
                      "load_average_before_after": load, "speedup": seconds[1] / seconds[args.workers]}))


if __name__ == "__main__":
    main()
