"""A grader learned from GPT-4.1's verdicts: logistic regression over a few of ``grader_features``.

The model ships as plain JSON (the features it reads, standardisation, coefficients, decision threshold
and how it was trained), written by ``scripts/train_grader.py``. JSON rather than a pickled scikit-learn
object: loading it runs no code, and a dot product per answer is faster than a scikit-learn call on
one row, so grading needs neither scikit-learn nor numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from seal.domains.knowledge.grader_features import FEATURE_NAMES, features
from seal.domains.knowledge.grading import denies_gold

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "assets" / "learned_grader.json"
_FIELDS = ("features", "mean", "scale", "coef", "intercept", "threshold")


def model_version(model: dict) -> str:
    """A short fingerprint of what decides the grades: a retrained model gets a new version."""
    decisive = json.dumps({k: model[k] for k in _FIELDS}, sort_keys=True)
    return hashlib.sha256(decisive.encode()).hexdigest()[:12]


class LearnedGrader:
    """Correct when the model's probability that GPT-4.1 says "correct" reaches its threshold and the
    answer does not deny the gold (``denies_gold``: too rare in the verdicts to be learned)."""

    name = "learned"

    def __init__(self, path: str | Path = DEFAULT_MODEL) -> None:
        try:
            model = json.loads(Path(path).read_text())
            missing = [k for k in _FIELDS if k not in model]
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read the learned grader's model {path}: {err}") from err
        if missing:
            raise ValueError(f"learned grader model {path} lacks {', '.join(missing)}")
        sizes = {len(model[k]) for k in ("features", "mean", "scale", "coef")}
        if not set(model["features"]) <= set(FEATURE_NAMES) or len(sizes) != 1:
            raise ValueError(f"learned grader model {path} was trained on other features; retrain it "
                             "with scripts/train_grader.py")
        self._columns = [FEATURE_NAMES.index(name) for name in model["features"]]
        self.version = model_version(model)
        self.training = model.get("training", {})
        # Fold the standardisation into the weights once: w·(x - mean)/scale + b = (w/scale)·x + b'.
        self._weights = [c / s for c, s in zip(model["coef"], model["scale"])]
        self._bias = model["intercept"] - sum(w * m for w, m in zip(self._weights, model["mean"]))
        self._threshold = model["threshold"]

    def probability(self, question: str, gold: str, prediction: str) -> float:
        vector = features(question, gold, prediction)
        logit = self._bias + sum(w * vector[c] for w, c in zip(self._weights, self._columns))
        return 1.0 / (1.0 + math.exp(-max(min(logit, 60.0), -60.0)))

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        if not prediction.strip() or denies_gold(question, gold, prediction):
            return False
        return self.probability(question, gold, prediction) >= self._threshold
