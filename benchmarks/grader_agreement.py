"""How often does each offline grader agree with GPT-4.1's verdicts, and how fast is it?

The data (question, gold, prediction, gpt41_correct) is split in two halves by a hash of the passage
title (``seal.domains.knowledge.verdicts``), so one passage never straddles both. Thresholds, and the
learned grader, are fitted on the "tune" half only (the sweep below shows the thresholds' choice); the
"held-out" half measures them. Agreement is the fraction of identical verdicts; precision and recall
treat GPT-4.1's "correct" as the positive class; grades/s is one grader call after another, over both
halves, per second of this process's CPU time (one thread: run with OMP_NUM_THREADS=1), so that other
jobs on a shared machine do not distort it. Local LLM judges (``--judges``) are slow, so they grade a seeded sample of the
held-out half, and the fast graders are measured on that same sample beside them.

    python benchmarks/grader_agreement.py [--data PATH] [--graders lenient,learned,...]
        [--judges qwen2.5-coder-0.5b-instruct,smollm2-135m-instruct --judge-sample 200]

The last line printed is JSON with the held-out agreement of every grader.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from seal.domains.knowledge.grading import (
    DEFAULT_GRADER,
    F1_THRESHOLD,
    GRADER_NAMES,
    LENIENT_THRESHOLD,
    get_grader,
)
from seal.domains.knowledge.verdicts import load_verdicts
from seal.progress import progress_bar

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/grader/gpt41_verdicts_dev.jsonl"
SWEEPS = {
    "f1": (F1_THRESHOLD, (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)),
    "lenient": (LENIENT_THRESHOLD, (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0)),
}
REMOTE_OR_SLOW = ("llm-judge", "local-judge")


def scores(verdicts: list[bool], gold: list[bool]) -> dict[str, float]:
    tp = sum(v and g for v, g in zip(verdicts, gold))
    predicted, actual = sum(verdicts), sum(gold)
    return {
        "agreement": sum(v == g for v, g in zip(verdicts, gold)) / len(gold),
        "precision": tp / predicted if predicted else 0.0,
        "recall": tp / actual if actual else 0.0,
    }


def grade(grader, rows: list[dict]) -> list[bool]:
    return [grader(r["question"], r["gold"], r["prediction"]) for r in rows]


def timed_grade(grader, rows: list[dict]) -> tuple[list[bool], float]:
    """Verdicts and grades per CPU second."""
    start = time.process_time()
    verdicts = grade(grader, rows)
    return verdicts, len(rows) / (time.process_time() - start)


def label(name: str, grader) -> str:
    version = getattr(grader, "version", None)
    text = f"{name} {version}" if version else name
    return f"{text} (default)" if name == DEFAULT_GRADER else text


def sweep_table(name: str, tune: list[dict]) -> Table:
    default, thresholds = SWEEPS[name]
    labels = [r["gpt41_correct"] for r in tune]
    agreements = {t: scores(grade(get_grader(name, threshold=t), tune), labels)["agreement"] for t in thresholds}
    best = max(agreements, key=agreements.get)
    table = Table(title=f"{name}: threshold sweep on the tune half")
    for column in ("threshold", "tune agreement", ""):
        table.add_column(column, justify="right" if column else "left")
    for threshold, agreement in agreements.items():
        marks = [m for m, on in (("best", threshold == best), ("module default", threshold == default)) if on]
        table.add_row(f"{threshold:g}", f"{agreement:.2%}", ", ".join(marks))
    return table


def judges_table(judges: list[str], fast: dict, sample: list[dict], console: Console) -> dict[str, float]:
    """Each local judge, and the fast graders for comparison, on the same sample of held-out verdicts.

    A judge's verdict is its yes-minus-no log-probability margin against a bias: at bias 0 (the model's
    own preference), and at the bias that agrees best on this very sample, an optimistic upper bound of
    what calibrating the bias on other data could reach.
    """
    labels = [r["gpt41_correct"] for r in sample]
    table = Table(title=f"Local LLM judges on a seeded sample of {len(sample)} held-out verdicts")
    for column in ("grader", "agreement", "precision", "recall", "grades/s"):
        table.add_column(column, justify="left" if column == "grader" else "right")
    out = {}
    for name, grader in fast.items():
        verdicts, speed = timed_grade(grader, sample)
        table.add_row(label(name, grader), *(f"{v:.2%}" for v in scores(verdicts, labels).values()), f"{speed:,.0f}")
    for model in judges:
        judge = get_grader("local-judge", model=model)
        start, margins = time.process_time(), []
        with progress_bar() as bar:
            task = bar.add_task(f"judge {model}", total=len(sample), status="")
            for row in sample:
                margins.append(judge.margin(row["question"], row["gold"], row["prediction"]))
                bar.advance(task)
        speed = len(sample) / (time.process_time() - start)
        empty = [not r["prediction"].strip() for r in sample]
        at = lambda bias: [m > bias and not e for m, e in zip(margins, empty)]  # noqa: E731
        best = max(sorted(set(margins)) + [0.0], key=lambda b: scores(at(b), labels)["agreement"])
        for bias, note in ((0.0, "bias 0"), (best, f"bias {best:.2f}, fitted on this sample")):
            measured = scores(at(bias), labels)
            table.add_row(f"local-judge {model} ({note})", *(f"{v:.2%}" for v in measured.values()), f"{speed:.2f}")
        out[f"local-judge:{model}"] = round(scores(at(0.0), labels)["agreement"], 4)
    console.print(table)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    offline = [n for n in GRADER_NAMES if n not in REMOTE_OR_SLOW]
    parser.add_argument("--graders", default=",".join(offline), help="comma-separated grader names")
    parser.add_argument("--judges", default="", help="comma-separated models to run the local yes/no judge on")
    parser.add_argument("--judge-sample", type=int, default=200, help="held-out verdicts the local judges grade")
    parser.add_argument("--seed", type=int, default=0, help="draws the judges' sample")
    args = parser.parse_args()

    halves = load_verdicts(args.data)
    labels = {name: [r["gpt41_correct"] for r in part] for name, part in halves.items()}
    console = Console(width=140)
    n_rows = sum(len(part) for part in halves.values())
    held_out_positives = sum(labels["held-out"]) / len(labels["held-out"])
    console.print(
        f"{n_rows} verdicts ({sum(sum(part) for part in labels.values())} correct per GPT-4.1); "
        f"tune {len(halves['tune'])}, held-out {len(halves['held-out'])}; "
        f"always answering 'incorrect' agrees {1 - held_out_positives:.2%} on held-out"
    )

    names = args.graders.split(",")
    for name in (n for n in names if n in SWEEPS):
        console.print(sweep_table(name, halves["tune"]))

    table = Table(title="Agreement with GPT-4.1 (P/R: GPT-4.1 'correct' is the positive class)")
    table.add_column("grader")
    for column in ("tune agr.", "held-out agr.", "held-out P", "held-out R", "all agr.", "all P", "all R", "grades/s"):
        table.add_column(column, justify="right")
    held_out, graders = {}, {}
    for name in names:
        graders[name] = grader = get_grader(name)
        (tune_v, tune_speed), (held_v, held_speed) = (timed_grade(grader, halves[p]) for p in ("tune", "held-out"))
        speed = n_rows / (len(tune_v) / tune_speed + len(held_v) / held_speed)
        tune = scores(tune_v, labels["tune"])
        held = scores(held_v, labels["held-out"])
        whole = scores(tune_v + held_v, labels["tune"] + labels["held-out"])
        held_out[name] = round(held["agreement"], 4)
        cells = [f"{c:.2%}" for c in (tune["agreement"], *held.values(), *whole.values())]
        table.add_row(label(name, grader), *cells, f"{speed:,.0f}")
    console.print(table)

    if args.judges:
        sample = random.Random(args.seed).sample(halves["held-out"], min(args.judge_sample, len(halves["held-out"])))
        held_out |= judges_table(args.judges.split(","), graders, sample, console)
    summary = {"held_out_agreement": held_out, "default": DEFAULT_GRADER, "n_held_out": len(halves["held-out"])}
    if args.judges:
        summary["n_judge_sample"] = len(sample)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
