"""Summary statistics for benchmark tables: intervals over independent units (passages, tasks)."""

from __future__ import annotations

import math


def _mean_half_width(values: list[float], z: float) -> tuple[float, float]:
    if not values:
        raise ValueError("no values to summarise")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, z * sd / math.sqrt(n)


def mean_ci(values: list[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean and a normal-approximation 95 % interval over independent units (passages, tasks), clipped to [0, 1].

    Questions of one passage are correlated, so the unit of sampling is the passage, not the question.
    """
    mean, half = _mean_half_width(values, z)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def paired_difference(a: list[float], b: list[float], z: float = 1.96) -> dict:
    """Mean of a - b over paired units (the same passages under two conditions) with a normal-approximation
    95 % interval, not clipped (a difference may be negative), and the units where a beat or lost to b.

    Pairing removes the passage-to-passage spread that both conditions share, so it detects differences
    that two overlapping per-condition intervals cannot.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values must have the same length ({len(a)} != {len(b)})")
    diffs = [x - y for x, y in zip(a, b)]
    mean, half = _mean_half_width(diffs, z)
    return {"difference": mean, "ci_low": mean - half, "ci_high": mean + half, "units": len(diffs),
            "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs)}
