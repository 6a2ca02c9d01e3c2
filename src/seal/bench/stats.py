"""Summary statistics for benchmark tables."""

from __future__ import annotations

import math


def mean_ci(values: list[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean and a normal-approximation 95 % interval over independent units (passages, tasks), clipped to [0, 1].

    Questions of one passage are correlated, so the unit of sampling is the passage, not the question.
    """
    if not values:
        raise ValueError("no values to summarise")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)
