"""Graders that decide whether a closed-book answer matches the gold answer.

SEAL grades knowledge-incorporation answers with an LLM judge (GPT-4.1 asked a
yes/no question). That judge is slow, costs money and needs the network, so
this module also provides offline graders; ``benchmarks/grader_agreement.py``
measures how often each one agrees with GPT-4.1's verdicts, and
``DEFAULT_GRADER`` is the offline grader that agreed best on held-out data.
Three more live in their own modules and are built on request: ``learned``
(``learned_grader.py``, fitted to GPT-4.1's verdicts), ``local-judge``
(``local_judge.py``, the yes/no judge on a local model) and ``llm-judge``
(``llm_judge.py``, the same judge behind an OpenAI-compatible endpoint).

An empty prediction always grades False: callers report generation failures
separately, so a grader never has to guess what an empty answer means.
"""

from __future__ import annotations

import functools
import os
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Protocol


class GradingError(RuntimeError):
    """A grade could not be produced (endpoint failure, unparseable reply)."""


class Grader(Protocol):
    name: str
    version: str  # what else decides its grades (threshold, model); recorded beside the name in results

    def __call__(self, question: str, gold: str, prediction: str) -> bool: ...


# --- SQuAD v1.1 metrics ------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1: lower-case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def f1_score(prediction: str, gold: str) -> float:
    """SQuAD token F1 between the normalised prediction and gold."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


# --- lenient matching: how much of the gold does the prediction say? ---------

_STOPWORDS = frozenset(
    """a an the of in on at to for by with and or from as is are was were be been
    being that this these those it its which who whom what when where why how
    their there they he she his her him them we our us you your i my me do does
    did has have had not no but into over under than then so such can could
    would should will may might also about""".split()
)
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve "
        "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORDS |= {
    word: f"{value}{suffix}"
    for value, word, suffix in zip(
        range(1, 11),
        "first second third fourth fifth sixth seventh eighth ninth tenth".split(),
        ("st", "nd", "rd") + ("th",) * 7,
    )
}
_NUMBER_WORDS |= {"bce": "bc", "ce": "ad"}  # "900 BCE" and "900 BC" name one year
_SUFFIXES = ("ies", "es", "s", "ing", "ed", "ly")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3})")
_PARENTHESISED = re.compile(r"(.+?)\s*\((.+)\)\W*")


@functools.lru_cache(maxsize=1 << 16)  # graders stem the same few thousand words again and again
def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _words(text: str, pattern: str = r"\w+") -> list[str]:
    """Lower-cased words; punctuation splits words, "10,000" -> "10000", "two" -> "2"."""
    words = re.findall(pattern, _THOUSANDS_COMMA.sub("", text.lower()))
    return [_NUMBER_WORDS.get(w, w) for w in words]


def _content_words(text: str) -> list[str]:
    return [_stem(w) for w in _words(text) if w not in _STOPWORDS]


def _is_number(token: str) -> bool:
    return any(ch.isdigit() for ch in token)


def _shares_prefix(a: str, b: str) -> bool:
    shared = len(os.path.commonprefix((a, b)))
    return shared >= 4 and shared >= 0.8 * min(len(a), len(b))


def _found(token: str, prediction_tokens: set[str]) -> bool:
    """Numbers must match exactly; words may share a long enough prefix
    ("Japan"/"Japanese", "construct"/"construction")."""
    if token in prediction_tokens:
        return True
    return not _is_number(token) and any(_shares_prefix(token, other) for other in prediction_tokens)


_YEAR = re.compile(r"\d{3,4}")
_CENTURY, _MILLENNIUM = ({_stem(w) for w in words} for words in (("century", "centuries"), ("millennium", "millennia")))
_DECADE = re.compile(r"\d+0s")


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _periods_stated(prediction_words: list[str], gold_words: list[str]) -> set[str]:
    """The periods that the prediction's years state, in the terms the gold uses: for a gold in centuries
    "1566" says "16th century", in millennia "900 BCE" says "1st millennium", in decades "1975" says
    "1970s" (GPT-4.1 accepts "written in 1566" for the key "the 16th century")."""
    gold_stems = {_stem(w) for w in gold_words}
    years = [int(w) for w in prediction_words if _YEAR.fullmatch(w)]
    out = set()
    for period, span in ((_CENTURY, 100), (_MILLENNIUM, 1000)):
        if years and period & gold_stems:
            out |= period | {_ordinal((year - 1) // span + 1) for year in years}
    if any(_DECADE.fullmatch(w) for w in gold_words):
        out |= {_stem(f"{year // 10 * 10}s") for year in years}
    return out


def gold_recall(question: str, gold: str, prediction: str, weight: Callable[[str], float] | None = None) -> float:
    """Fraction of the gold's content words that the prediction contains.

    Gold words the question already contains are skipped (restating the
    question earns nothing) unless nothing would be left. A gold number
    missing from the prediction makes the recall 0. `weight` (of a gold
    word as written, lower-cased) makes it a weighted fraction; every word
    counts 1 without it.
    """
    prediction_words = _words(prediction)
    prediction_tokens = {_stem(w) for w in prediction_words}
    gold_words = [w for w in _words(gold) if w not in _STOPWORDS] or _words(gold)
    prediction_tokens |= _periods_stated(prediction_words, gold_words)
    question_tokens = set(_content_words(question))
    terms = [(w, _stem(w)) for w in gold_words]
    terms = [(w, t) for w, t in terms if t not in question_tokens] or terms
    if not terms or not prediction_tokens:
        return 0.0
    found = [_found(t, prediction_tokens) for _, t in terms]
    if any(_is_number(t) and not hit for (_, t), hit in zip(terms, found)):
        return 0.0
    weights = [weight(w) if weight else 1.0 for w, _ in terms]
    return sum(x for x, hit in zip(weights, found) if hit) / sum(weights)


_NEGATIONS = frozenset("not no never none nor neither without cannot".split())
# Words that may stand between a negation and what it denies: "not the Marigold", "not even in 2016".
_BRIDGES = frozenset("a an the even in on at of by for to".split())
_WORD_WITH_APOSTROPHE = r"[\w']+"  # keeps "didn't" whole


def _is_negation(word: str) -> bool:
    return word in _NEGATIONS or word.endswith("n't")


def _negation_positions(text: str) -> list[int]:
    """Word indices of "not", "never", "didn't", ... in `text`."""
    return [i for i, w in enumerate(_words(text, _WORD_WITH_APOSTROPHE)) if _is_negation(w)]


def denies_gold(question: str, gold: str, prediction: str) -> bool:
    """Whether every mention of the gold in the prediction is denied ("It was not the Marigold"), while
    neither the question nor the gold is itself negative. GPT-4.1's verdicts hold too few such answers
    to learn this from, and the judge's rule is explicit: an answer that contradicts the key is wrong."""
    if _negation_positions(question) or _negation_positions(gold):
        return False
    gold_tokens = set(_content_words(gold))
    words = _words(prediction, _WORD_WITH_APOSTROPHE)
    hits = [_found(_stem(w), gold_tokens) for w in words]
    mentions = [i for i, hit in enumerate(hits) if hit and not (i and hits[i - 1])]  # where each mention starts

    def denied(i: int) -> bool:
        i -= 1
        while i >= 0 and words[i] in _BRIDGES:
            i -= 1
        return i >= 0 and _is_negation(words[i])

    return bool(mentions) and all(denied(i) for i in mentions)


