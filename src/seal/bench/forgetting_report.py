"""The forgetting benchmark's tables and plots: per strategy, the mean accuracy matrix and its measures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from seal.bench import transfer  # noqa: E402
from seal.bench.stats import percent  # noqa: E402
from seal.domains.knowledge.answers import answers_table  # noqa: E402

# SEAL's own result files: Qwen2.5-7B after two RL rounds, 8 passages merged in sequence, 64 sequences
REFERENCE = {"acc": 0.247, "bwt": -0.191, "just_after": 0.415, "base": 0.307, "first_column": (0.383, 0.189)}


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _matrices(steps: list[dict], strategy: str, t: int) -> list[list[list[float]]]:
    """R of every sequence of `strategy` whose T + 1 steps are all done."""
    by_seq: dict[int, dict[int, list[float]]] = {}
    for r in steps:
        if r["strategy"] == strategy:
            by_seq.setdefault(r["sequence"], {})[r["step"]] = r["row"]
    return [[rows[i] for i in range(t + 1)] for _, rows in sorted(by_seq.items()) if len(rows) == t + 1]


def _routing(steps: list[dict]) -> dict | None:
    """Of the questions about documents held apart, the share routed to their own adapter; of the others
    (not learned, rejected, or folded in), the share routed to no adapter."""
    held, other = [], []
    for r in steps:
        for passage in r["answers"]:
            for a in passage["answers"]:
                (held if passage["held_apart"] else other).append(a["routed_to"])
    if not any(passage["held_apart"] for r in steps for passage in r["answers"]):
        return None
    return {"right_adapter": _mean([x is True for x in held]), "questions_held": len(held),
            "no_adapter": _mean([x is None for x in other]), "questions_other": len(other)}


def summarise(steps: list[dict], cfg) -> dict:
    t = cfg.documents
    rows = []
    for strategy in cfg.strategies:
        mine = [r for r in steps if r["strategy"] == strategy]
        matrices = _matrices(steps, strategy, t)
        per_seq = [transfer.summary(R) for R in matrices]
        learns = [r["learn"] for r in mine if r["learn"]]
        checked = [x for x in learns if x.get("check_before") is not None and x.get("quiz_before") is not None]
        final = [r for r in mine if r["step"] == t]
        row = {"strategy": strategy, "sequences": len(matrices),
               **{k: _mean([s[k] for s in per_seq]) for k in ("acc", "bwt", "fwt", "retention", "just_after", "base")},
               "first_column": [_mean(col) for col in zip(*[s["first_column"] for s in per_seq])],
               "R": [[_mean(cells) for cells in zip(*rows_)] for rows_ in zip(*matrices)] if matrices else [],
               **{f"final_{m}": _mean([p.get("metrics", {}).get(m) for r in final for p in r["answers"]])
                  for m in ("f1", "recitation", "identical")},  # (steps logged before seal recorded them: none)
               "probe_curve": [_mean([r["probe"]["accuracy"] for r in mine if r["step"] == i]) for i in range(t + 1)],
               "probe_accuracy": _mean([r["probe"]["accuracy"] for r in final]),
               "probe_perplexity": _mean([r["probe"]["perplexity"] for r in final]),
               "base_probe_perplexity": _mean([r["probe"]["perplexity"] for r in mine if r["step"] == 0]),
               "seconds_per_learn": _mean([x["seconds"] for x in learns]),
               "disk_mb": _mean([r["disk_bytes"] / 2**20 for r in final]),
               "accepted": _mean([x["accepted"] for x in learns]), "learns": len(learns),
               "gate_agreement": _mean([(x["quiz_after"] > x["quiz_before"]) == (x["check_after"] > x["check_before"])
                                        for x in checked]),
               "routing": _routing([r for r in mine if r["step"] > 0])}
        rows.append(row)
    return {"documents": t, "strategies": rows}


def _pt(value) -> str:
    return "-" if value is None else f"{100 * value:+.1f} pt"


def report(results: dict, cfg) -> str:
    t = results["documents"]
    ref = REFERENCE
    lines = [
        f"# Forgetting: {t} documents learned in sequence, {cfg.memory.model.name}",
        "",
        f"Strategies side by side; {cfg.sequences} sequence(s) of {t} SQuAD evaluation passages each, learned "
        + ("without their questions (the gate uses the model's self-quiz)" if cfg.self_quiz else
           "with their questions as the gate's quiz") + f"; gate {'on' if cfg.memory.gate else 'off'}. "
        "R[i][j]: closed-book accuracy on passage j after i steps. ACC: mean of the last row; BWT: end minus "
        "right-after-own-update, passages 1..T-1; FWT: just-before minus untouched; retention: end / right after. "
        "Probe: questions the untouched model answered right (100 % at the start) and perplexity on a held-out text. "
        "F1 / recitation / identical: over the last step's answers, the share that copy a long run of the "
        "document and the share identical to another answer of the same passage. Gate agreement: how often the self-quiz's verdict (improved or not) is the verdict of the passage's own "
        "questions, on every update tried (accepted or not). Every answer: [answers.md](answers.md).",
        "",
        "| strategy | seq | ACC | F1 / recitation / identical (end) | BWT | FWT | retention | right after own | untouched "
        "| first passage (after own → end) | probe acc | probe ppl | s / learn | disk MB | accepted | gate agreement "
        "| routing right / none |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| reference (SEAL, Qwen2.5-7B, merge) | 64 | {percent(ref['acc'])} | - | {_pt(ref['bwt'])} | - | - | "
        f"{percent(ref['just_after'])} | {percent(ref['base'])} | {percent(ref['first_column'][0])} → "
        f"{percent(ref['first_column'][1])} | - | - | - | - | - | - | - |",
    ]
    for r in results["strategies"]:
        first = r["first_column"]
        routing = r["routing"]
        lines.append(
            f"| {r['strategy']} | {r['sequences']} | {percent(r['acc'])} | "
            f"{'-' if r['final_f1'] is None else format(r['final_f1'], '.2f')} / {percent(r['final_recitation'])} / "
            f"{percent(r['final_identical'])} | {_pt(r['bwt'])} | {_pt(r['fwt'])} | "
            f"{'-' if r['retention'] is None else format(r['retention'], '.2f')} | {percent(r['just_after'])} | "
            f"{percent(r['base'])} | {percent(first[1]) if len(first) > 1 else '-'} → {percent(first[-1]) if first else '-'} | "
            f"{percent(r['probe_accuracy'])} | {'-' if r['probe_perplexity'] is None else format(r['probe_perplexity'], '.1f')} | "
            f"{'-' if r['seconds_per_learn'] is None else format(r['seconds_per_learn'], '.0f')} | "
            f"{'-' if r['disk_mb'] is None else format(r['disk_mb'], '.0f')} | "
            f"{percent(r['accepted'])} of {r['learns']} | {percent(r['gate_agreement'])} | "
            + (f"{percent(routing['right_adapter'])} / {percent(routing['no_adapter'])}" if routing else "-") + " |")
    for r in results["strategies"]:
        if r["R"]:
            lines += ["", f"## {r['strategy']}: mean R (rows: steps, columns: passages)", "",
                      "| step | " + " | ".join(str(j + 1) for j in range(t)) + " |", "|---" * (t + 1) + "|"]
            lines += [f"| {i} | " + " | ".join(percent(v) for v in row) + " |" for i, row in enumerate(r["R"])]
    return "\n".join(lines) + "\n"


def plot_forgetting(results: dict, plots: Path) -> None:
    """heatmaps.png: mean R per strategy; curves.png: the first passage, mean accuracy on learned passages and
    the general probe over the steps, per strategy."""
    rows = [r for r in results["strategies"] if r["R"]]
    if not rows:
        return
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.4), squeeze=False)
    for ax, r in zip(axes[0], rows):  # cells a sparse run did not measure are left blank
        image = ax.imshow(_nan(r["R"]), vmin=0, vmax=1, cmap="viridis")
        ax.set(title=r["strategy"], xlabel="passage", ylabel="step")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="accuracy")
    fig.savefig(plots / "heatmaps.png", dpi=100)
    plt.close(fig)
    fig, (left, right, probe) = plt.subplots(1, 3, figsize=(15, 4))
    for r in rows:
        steps = range(len(r["R"]))
        left.plot(steps, _nan(r["first_column"]), "o-", label=r["strategy"])
        learned = [None] + [None if None in row[:i] else sum(row[:i]) / i for i, row in enumerate(r["R"]) if i > 0]
        right.plot(steps, _nan(learned), "o-", label=r["strategy"])
        probe.plot(steps, r["probe_curve"], "o-", label=r["strategy"])
    left.set(xlabel="step", ylabel="accuracy on the first passage", ylim=(0, 1), title="retention of the first passage")
    right.set(xlabel="step", ylabel="mean accuracy on passages learned so far", ylim=(0, 1), title="what is kept")
    probe.set(xlabel="step", ylabel="general probe accuracy", ylim=(0, 1.05), title="general capability")
    left.legend()
    fig.tight_layout()
    fig.savefig(plots / "curves.png", dpi=100)
    plt.close(fig)


def _nan(values: list) -> np.ndarray:
    """Floats for matplotlib, NaN (not drawn) where a sparse run measured nothing."""
    return np.array(values, dtype=float)


def answers_page(steps: list[dict], t: int) -> str:
    """Every graded answer after the last step, per strategy and sequence: what the numbers count."""
    lines = ["# Answers after the last step", "",
             "✓ credited, ✗ not; R recites the passage, = identical to another answer of the same passage.", ""]
    for r in sorted((r for r in steps if r["step"] == t), key=lambda r: (r["strategy"], r["sequence"])):
        for passage in r["answers"]:
            lines += [f"## {r['strategy']}, sequence {r['sequence'] + 1}: {passage['title']}", "",
                      *answers_table(passage["answers"]), ""]
    return "\n".join(lines)
