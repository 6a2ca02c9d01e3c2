"""`seal bench ...`: the paper's experiments as subcommands."""

from __future__ import annotations

import argparse

from rich.table import Table


def _print_rows(rows: list[dict], title: str) -> None:
    from seal.progress import console

    table = Table(title=title)
    for col in ("condition", "accuracy", "95% CI", "F1", "failed", "s/episode"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["condition"], f"{r['accuracy']:.1%}", f"{r['ci_low']:.1%}–{r['ci_high']:.1%}",
                      f"{r['f1']:.3f}", str(r["failed"]), f"{r['seconds_per_episode']:.1f}")
    console.print(table)


def cmd_bench_knowledge(args) -> int:
    from seal.bench.knowledge import KnowledgeBenchConfig, run_bench
    from seal.config import load_config
    from seal.runs import default_run_dir

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model.name={args.model}")
    if args.passages is not None:
        overrides.append(f"passages={args.passages}")
    if args.setting:
        overrides.append(f"setting={args.setting}")
    cfg = load_config(KnowledgeBenchConfig, args.config, overrides)
    out = args.out or default_run_dir("bench-knowledge")
    results = run_bench(cfg, out)
    _print_rows(results["rows"], f"knowledge incorporation, {results['setting']} passage ({results['model']}, "
                f"{results['passages']} passages) -> {out}")
    return 0


def add_bench_parser(sub) -> None:
    from seal.cli import config_args

    bench = sub.add_parser("bench", help="reproduce the paper's experiments").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("knowledge", help="single-passage knowledge incorporation table")
    p.add_argument("--model")
    p.add_argument("--passages", type=int)
    p.add_argument("--setting", choices=["single", "multi"], help="one update per passage, or one for all of them")
    p.add_argument("--out", help="run directory (default: runs/bench-knowledge-<time>); rerun the same --out to resume")
    config_args(p)
    p.set_defaults(func=cmd_bench_knowledge)
