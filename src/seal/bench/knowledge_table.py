"""The knowledge benchmark's tables from its episode records: rows per condition, paired differences, the
report and the page of every graded answer. Pure functions of the records, shared by a finished run and
`seal bench status`."""

from __future__ import annotations

from pathlib import Path

from seal.bench.stats import format_ci, mean_ci, number, paired_difference, percent
from seal.domains.knowledge.answers import METRICS, answers_table
from seal.domains.knowledge.data import Passage


def per_passage(episodes: list[dict], condition: str) -> dict[int, dict[str, float]]:
    """Mean accuracy, F1, exact match, recitation, identical-answer rates and unrecited accuracy of `condition`
    per passage, over its samples that ran (None for a metric that records written before seal kept it lack).

    A failed episode (its self-edit unusable, its update impossible) has no score: it is counted in the
    row's `failed` column, never averaged in, and a passage whose every episode failed has no score at all.
    """
    scores_of: dict[int, list[dict]] = {}
    for e in episodes:
        if e["condition"] == condition and "scores" in e:
            for i, s in zip(e["passages"], e["scores"]):
                scores_of.setdefault(i, []).append(s)
    return {i: {m: _mean([s.get(m) for s in v]) for m in METRICS} for i, v in scores_of.items()}


def summarise(episodes: list[dict], conditions: list[str]) -> list[dict]:
    """One row per condition: mean over the passages it scored (`passages`, the n of the 95 % t-interval),
    the protocol's other metrics, failed episodes (and unusable self-edits of merged updates), seconds per episode,
    and the share of its self-edits' words copied from the passage (single setting; None for a row without)."""
    rows = []
    for c in conditions:
        eps = [e for e in episodes if e["condition"] == c]
        scores = list(per_passage(episodes, c).values())
        mean, low, high = mean_ci([s["accuracy"] for s in scores]) if scores else (None, None, None)
        failed = sum("error" in e for e in eps) + sum(e.get("unusable_self_edits", 0) for e in eps)
        copied = [e["copied"] for e in eps if "copied" in e]
        rows.append({"condition": c, "round": rl_round(c), "episodes": len(eps), "failed": failed,
                     "passages": len(scores), "accuracy": mean, "ci_low": low, "ci_high": high,
                     **{m: _mean([s[m] for s in scores]) for m in METRICS[1:]},
                     "seconds_per_episode": sum(e["seconds"] for e in eps) / len(eps),
                     "self_edit_copied": sum(copied) / len(copied) if copied else None})
    return rows


def _mean(values: list[float | None]) -> float | None:
    return None if not values or None in values else sum(values) / len(values)


def comparisons(episodes: list[dict], conditions: list[str]) -> list[dict]:
    """Paired accuracy differences behind the paper's claims, over the passages both conditions scored:
    every self-edit condition against the passage alone (does restating beat the raw text?), each later
    RL round and each stored self-edit file against the model's own self-edits (round 0), and each file
    against the last RL round (does SEAL approach GPT-4.1's self-edits?). Each also carries the paired
    difference in unrecited accuracy (`unrecited`, None for records from before seal kept it): a lead made of
    recitations is not learning."""
    rounds = sorted((r, c) for c in conditions if (r := rl_round(c)) is not None)
    files = [c for c in conditions if c.startswith("file:")]
    pairs = []
    if "passage" in conditions:
        pairs += [(c, "passage") for c in conditions if c.startswith(("file:", "generator:")) or c == "self-edit"]
    if rounds and rounds[0][0] == 0:
        pairs += [(c, rounds[0][1]) for r, c in rounds[1:]] + [(f, rounds[0][1]) for f in files]
    if rounds and rounds[-1][0] > 0:
        pairs += [(f, rounds[-1][1]) for f in files]
    out = []
    for a, b in pairs:
        pa, pb = per_passage(episodes, a), per_passage(episodes, b)
        shared = sorted(pa.keys() & pb.keys())
        if shared:
            unrecited = [(pa[i]["unrecited"], pb[i]["unrecited"]) for i in shared]
            out.append({"a": a, "b": b, **paired_difference([pa[i]["accuracy"] for i in shared],
                                                           [pb[i]["accuracy"] for i in shared]),
                        "unrecited": None if any(None in u for u in unrecited) else paired_difference(*zip(*unrecited))})
    return out


