"""How often does each offline grader agree with GPT-4.1's verdicts?

The data (question, gold, prediction, gpt41_correct) is split in two halves by
a hash of the passage title, so one passage never straddles both. Thresholds
are chosen on the "tune" half only (the sweep below shows that choice); the
"held-out" half measures them. Agreement is the fraction of identical
verdicts; precision and recall treat GPT-4.1's "correct" as the positive class.

    python benchmarks/grader_agreement.py [--data PATH] [--graders lenient,f1,...]

The last line printed is JSON with the held-out agreement of every grader.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/grader/gpt41_verdicts_dev.jsonl"
SWEEPS = {
    "f1": (F1_THRESHOLD, (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)),
    "lenient": (LENIENT_THRESHOLD, (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0)),
}


def split_half(title: str) -> str:
    return "tune" if hashlib.sha256(title.encode()).digest()[-1] % 2 == 0 else "held-out"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    offline = [n for n in GRADER_NAMES if n != "llm-judge"]
    parser.add_argument("--graders", default=",".join(offline), help="comma-separated grader names")
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    halves = {"tune": [], "held-out": []}
    for row in rows:
        halves[split_half(row["title"])].append(row)
    labels = {name: [r["gpt41_correct"] for r in part] for name, part in halves.items()}
    console = Console(width=120)
    held_out_positives = sum(labels["held-out"]) / len(labels["held-out"])
    console.print(
        f"{len(rows)} verdicts ({sum(r['gpt41_correct'] for r in rows)} correct per GPT-4.1); "
        f"tune {len(halves['tune'])}, held-out {len(halves['held-out'])}; "
        f"always answering 'incorrect' agrees {1 - held_out_positives:.2%} on held-out"
    )

    names = args.graders.split(",")
    for name in (n for n in names if n in SWEEPS):
        default, thresholds = SWEEPS[name]
        sweep = Table(title=f"{name}: threshold sweep on the tune half")
        sweep.add_column("threshold")
        sweep.add_column("tune agreement", justify="right")
        sweep.add_column("")
        agreements = {
            t: scores(grade(get_grader(name, threshold=t), halves["tune"]), labels["tune"])["agreement"]
            for t in thresholds
        }
        best = max(agreements, key=agreements.get)
        for threshold, agreement in agreements.items():
            marks = [m for m, on in (("best", threshold == best), ("module default", threshold == default)) if on]
            sweep.add_row(f"{threshold:g}", f"{agreement:.2%}", ", ".join(marks))
        console.print(sweep)

    table = Table(title="Agreement with GPT-4.1 (P/R: GPT-4.1 'correct' is the positive class)")
    table.add_column("grader")
    for column in ("tune agr.", "held-out agr.", "held-out P", "held-out R", "all agr.", "all P", "all R"):
        table.add_column(column, justify="right")
    held_out = {}
    for name in names:
        grader = get_grader(name)
        verdicts = {part: grade(grader, halves[part]) for part in halves}
        tune = scores(verdicts["tune"], labels["tune"])
        held = scores(verdicts["held-out"], labels["held-out"])
        whole = scores(verdicts["tune"] + verdicts["held-out"], labels["tune"] + labels["held-out"])
        held_out[name] = round(held["agreement"], 4)
        cells = [tune["agreement"], *held.values(), *whole.values()]
        table.add_row(f"{name} (default)" if name == DEFAULT_GRADER else name, *(f"{c:.2%}" for c in cells))
    console.print(table)
    summary = {"held_out_agreement": held_out, "default": DEFAULT_GRADER, "n_held_out": len(halves["held-out"])}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
