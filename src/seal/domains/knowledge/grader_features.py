"""What the learned grader sees of a (question, gold, prediction) triple: a short vector of numbers.

Each feature is a cue a human judge uses: how much of the gold the answer says (recall, F1,
containment, character overlap), whether it says it early and briefly or buries it in a page,
whether numbers agree, whether the answer negates or hedges, and whether it merely restates the
question. Everything here is plain Python over short strings and a word-frequency table, fast enough
to grade thousands of answers a second; ``FEATURE_NAMES`` fixes the order of the vector.
"""

from __future__ import annotations

import functools
import math
import re

from wordfreq import zipf_frequency

from seal.domains.knowledge.grading import (
    _content_words,
    _found,
    _gold_variants,
    _is_number,
    _negation_positions,
    _stem,
    _words,
    f1_score,
    gold_recall,
    normalize_answer,
)

_HEDGES = re.compile(
    r"\b(not (?:mentioned|specified|stated|known|clear|provided|given)|(?:do|does|did)n'?t (?:know|say|mention)|"
    r"no (?:information|mention|specific)|unclear|unknown|cannot (?:be )?determine|is not possible to)\b"
)
_YES_NO_START = re.compile(r"^(is|are|was|were|do|does|did|can|could|has|have|had|will|would|should)\b", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

FEATURE_NAMES: tuple[str, ...] = (
    "recall",
    "weighted_recall",
    "recall_first_sentence",
    "recall_with_question_words",
    "f1",
    "precision",
    "exact",
    "contains",
    "char_trigram_recall",
    "first_hit_position",
    "log_prediction_words",
    "log_gold_words",
    "sentences",
    "question_overlap",
    "novel_words",
    "gold_in_question",
    "gold_has_number",
    "gold_number_missing",
    "prediction_numbers_foreign",
    "prediction_negations",
    "negation_near_gold",
    "gold_negated",
    "question_negated",
    "negation_mismatch",
    "hedge",
    "yes_no_question",
    "answers_yes_or_no",
)


@functools.lru_cache(maxsize=1 << 16)
def rarity(word: str) -> float:
    """A gold word's weight in ``weighted_recall``: 8 minus its Zipf frequency in English, at least 0.5
    ("savanna" 5.2, "large" 2.6, "the" 0.5). Rare words tend to name the answer, common ones qualify it:
    "large amounts" says little of the gold "large areas"."""
    return max(0.5, 8.0 - zipf_frequency(word, "en"))


def _first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def _trigrams(text: str) -> set[str]:
    padded = f" {normalize_answer(text)} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def _first_hit(gold_tokens: list[str], prediction_stems: list[str]) -> int | None:
    """Index of the first prediction word that matches one of the gold's content words."""
    gold = set(gold_tokens)
    hits = {stem for stem in set(prediction_stems) if _found(stem, gold)}
    return next((i for i, stem in enumerate(prediction_stems) if stem in hits), None)


def features(question: str, gold: str, prediction: str) -> list[float]:
    """The vector in ``FEATURE_NAMES`` order; an empty prediction gives all zeros but its length cue."""
    prediction = prediction.strip()
    prediction_words = _words(prediction)
    gold_words = _words(gold)
    question_content = set(_content_words(question))
    prediction_content = _content_words(prediction)
    gold_content = _content_words(gold) or [_stem(w) for w in gold_words]
    gold_set = set(gold_content)

    variants = _gold_variants(gold)
    recall = max(gold_recall(question, v, prediction) for v in variants)
    weighted_recall = max(gold_recall(question, v, prediction, rarity) for v in variants)
    first = _first_sentence(prediction)
    recall_first = max(gold_recall(question, v, first) for v in variants)
    prediction_stems = [_stem(w) for w in prediction_words]
    prediction_tokens = set(prediction_stems)
    recall_all = sum(_found(t, prediction_tokens) for t in gold_content) / len(gold_content) if gold_content else 0.0

    f1 = f1_score(prediction, gold)
    pred_norm, gold_norm = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = len(set(pred_norm) & set(gold_norm))
    precision = common / len(pred_norm) if pred_norm else 0.0
    contains = bool(pred_norm and gold_norm) and f" {' '.join(gold_norm)} " in f" {' '.join(pred_norm)} "
    gold_grams = _trigrams(gold)
    char_recall = len(gold_grams & _trigrams(prediction)) / len(gold_grams) if gold_grams else 0.0

    hit = _first_hit(gold_content, prediction_stems)
    first_hit_position = 1.0 if hit is None else hit / max(len(prediction_words), 1)

    n_content = max(len(prediction_content), 1)
    question_overlap = sum(w in question_content for w in prediction_content) / n_content
    novel = sum(w not in question_content and w not in gold_set for w in prediction_content) / n_content
    gold_in_question = sum(t in question_content for t in gold_content) / len(gold_content) if gold_content else 0.0

    gold_numbers = {w for w in gold_words if _is_number(w)}
    prediction_numbers = {w for w in prediction_words if _is_number(w)}
    lowered = prediction.lower()
    negation_positions = _negation_positions(prediction)
    near = hit is not None and any(abs(i - hit) <= 4 for i in negation_positions)
    question_negated = bool(_negation_positions(question))

    return [
        recall,
        weighted_recall,
        recall_first,
        recall_all,
        f1,
        precision,
        float(bool(pred_norm) and pred_norm == gold_norm),
        float(contains),
        char_recall,
        first_hit_position,
        math.log1p(len(prediction_words)),
        math.log1p(len(gold_words)),
        float(len([s for s in _SENTENCE_END.split(prediction) if s.strip()])),
        question_overlap,
        novel,
        gold_in_question,
        float(bool(gold_numbers)),
        float(bool(gold_numbers - prediction_numbers)),
        float(bool(gold_numbers) and bool(prediction_numbers - gold_numbers)),
        float(len(negation_positions)),
        float(near),
        float(bool(_negation_positions(gold))),
        float(question_negated),
        float(question_negated != bool(negation_positions)),
        float(bool(_HEDGES.search(lowered))),
        float(bool(_YES_NO_START.match(question.strip()))),
        float(bool(re.match(r"^\W*(yes|no)\b", lowered))),
    ]
