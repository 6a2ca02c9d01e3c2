"""Train the learned grader on the tune half of GPT-4.1's verdicts (``scripts/train_grader.py`` runs this).

Logistic regression on standardised ``grader_features``; its regularisation strength and decision
threshold are chosen by cross-validation grouped by passage title, so the choice, like the final
model, never sees a question of the held-out half or reuses one question across folds. The same data
and seed give the same JSON, byte for byte.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

from seal.domains.knowledge.grader_features import FEATURE_NAMES, features
from seal.domains.knowledge.verdicts import load_verdicts

STRENGTHS = (0.01, 0.03, 0.1, 0.3, 1.0)
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.3, 0.71, 0.05))


def _fit(x: np.ndarray, y: np.ndarray, strength: float) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(x)
    return scaler, LogisticRegression(C=strength, max_iter=5000).fit(scaler.transform(x), y)


def _cross_validated(x, y, groups, strength: float, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold probabilities of "correct"."""
    out = np.zeros(len(y))
    for train, test in GroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups):
        scaler, model = _fit(x[train], y[train], strength)
        out[test] = model.predict_proba(scaler.transform(x[test]))[:, 1]
    return out


def train(data: Path, seed: int = 0, folds: int = 5, limit: int | None = None) -> dict:
    """The learned grader's model as a JSON-ready dict; `limit` keeps the first rows of the tune half
    (for quick checks)."""
    rows = [r for r in load_verdicts(data)["tune"] if r["prediction"].strip()][:limit]
    x = np.array([features(r["question"], r["gold"], r["prediction"]) for r in rows])
    y = np.array([bool(r["gpt41_correct"]) for r in rows])
    groups = np.array([r["title"] for r in rows])
    if len(set(groups)) < folds or len(set(y)) < 2:
        raise ValueError(f"{data}: the tune half needs both verdicts and at least {folds} titles")

    cv = {}
    for strength in STRENGTHS:
        probability = _cross_validated(x, y, groups, strength, folds, seed)
        for threshold in THRESHOLDS:
            cv[(strength, threshold)] = float(np.mean((probability >= threshold) == y))
    strength, threshold = max(cv, key=lambda k: (cv[k], -abs(k[1] - 0.5)))
    scaler, model = _fit(x, y, strength)
    return {
        "name": "learned",
        "features": list(FEATURE_NAMES),
        "mean": [round(float(v), 8) for v in scaler.mean_],
        "scale": [round(float(v), 8) for v in scaler.scale_],
        "coef": [round(float(v), 8) for v in model.coef_[0]],
        "intercept": round(float(model.intercept_[0]), 8),
        "threshold": threshold,
        "training": {
            "data_sha256": hashlib.sha256(Path(data).read_bytes()).hexdigest(),
            "half": "tune",
            "rows": len(rows),
            "seed": seed,
            "folds": folds,
            "regularisation_C": strength,
            "cv_agreement": round(cv[(strength, threshold)], 4),
            "scikit_learn": sklearn.__version__,
        },
    }