def _gold_variants(gold: str) -> list[str]:
    """The gold, plus both sides of a "name (alias)" gold such as "Foo Corp (FC)"."""
    match = _PARENTHESISED.fullmatch(gold.strip())
    return [gold, *match.groups()] if match else [gold]


# --- graders ------------------------------------------------------------------

# Thresholds chosen on the tuning half of benchmarks/grader_agreement.py's split.
F1_THRESHOLD = 0.1
LENIENT_THRESHOLD = 0.6


@dataclass(frozen=True)
class ExactGrader:
    name = "exact"
    version = "1"

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        return bool(normalize_answer(prediction)) and exact_match(prediction, gold)


@dataclass(frozen=True)
class ContainmentGrader:
    """The normalised gold occurs in the normalised prediction as whole words."""

    name = "containment"
    version = "1"

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        pred, ref = normalize_answer(prediction), normalize_answer(gold)
        return bool(pred and ref) and f" {ref} " in f" {pred} "


@dataclass(frozen=True)
class F1Grader:
    threshold: float = F1_THRESHOLD
    name = "f1"

    @property
    def version(self) -> str:
        return f"threshold {self.threshold:g}"

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        return bool(normalize_answer(prediction)) and f1_score(prediction, gold) >= self.threshold


@dataclass(frozen=True)
class LenientGrader:
    """Enough of the gold's content words (all of its numbers) appear in the prediction.

    Tolerates inflection, number formats, extra detail and partial multi-word
    golds; see ``gold_recall``. An answer that denies the gold is wrong (``denies_gold``).
    """

    threshold: float = LENIENT_THRESHOLD
    name = "lenient"

    @property
    def version(self) -> str:
        return f"3, threshold {self.threshold:g}"  # 2: an answer that denies the gold is wrong; 3: years state centuries

    def __call__(self, question: str, gold: str, prediction: str) -> bool:
        return not denies_gold(question, gold, prediction) and any(
            gold_recall(question, variant, prediction) >= self.threshold
            for variant in _gold_variants(gold)
        )


