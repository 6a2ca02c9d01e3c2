"""Train the learned grader on the tune half of GPT-4.1's verdicts (``scripts/train_grader.py`` runs this).

Logistic regression on a few standardised ``grader_features``. Which features, the regularisation
strength and the decision threshold are all chosen by cross-validation grouped by passage title, so
no choice, like the final model, sees a question of the held-out half or reuses one question across
folds. The tune half holds only ~115 questions, each answered ~27 times: a feature that describes the
question rather than the answer lets a model learn those questions' verdicts by heart, so the full
set of 27 features agrees less with GPT-4.1 out of fold than a few chosen greedily
(``select_features``). The same data and seed give the same JSON, byte for byte.

Measured the same way and not kept, for no gain out of fold: gradient boosting and random forests
(scikit-learn) on these features, lenient's verdict as a feature, and the packaged MiniLM's cosine
similarities (answer vs gold, answer vs question + gold, and token-level max-similarity recall), which
also grade only ~60 answers per CPU second. Nor a cross-encoder: that MiniLM finetuned on (question
and gold, answer) pairs of 4/5 of the tune half's titles agreed on 79 % of the other fifth's verdicts
after two epochs, where this grader agrees on 93 %; ~90 questions are too few to teach it paraphrase,
and it grades ~30 answers per CPU second. Most remaining disagreements are paraphrases that need
world knowledge ("constant bitrate" for "uniform", "Conservative" for "Tory").
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
SELECTION_STRENGTH = 0.3
SELECTION_REPEATS = 3  # fold assignments (seeds) averaged per candidate: one split alone is noisy at ~55 titles
MIN_GAIN = 0.001  # a feature must raise cross-validated agreement by 0.1 point to join
MAX_FEATURES = 8


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


def _agreement(probability: np.ndarray, y: np.ndarray) -> dict[float, float]:
    return {threshold: float(np.mean((probability >= threshold) == y)) for threshold in THRESHOLDS}


def select_features(x, y, groups, folds: int, seed: int) -> list[int]:
    """Greedy forward selection: add the column that most raises out-of-fold agreement (at its best
    threshold, averaged over `SELECTION_REPEATS` fold assignments) until none adds `MIN_GAIN`."""
    chosen: list[int] = []
    best = 0.0
    while len(chosen) < MAX_FEATURES:
        gains = {}
        for column in (c for c in range(x.shape[1]) if c not in chosen):
            runs = [_cross_validated(x[:, chosen + [column]], y, groups, SELECTION_STRENGTH, folds, seed + r)
                    for r in range(SELECTION_REPEATS)]
            gains[column] = float(np.mean([max(_agreement(p, y).values()) for p in runs]))
        column = max(gains, key=lambda c: (gains[c], -c))
        if gains[column] < best + MIN_GAIN:
            break
        chosen.append(column)
        best = gains[column]
    return chosen


def train(data: Path, seed: int = 0, folds: int = 5, limit: int | None = None) -> dict:
    """The learned grader's model as a JSON-ready dict; `limit` keeps the first rows of the tune half
    (for quick checks)."""
    rows = [r for r in load_verdicts(data)["tune"] if r["prediction"].strip()][:limit]
    x = np.array([features(r["question"], r["gold"], r["prediction"]) for r in rows])
    y = np.array([bool(r["gpt41_correct"]) for r in rows])
    groups = np.array([r["title"] for r in rows])
    if len(set(groups)) < folds or len(set(y)) < 2:
        raise ValueError(f"{data}: the tune half needs both verdicts and at least {folds} titles")

    columns = select_features(x, y, groups, folds, seed)
    x = x[:, columns]
    cv = {}
    for strength in STRENGTHS:
        for threshold, agreement in _agreement(_cross_validated(x, y, groups, strength, folds, seed), y).items():
            cv[(strength, threshold)] = agreement
    strength, threshold = max(cv, key=lambda k: (cv[k], -abs(k[1] - 0.5)))
    scaler, model = _fit(x, y, strength)
    return {
        "name": "learned",
        "features": [FEATURE_NAMES[c] for c in columns],
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
            "candidate_features": len(FEATURE_NAMES),
            "regularisation_C": strength,
            "cv_agreement": round(cv[(strength, threshold)], 4),
            "scikit_learn": sklearn.__version__,
        },
    }
