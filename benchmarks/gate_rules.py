"""Which gate keeps the updates that taught? From router forgetting runs' logged learns, for each rule on the
self-quiz: how many updates it keeps, how often its verdict matches the verdict of the passage's own human
questions (did they rise?), and the mean accuracy on those questions right after each passage's step had the
rule been the gate (a kept update: its accuracy after; a rejected one: before, since a router's rejected update
leaves the passage to the base model). Every learn the runs logged counts once; the probe's verdict stays as logged.

    python benchmarks/gate_rules.py RUN [RUN ...] [--margins 0 0.05 0.1 0.2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from seal.bench.forgetting import ForgettingBenchConfig
from seal.config import load_config
from seal.memory.probe import holds
from seal.progress import console
from seal.runs import read_records


def learns(runs: list[str]) -> list[dict]:
    """The learns of every router step the runs logged, each once, with whether the probe held after it."""
    found = []
    for run in runs:
        cfg = load_config(ForgettingBenchConfig, Path(run) / "config.yaml")
        steps = sorted(read_records(Path(run) / "metrics.jsonl", event="step"), key=lambda r: (r["sequence"], r["step"]))
        for before, step in zip(steps, steps[1:]):
            if step["strategy"] != "router":
                raise SystemExit(f"{run}: {step['strategy']} folds updates in; these rules are for router runs")
            learn = step["learn"]
            if learn is None or learn.get("quiz_logprob_before") is None or learn.get("check_before") is None:
                continue  # a sequence's first step, a learn logged before seal recorded the log-probability, or none
            held, _ = holds(before["probe"], learn["probe_after"], cfg.memory.probe)
            found.append({**learn, "probe_held": held})
    return found


def rules(margins: list[float]) -> dict:
    """name -> keep(learn): the quiz condition of each gate tried (today's default first)."""
    def gained(x):
        return x["quiz_logprob_after"] - x["quiz_logprob_before"]

    named = {"accuracy rose (default)": lambda x: x["quiz_after"] > x["quiz_before"],
             "accuracy did not fall": lambda x: x["quiz_after"] >= x["quiz_before"]}
    for m in margins:
        named[f"accuracy rose, or held and log-prob +{m:g}"] = (
            lambda x, m=m: x["quiz_after"] > x["quiz_before"] or (x["quiz_after"] == x["quiz_before"] and gained(x) > m))
        named[f"log-prob +{m:g}, accuracy not down"] = (
            lambda x, m=m: gained(x) > m and x["quiz_after"] >= x["quiz_before"])
    named["keep every update"] = lambda x: True
    return named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="seal bench forgetting run directories (router)")
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.5, 1.0],
                        help="rises in the quiz answers' mean log-probability per token (nats) a rule asks for")
    args = parser.parse_args()
    found = learns(args.runs)
    if not found:
        raise SystemExit("no learn in these runs recorded the quiz's log-probability and human questions")
    taught = [x["check_after"] > x["check_before"] for x in found]
    table = Table(title=f"gate rules over {len(found)} router learns ({sum(taught)} raised their human questions)")
    for column in ("quiz condition", "kept", "agrees with human questions", "right after own (human questions)"):
        table.add_column(column)
    for name, keep in rules(args.margins).items():
        kept = [keep(x) and x["probe_held"] for x in found]
        agree = sum(k == t for k, t in zip(kept, taught))
        after = sum(x["check_after"] if k else x["check_before"] for x, k in zip(found, kept)) / len(found)
        table.add_row(name, f"{sum(kept)} of {len(found)}", f"{agree} of {len(found)}", f"{after:.1%}")
    console.print(table)


if __name__ == "__main__":
    main()
