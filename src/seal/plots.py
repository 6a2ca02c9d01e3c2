"""Plots written into run directories (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_learn(result: dict, path: Path) -> None:
    """Training loss of each self-edit's update, and accuracy before vs after."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for s in result["self_edits"]:
        if "train" in s:
            left.plot(range(1, len(s["train"]["losses"]) + 1), s["train"]["losses"], label=f"self-edit {s['index'] + 1}")
    left.set(xlabel="step", ylabel="training loss", title="inner-loop updates")
    if left.lines:
        left.legend()
    bars = {"baseline": result["baseline_accuracy"]}
    if result["adapted_accuracy"] is not None:
        bars["adapted"] = result["adapted_accuracy"]
    right.bar(list(bars), list(bars.values()), color=["grey", "green" if result["accepted"] else "orange"][: len(bars)])
    right.set(ylim=(0, 1), ylabel="closed-book accuracy", title=result["title"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _error_bars(rows: list[dict]) -> list[list[float]]:
    """matplotlib's yerr of rows with an accuracy and a 95 % interval; no bar where there is no interval."""
    return [[r["accuracy"] - r["ci_low"] if r["ci_low"] is not None else 0.0 for r in rows],
            [r["ci_high"] - r["accuracy"] if r["ci_high"] is not None else 0.0 for r in rows]]


def plot_conditions(rows: list[dict], path: Path, title: str) -> None:
    """Mean accuracy per benchmark condition with 95 % confidence intervals (conditions with no score left out)."""
    rows = [r for r in rows if r["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4))
    ax.bar([r["condition"] for r in rows], [r["accuracy"] for r in rows], yerr=_error_bars(rows), capsize=4,
           color="tab:blue")
    ax.set(ylabel="accuracy", ylim=(0, 1), title=title)
    ax.tick_params(axis="x", rotation=25)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_rounds(rounds: list[dict], path: Path) -> None:
    """ReST-EM progress: the learner's mean score before and after self-edit updates, per round."""
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [s["round"] for s in rounds]
    ax.plot(xs, [s["mean_baseline"] for s in rounds], "o--", color="grey",
            label="update on the context alone" if rounds[0].get("baseline") == "context" else "no update")
    ax.plot(xs, [math.nan if s["mean_score"] is None else s["mean_score"] for s in rounds], "o-", color="tab:blue",
            label="after self-edit update (episodes that ran)")
    ax.set(xlabel="RL round (self-edits sampled from the round's generator)", ylabel="mean accuracy", ylim=(0, 1),
           xticks=xs)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_accuracy_per_round(rows: list[dict], path: Path, title: str) -> None:
    """Passage + self-edit accuracy by RL round (round 0: the untrained model's own self-edits), with
    the benchmark's other conditions as horizontal references (e.g. passage only, GPT-4.1 self-edits)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = [r for r in rows if r["accuracy"] is not None]
    points = sorted(((r["round"], r) for r in rows if r.get("round") is not None), key=lambda p: p[0])
    xs = [x for x, _ in points]
    ax.errorbar(xs, [r["accuracy"] for _, r in points], capsize=4, marker="o", color="tab:blue",
                yerr=_error_bars([r for _, r in points]),
                label="passage + SEAL self-edit")
    for r, style in zip((r for r in rows if r.get("round") is None), ("--", ":", "-.", (0, (1, 3)), (0, (5, 1)))):
        ax.axhline(r["accuracy"], linestyle=style, color="grey", label=r["condition"])
    ax.set(xlabel="RL round", ylabel="accuracy", ylim=(0, 1), xticks=xs, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
