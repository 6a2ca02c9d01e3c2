"""`seal learn` on short fictional documents of the demo's kind (`benchmarks/fictional/`, our own text, never
seen by any model): closed-book accuracy before and after each document's update under the answer protocol,
with the recitation and identical-answer rates behind it. The documents are not the demo's, so tuning the
demo cannot tune this figure.

    python benchmarks/learn_fictional.py --out runs/learn-fictional [--config smollm2-135m-instruct] \
        [--set prompt=self-qa ...]

Each document runs in `OUT/<name>/` (a finished one is read back, not rerun). Prints one row per document
and the mean over documents with a t-interval; accuracy after the update is the kept adapter's, or the
baseline's when the gate discarded it (what a user is left with).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from seal.bench.stats import format_ci, mean_ci
from seal.config import LearnConfig, load_config
from seal.domains.knowledge.data import load_document, load_questions
from seal.learn import learn
from seal.progress import console

DOCUMENTS = Path(__file__).parent / "fictional"


def run_document(doc: Path, cfg: LearnConfig, out: Path) -> dict:
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    title = doc.stem.replace("_", " ").title()
    return learn(load_document(doc, title=title), load_questions(doc.with_suffix(".jsonl")), cfg, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(LearnConfig, args.config, args.overrides)
    table = Table("document", "before", "after", "kept", "recited", "identical", "s")
    kept_accuracy = []
    for doc in sorted(DOCUMENTS.glob("*.txt")):
        r = run_document(doc, cfg, args.out / doc.stem)
        after = r["adapted_metrics"] if r["accepted"] else r["baseline_metrics"]
        kept_accuracy.append(after["accuracy"])
        table.add_row(doc.stem, f"{r['baseline_accuracy']:.0%}",
                      "failed" if r["adapted_metrics"] is None else f"{r['adapted_metrics']['accuracy']:.0%}",
                      "yes" if r["accepted"] else "no", f"{after['recitation']:.0%}", f"{after['identical']:.0%}",
                      f"{r['seconds']:.0f}")
    console.print(table)
    mean, low, high = mean_ci(kept_accuracy)
    console.print(f"{cfg.model.name}: closed-book accuracy after learning {mean:.1%}, 95 % t-interval over "
                  f"documents {format_ci(low, high, len(kept_accuracy))}")


if __name__ == "__main__":
    main()