def rl_round(condition: str) -> int | None:
    """The ReST-EM round a condition's self-edits come from: 0 for the model's own, N for a `round-N` generator."""
    if condition == "self-edit":
        return 0
    name = Path(condition[10:]).name if condition.startswith("generator:") else ""
    return int(name[6:]) if name.startswith("round-") and name[6:].isdigit() else None


def pieces_note(pieces: int | None) -> str:
    """How many samples (own rows) or stored completions (file rows) make one self-edit; unsaid by older runs."""
    return "" if pieces is None else f", each {pieces} sample(s) or stored completion(s) joined"


def report(results: dict) -> str:
    lines = [
        f"# Knowledge incorporation, {results['setting']} passage: {results['model']}",
        "",
        f"{results['passages']} passages of the {results['split']} split, k={results['k']} self-edit(s) per passage"
        f"{' trained together in one update' if results.get('combine') else ''}"
        f"{pieces_note(results.get('pieces'))}. "
        "Accuracy is the mean over passages of closed-book accuracy on each passage's questions, over the episodes "
        "that ran; 95 % t-interval over the n passages scored (flagged under 5, none for 1). Only an answer's first "
        "sentence is graded, and an answer also given to a question it does not answer is not credited "
        "(`seal/domains/knowledge/answers.py`). `recited`: answers copying 10+ words of the passage beyond the gold; `identical`: "
        "answers given word for word to another question of the passage; `unrecited`: the accuracy counting only "
        "credited answers that recite nothing. `copied`: the share of the self-edits' words that copy 10+ words of "
        "the passage (a generator that copies teaches its updates to recite). `failed` counts episodes that could not "
        "run (unusable self-edit, impossible update; in the multi setting, unusable self-edits left out of the "
        "update): they are in no mean. Every answer: [answers.md](answers.md).",
        "",
        "| condition | accuracy | 95 % CI (n passages) | F1 | EM | recited | identical | unrecited | copied | failed "
        "| s / episode |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(f"| {r['condition']} | {percent(r['accuracy'])} | "
                     f"{format_ci(r['ci_low'], r['ci_high'], r['passages'])} | {number(r['f1'])} | {percent(r['em'])} | "
                     f"{percent(r['recitation'])} | {percent(r['identical'])} | {percent(r['unrecited'])} | "
                     f"{percent(r.get('self_edit_copied'))} | {r['failed']} | "
                     f"{r['seconds_per_episode']:.1f} |")
    if results.get("comparisons"):
        lines += ["", "Paired differences in accuracy over the same passages (95 % t-interval; passages better / "
                  "worse; two-sided Wilcoxon signed-rank p; the same difference in unrecited accuracy):", "",
                  "| comparison | difference | 95 % CI (n passages) | better / worse | Wilcoxon p | unrecited difference |",
                  "|---|---|---|---|---|---|"]
        for c in results["comparisons"]:
            lines.append(f"| {c['a']} − {c['b']} | {c['difference']:+.1%} | "
                         f"{format_ci(c['ci_low'], c['ci_high'], c['units'], signed=True)} | "
                         f"{c['better']} / {c['worse']} | {number(c['p_wilcoxon'], '.2g')} | {unrecited_change(c)} |")
    return "\n".join(lines) + "\n"


def unrecited_change(comparison: dict) -> str:
    """A comparison's paired difference in unrecited accuracy with its interval, '-' where it was not kept."""
    u = comparison["unrecited"]
    return "-" if u is None else f"{u['difference']:+.1%} ({format_ci(u['ci_low'], u['ci_high'], u['units'], signed=True)})"


def answers_page(episodes: list[dict], passages: list[Passage]) -> str:
    """Every graded answer of every episode, by passage then condition: what the numbers count."""
    lines = ["# Answers", "", "✓ credited, ✗ not; R recites the passage, = identical to another answer.", ""]
    for e in sorted(episodes, key=lambda e: (e["passages"], e["condition"], e["sample"])):
        for i, score in zip(e["passages"], e.get("scores", [])):
            lines += [f"## {passages[i].title} — {e['condition']} (sample {e['sample']})", "",
                      *answers_table(score["answers"]), ""]
    return "\n".join(lines)
