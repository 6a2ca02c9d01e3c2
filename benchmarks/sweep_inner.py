"""Sweep inner-loop hyperparameters (lr, epochs, rank) for an embedded model on tuning passages.

The paper's r32 / lr 1e-3 / 10 epochs were tuned for a 7B model. This script picks defaults for our
small models: for each grid point it trains (a) the passage alone and (b) passage + the model's own
self-edit on passages outside the 200-passage evaluation set, and reports closed-book accuracy and the
gain of (b) over (a). Self-edits are sampled once (seeded) and shared by every grid point.

    python benchmarks/sweep_inner.py --model smollm2-135m-instruct --passages 8 \
        --lr 3e-4 1e-3 3e-3 --epochs 3 6 --rank 8 32
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

from rich.table import Table

from seal import models
from seal.bench.knowledge import KnowledgeBenchConfig, select_passages
from seal.config import InnerConfig
from seal.domains.base import Example, SelfEditError, UpdatePlan
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.episode import adapt_and_evaluate_all
from seal.generation import chat_prompt, generate
from seal.progress import console, progress_bar


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--passages", type=int, default=8)
    ap.add_argument("--offset", type=int, default=0, help="first passage of the non-evaluation split")
    ap.add_argument("--lr", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    ap.add_argument("--epochs", type=int, nargs="+", default=[3, 6])
    ap.add_argument("--rank", type=int, nargs="+", default=[16])
    ap.add_argument("--batch-size", type=int, default=InnerConfig.batch_size)
    ap.add_argument("--parallel", type=int, default=InnerConfig.parallel, help="candidates trained together")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    bench = KnowledgeBenchConfig(split="train", passages=args.passages, offset=args.offset)
    passages = select_passages(bench)
    domain = KnowledgeDomain(bench.prompt, bench.inner.max_sequences, bench.eval)
    model, tokenizer = models.load(args.model)
    s = bench.sampling
    with console.status("sampling self-edits"):
        prompts = [chat_prompt(tokenizer, domain.self_edit_prompt(p)) for p in passages]
        self_edits = [o[0] for o in generate(model, tokenizer, prompts, max_new_tokens=s.max_new_tokens,
                                             temperature=s.temperature, top_p=s.top_p, seed=args.seed)]
    plans = {}
    for i, (p, text) in enumerate(zip(passages, self_edits)):
        plans[i, "passage"] = UpdatePlan([Example(f"{p.title}\n{p.context}")])
        try:
            plans[i, "self-edit"] = domain.parse(p, text)
        except SelfEditError:
            plans[i, "self-edit"] = plans[i, "passage"]  # unusable self-edit: no better than the passage

    # Every (grid point, condition) of one passage is a candidate of the batched inner loop: lr and
    # epochs may differ between candidates, rank may not, so candidates are grouped by rank.
    grid = list(itertools.product(args.lr, args.epochs, args.rank))
    scores: dict[tuple, list[float]] = {(point, c): [] for point in grid for c in ("passage", "self-edit")}
    seconds = {rank: 0.0 for rank in args.rank}
    with progress_bar() as bar:
        task = bar.add_task("sweep", total=len(grid) * len(plans), status="")
        for rank in args.rank:
            keys = [(point, c) for point in grid if point[2] == rank for c in ("passage", "self-edit")]
            cfgs = [InnerConfig(lr=lr, epochs=ep, rank=r, alpha=2 * r, batch_size=args.batch_size, seed=args.seed,
                                parallel=args.parallel) for (lr, ep, r), _ in keys]
            for i, p in enumerate(passages):
                start = time.perf_counter()
                outcomes = adapt_and_evaluate_all(model, tokenizer, domain, p, [plans[i, c] for _, c in keys], cfgs)
                seconds[rank] += time.perf_counter() - start
                for key, outcome in zip(keys, outcomes):
                    scores[key].append(outcome.score.value)
                print(json.dumps({"rank": rank, "passage": i, "scores": [[*point, c, o.score.value] for (point, c), o
                                                                        in zip(keys, outcomes)]}), flush=True)
                bar.update(task, advance=len(keys), status=f"rank {rank}, passage {i + 1}")
    rows = []
    for point in grid:
        lr, epochs, rank = point
        mean = {c: sum(scores[point, c]) / len(passages) for c in ("passage", "self-edit")}
        episodes = 2 * len(passages) * sum(1 for q in grid if q[2] == rank)
        rows.append({"lr": lr, "epochs": epochs, "rank": rank, "passage": mean["passage"],
                     "self_edit": mean["self-edit"], "gain": mean["self-edit"] - mean["passage"],
                     "seconds_per_episode": seconds[rank] / episodes})
        print(json.dumps(rows[-1]), flush=True)

    baseline = sum(domain.evaluate(model, tokenizer, p).value for p in passages) / len(passages)
    table = Table(title=f"inner-loop sweep, {args.model}, {len(passages)} tuning passages (no update: {baseline:.1%})")
    for col in ("lr", "epochs", "rank", "passage only", "passage + self-edit", "gain", "s/episode"):
        table.add_column(col)
    for r in sorted(rows, key=lambda r: -r["self_edit"]):
        table.add_row(f"{r['lr']:g}", str(r["epochs"]), str(r["rank"]), f"{r['passage']:.1%}", f"{r['self_edit']:.1%}",
                      f"{r['gain']:+.1%}", f"{r['seconds_per_episode']:.1f}")
    console.print(table)
    print(json.dumps({"model": args.model, "passages": len(passages), "no_update": baseline, "rows": rows}))


if __name__ == "__main__":
    main()
