"""Continual-learning measures over an accuracy matrix (Lopez-Paz & Ranzato's ACC / BWT / FWT).

R has T + 1 rows and T columns: R[0][j] is the untouched model's accuracy on document j, and R[i][j]
its accuracy on document j after learning documents 0..i-1 in order. So R[j + 1][j] is document j
right after its own update, R[j][j] the same document just before it, R[T][j] at the end. These cells, R[0] and R[T] are all the
measures read: the others may be None (a run that measures whole rows only every few steps).
"""

from __future__ import annotations


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def check_matrix(R: list[list[float]]) -> int:
    """T, after checking that R has T + 1 rows of T columns."""
    t = len(R) - 1
    if t < 1 or any(len(row) != t for row in R):
        raise ValueError(f"an accuracy matrix needs T + 1 rows of T columns (got {[len(r) for r in R]})")
    return t


def acc(R: list[list[float]]) -> float:
    """Mean accuracy over all documents after the last step."""
    t = check_matrix(R)
    return sum(R[t]) / t


def bwt(R: list[list[float]]) -> float | None:
    """Backward transfer: how accuracy on each earlier document changed from right after its own update to
    the end, averaged over documents 0..T-2 (negative: forgetting). None for T = 1."""
    t = check_matrix(R)
    return _mean([R[t][j] - R[j + 1][j] for j in range(t - 1)])


def fwt(R: list[list[float]]) -> float | None:
    """Forward transfer: accuracy on each document just before its own update minus the untouched model's,
    averaged over documents 1..T-1. None for T = 1."""
    t = check_matrix(R)
    return _mean([R[j][j] - R[0][j] for j in range(1, t)])


def just_after(R: list[list[float]]) -> float:
    """Mean accuracy on each document right after its own update."""
    t = check_matrix(R)
    return sum(R[j + 1][j] for j in range(t)) / t


def retention(R: list[list[float]]) -> float | None:
    """Mean over documents 0..T-2 of R[T][j] / R[j + 1][j]: the share of what was known right after a
    document's update that is still known at the end (documents never answered right are left out)."""
    t = check_matrix(R)
    return _mean([R[t][j] / R[j + 1][j] for j in range(t - 1) if R[j + 1][j] > 0])


def summary(R: list[list[float]]) -> dict:
    return {"acc": acc(R), "bwt": bwt(R), "fwt": fwt(R), "retention": retention(R), "just_after": just_after(R),
            "base": sum(R[0]) / len(R[0]), "first_column": [row[0] for row in R]}
