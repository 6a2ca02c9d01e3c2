"""The learned grader: the shipped JSON model loads (test_grading checks its grades on our examples),
bad model files are refused, and the training script reproduces the shipped model from the shared
verdicts and its seed."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from seal.domains.knowledge.grader_features import FEATURE_NAMES, features, rarity
from seal.domains.knowledge.grader_training import train
from seal.domains.knowledge.grading import get_grader
from seal.domains.knowledge.learned_grader import DEFAULT_MODEL, LearnedGrader, model_version

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = ROOT.parent / "shared" / "data" / "grader" / "gpt41_verdicts_dev.jsonl"
needs_verdicts = pytest.mark.skipif(not VERDICTS.is_file(), reason="shared GPT-4.1 verdicts not present")


def test_shipped_model_loads_small_and_versioned():
    grader = get_grader("learned")
    shipped = json.loads(DEFAULT_MODEL.read_text())
    assert grader.name == "learned" and grader.version == model_version(shipped)
    assert len(grader.version) == 12 and DEFAULT_MODEL.stat().st_size < 5_000_000
    assert shipped["training"]["half"] == "tune" and shipped["training"]["rows"] > 1000
    assert set(shipped["features"]) <= set(FEATURE_NAMES)


def test_probability_rises_with_the_gold_in_the_answer():
    grader = get_grader("learned")
    right = grader.probability("Who founded the guild?", "Anna Varga", "Anna Varga founded it.")
    wrong = grader.probability("Who founded the guild?", "Anna Varga", "It was founded by Peter Holm.")
    assert 0 <= wrong < 0.5 <= right <= 1


def test_features_follow_their_names():
    vector = features("How many moons?", "two", "It has 2 moons, not 3.")
    assert len(vector) == len(FEATURE_NAMES)
    named = dict(zip(FEATURE_NAMES, vector))
    assert named["recall"] == 1.0 and named["gold_has_number"] == 1.0  # "two" reads as "2"
    assert named["gold_number_missing"] == 0.0 and named["prediction_numbers_foreign"] == 1.0
    assert named["prediction_negations"] == 1.0 and named["question_negated"] == 0.0


def test_weighted_recall_counts_rare_gold_words_more():
    assert rarity("savanna") > rarity("large") > rarity("the") == 0.5
    named = lambda prediction: dict(zip(FEATURE_NAMES, features("What covers it?", "savanna or large desert", prediction)))  # noqa: E731
    rare, common = named("A savanna."), named("A large lake.")
    assert rare["recall"] == common["recall"] == pytest.approx(1 / 3)  # one gold word of three each
    assert rare["weighted_recall"] > 1 / 3 > common["weighted_recall"] > 0


def test_bad_model_files_are_refused(tmp_path):
    shipped = json.loads(DEFAULT_MODEL.read_text())
    other = tmp_path / "other.json"
    for features_read in (["telepathy"] * len(shipped["coef"]), shipped["features"] + ["recall"]):
        other.write_text(json.dumps(shipped | {"features": features_read}))
        with pytest.raises(ValueError, match="other features"):
            LearnedGrader(other)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({k: v for k, v in shipped.items() if k != "coef"}))
    with pytest.raises(ValueError, match="lacks coef"):
        LearnedGrader(partial)
    with pytest.raises(ValueError, match="cannot read"):
        LearnedGrader(tmp_path / "missing.json")


@needs_verdicts
def test_training_script_reproduces_the_shipped_model(tmp_path):
    out = tmp_path / "model.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_grader.py"), "--data", str(VERDICTS),
                          "--seed", "0", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == DEFAULT_MODEL.read_bytes()
    assert LearnedGrader(out).version in run.stdout


def test_training_selects_features_that_separate_the_verdicts(tmp_path):
    rng = random.Random(0)
    names = ["Varga", "Holm", "Marsk", "Teral", "Oskend", "Corvin", "Ostra", "Brennock", "Caddow", "Salle"]
    rows = []
    for title in range(20):
        gold, other = rng.sample(names, 2)
        for says_gold in (True, False, True, False):
            prediction = f"It was {gold if says_gold else other}, in {rng.randint(1900, 1999)}."
            rows.append({"title": f"t{title}", "question": "Who was it?", "gold": gold, "prediction": prediction,
                         "gpt41_correct": says_gold})
    data = tmp_path / "verdicts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = train(data, seed=0)
    assert 1 <= len(model["features"]) <= 3 and model["training"]["cv_agreement"] == 1.0
    out = tmp_path / "model.json"
    out.write_text(json.dumps(model))
    grader = LearnedGrader(out)
    assert grader("Who was it?", "Lina", "Lina, surely.") and not grader("Who was it?", "Lina", "Peter, surely.")


def test_training_script_rejects_missing_data(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_grader.py"), "--data",
                          str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "m.json")], capture_output=True, text=True)
    assert run.returncode == 2 and "does not exist" in run.stderr and not (tmp_path / "m.json").exists()
