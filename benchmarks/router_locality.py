"""How well the router's retrieval picks adapters, measured without any model: SQuAD evaluation passages
are "learned" T at a time (indexed as the router indexes them, with the probe's passages as background);
each question of a learned passage should reach its own passage's adapter, each question of a passage
never learned should reach none. Prints both rates per `router.min_coverage`, for the sequences that
`seal bench forgetting` uses (same data, seed, T and S), and how many of the never-learned passages' questions
that reached an adapter reached one of another paragraph of their own article (SQuAD splits an article into
paragraphs; the more are learned, the more a never-learned one has a learned sibling).

    python benchmarks/router_locality.py --documents 8 --sequences 4
    python benchmarks/router_locality.py --documents 50 --sequences 1
"""

from __future__ import annotations

import argparse

from rich.table import Table

from seal.bench.forgetting import ForgettingBenchConfig, sequences
from seal.domains.knowledge.data import load_squad, split_eval
from seal.memory.probe import candidates, probe_passages
from seal.memory.strategies import DocumentIndex
from seal.progress import console


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--min-coverage", type=float, nargs="+", default=[0.2, 0.28, 0.32, 0.36, 0.45])
    args = parser.parse_args()
    cfg = ForgettingBenchConfig(documents=args.documents, sequences=args.sequences)
    seqs = list(sequences(cfg).values())
    used = {p.context for s in seqs for p in s}
    evaluation, _ = split_eval(load_squad(cfg.data))
    unlearned = [p for p in evaluation if p.context not in used][:50]  # never learned by any sequence
    items, _ = candidates(cfg.memory.probe)
    background = [f"{t} {x}" for t, x in probe_passages(items)]
    table = Table(title=f"router retrieval: {args.sequences} sequence(s) of {args.documents} SQuAD passages, "
                  f"{len(background)} background passages, {len(unlearned)} passages never learned")
    for column in ("min_coverage", "right adapter (learned)", "no adapter (never learned)",
                   "of the rest: same article", "questions"):
        table.add_column(column)
    for min_coverage in args.min_coverage:
        right = none = sibling = n_learned = n_other = 0
        for passages in seqs:
            index = DocumentIndex([f"{p.title} {p.context}" for p in passages], background, min_coverage)
            for j, p in enumerate(passages):
                for q in p.questions:
                    right += index.route(f"{p.title} {q.question}") == j
                    n_learned += 1
            for p in unlearned:
                for q in p.questions:
                    target = index.route(f"{p.title} {q.question}")
                    none += target is None
                    sibling += target is not None and passages[target].title == p.title
                    n_other += 1
        routed = n_other - none
        table.add_row(f"{min_coverage:g}", f"{right / n_learned:.1%}", f"{none / n_other:.1%}",
                      f"{sibling} of {routed}", f"{n_learned} / {n_other}")
    console.print(table)


if __name__ == "__main__":
    main()
