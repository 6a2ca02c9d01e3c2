"""Summary statistics for benchmark tables: intervals over independent units (passages, tasks).

Intervals are Student-t intervals over the units (scipy gives the quantile), so that a table over a
handful of passages shows how little it knows: with 2 units the 95 % multiplier is 12.7, not 1.96.
Every interval carries its n, and intervals over fewer than `FEW_UNITS` units are flagged wherever
they are printed (`format_ci`); over one unit there is no interval at all (None).
"""

from __future__ import annotations

import math

from scipy import stats

FEW_UNITS = 5  # below this many units an interval is printed with a warning


def _mean_half_width(values: list[float], level: float) -> tuple[float, float | None]:
    if not values:
        raise ValueError("no values to summarise")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean and a t-interval over independent units (passages, tasks), clipped to [0, 1]; (mean, None, None)
    for a single unit.

    Questions of one passage are correlated, so the unit of sampling is the passage, not the question.
    """
    mean, half = _mean_half_width(values, level)
    if half is None:
        return mean, None, None
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def paired_difference(a: list[float], b: list[float], level: float = 0.95) -> dict:
    """Mean of a - b over paired units (the same passages under two conditions) with a t-interval, not
    clipped (a difference may be negative), the units where a beat or lost to b, and the two-sided Wilcoxon
    signed-rank p-value (None when no unit differs).

    Pairing removes the passage-to-passage spread that both conditions share, so it detects differences
    that two overlapping per-condition intervals cannot. Per-passage accuracies move in steps of one question
    and are far from normal on a few passages, so the rank test stands beside the t-interval as a check on it.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values must have the same length ({len(a)} != {len(b)})")
    diffs = [x - y for x, y in zip(a, b)]
    mean, half = _mean_half_width(diffs, level)
    return {"difference": mean, "ci_low": None if half is None else mean - half,
            "ci_high": None if half is None else mean + half, "units": len(diffs),
            "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
            "p_wilcoxon": float(stats.wilcoxon(diffs).pvalue) if any(diffs) else None}


def format_ci(low: float | None, high: float | None, n: int, signed: bool = False) -> str:
    """An interval as printed in tables, always with its n: '17.6–27.4 % (n=20)'; flagged under FEW_UNITS:
    '0.0–54.3 % (n=2, too few)'."""
    if low is None or high is None:
        return f"none (n={n})"
    text = f"{low:+.1%} to {high:+.1%}" if signed else f"{low:.1%}–{high:.1%}"
    return f"{text} (n={n}{', too few' if n < FEW_UNITS else ''})"


def number(value: float | None, spec: str = ".3f") -> str:
    """A figure for a table; '-' when there is none (e.g. every episode failed, so nothing was scored)."""
    return "-" if value is None else format(value, spec)


def percent(value: float | None) -> str:
    return number(value, ".1%")