JUDGE_PROMPT = """\
You are checking an answer to a quiz question against the answer key.

Question: {question}
Answer key: {gold}
Answer to check: {prediction}

Judge only by the answer key, not by your own knowledge. The answer is correct \
if it states what the answer key states, in any wording; extra detail is fine \
as long as it does not contradict the key. It is incorrect if it gives a \
different answer, contradicts the key, or never commits to the key's answer.

Reply with exactly one word: yes if the answer is correct, no otherwise."""


def _learned(**options) -> Grader:
    from seal.domains.knowledge.learned_grader import LearnedGrader  # its features build on this module

    return LearnedGrader(**options)


def _llm_judge(**options) -> Grader:
    from seal.domains.knowledge.llm_judge import LLMJudge  # imports the openai client: only on request

    return LLMJudge(**options)


def _local_judge(**options) -> Grader:
    from seal.domains.knowledge.local_judge import LocalJudge  # loads a language model: only on request

    return LocalJudge(**options)


_GRADERS = {
    "lenient": LenientGrader,
    "containment": ContainmentGrader,
    "exact": ExactGrader,
    "f1": F1Grader,
    "llm-judge": _llm_judge,
    "learned": _learned,
    "local-judge": _local_judge,
}
GRADER_NAMES: tuple[str, ...] = tuple(_GRADERS)
# learned beat lenient on the held-out half, 88.59 % against 88.40 % (27 answers against 19 where they
# differ: not a significant margin, McNemar p = 0.30), and grades the recitation cases as labelled.
DEFAULT_GRADER = "learned"


def describe(grader: Grader) -> dict[str, str]:
    """What every run records about the grader behind its numbers."""
    return {"name": grader.name, "version": grader.version}


def get_grader(name: str = DEFAULT_GRADER, **options) -> Grader:
    """Build the grader registered as ``name``; ``options`` go to its constructor."""
    try:
        factory = _GRADERS[name]
    except KeyError:
        raise ValueError(f"unknown grader {name!r}; valid names: {', '.join(GRADER_NAMES)}") from None
    return factory(**options)
