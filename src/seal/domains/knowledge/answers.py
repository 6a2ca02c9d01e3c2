"""The closed-book answer protocol: what part of a generation is the answer, and how answers are scored.

A small model that has memorised a passage answers every question by reciting it, and a grader that
reads 48 tokens of recitation finds the gold words in it often enough to report "learning" (a no-model
control that answers with the passage's opening scored 23 % that way). So:

- the model is asked for a short, direct answer, and only `graded_answer` of what it wrote is graded:
  its first line, then its first sentence, then at most `MAX_ANSWER_WORDS` words. SQuAD's gold answers
  are short (95 % have at most 13 words), and a sentence that states one fact fits in 24 words;
- an answer that is also given, word for word, to another question of the same document with another
  gold answer is *generic*: it says the same thing whatever is asked, so it is not credited for either
  (`credit`), even where both golds happen to lie in it (a recited opening sentence can hold several).
  Two questions with the same gold may share an answer;
- every score also reports the `recitation` rate (answers that copy a run of `RECITATION_WORDS` or more
  words of the document that is not the gold answer itself) and the `identical` rate (answers given word
  for word to another question of the same document), so that a reader sees recitation even where the
  grader does not credit it, and the `unrecited` accuracy: credited answers that recite nothing. A model
  that memorised its passage recites the sentence that holds the gold and is credited for it; `unrecited`
  counts only what it says in its own words, the part of the accuracy that no recitation explains.
"""

from __future__ import annotations

import re
from collections import Counter

from seal.domains.knowledge.grading import exact_match, f1_score, normalize_answer

MAX_ANSWER_WORDS = 24
RECITATION_WORDS = 10
# A sentence ends at . ! ? after a word, then space and what starts a sentence ("3.5" does not end one).
_SENTENCE_END = re.compile(r"(?<=[a-z0-9%)\]\"”'][.!?])\s+(?=[A-Z0-9\"“(])")
_WORD = re.compile(r"\w+")


def sentences(text: str) -> list[str]:
    """A text's sentences, split where `graded_answer` ends one."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def graded_answer(text: str) -> str:
    """The part of a generated answer that is graded: first non-empty line, first sentence, word cap."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    sentence = _SENTENCE_END.split(line, maxsplit=1)[0]
    return " ".join(sentence.split()[:MAX_ANSWER_WORDS])


def words(text: str) -> list[str]:
    """Lower-cased words, punctuation dropped: the unit of the recitation test and of matching text to sentences."""
    return _WORD.findall(text.lower())


def recites(answer: str, document: str, gold: str = "", run: int = RECITATION_WORDS) -> bool:
    """Whether `answer` copies `run` or more consecutive words of `document` (case and punctuation ignored)
    beyond the gold answer: quoting a long gold span word for word is answering, not reciting."""
    doc, key = _spaced(document), _spaced(gold)
    return any(w in doc and w not in key for w in _windows(words(answer), run))


def _spaced(text: str) -> str:
    """A text's words between single spaces, with a space at each end, so a run is found only as whole words."""
    return " " + " ".join(words(text)) + " "


def _windows(text_words: list[str], run: int) -> list[str]:
    """Every `run` consecutive words, spaced as `_spaced` writes them; the i-th starts at word i."""
    return [" " + " ".join(text_words[i : i + run]) + " " for i in range(len(text_words) - run + 1)]


def copied_share(texts: list[str], document: str, run: int = RECITATION_WORDS) -> float:
    """The share of the words of `texts` that lie in a run of `run` or more consecutive words of `document`, as
    `recites` counts a run: how much of a self-edit is the passage copied out rather than restated. A generator
    that learns to copy its passage teaches its updates to recite, so ReST-EM and `learn` report it."""
    copied = total = 0
    doc = _spaced(document)
    for text in texts:
        covered = _copied_words(words(text), doc, run)
        copied, total = copied + sum(covered), total + len(covered)
    return copied / total if total else 0.0


def copied_spans(text: str, document: str, run: int = RECITATION_WORDS) -> list[tuple[int, int]]:
    """The character spans of `text` that copy a run of `run` or more consecutive words of `document` (the words
    `copied_share` counts), from the first copied word's start to the last one's end."""
    found = list(_WORD.finditer(text))  # matched before lower-casing: lower() may change a text's length
    covered = _copied_words([m.group().lower() for m in found], _spaced(document), run)
    spans: list[tuple[int, int]] = []
    for i, (match, copied) in enumerate(zip(found, covered)):
        if copied and i and covered[i - 1]:
            spans[-1] = (spans[-1][0], match.end())
        elif copied:
            spans.append(match.span())
    return spans


def _copied_words(text_words: list[str], spaced_document: str, run: int) -> list[bool]:
    """Per word of a text, whether it lies in a run of `run` or more consecutive words of the document."""
    covered = [False] * len(text_words)
    for i, window in enumerate(_windows(text_words, run)):
        if window in spaced_document:
            covered[i : i + run] = [True] * run
    return covered


def credit(correct: list[bool], answers: list[str], golds: list[str]) -> list[bool]:
    """Grader verdicts with generic answers uncredited: an answer text (normalised) given to questions with
    different golds, or wrong for any question it is given to, is credited for none of them. Golds of which one
    holds the other ("1852", "It was founded in 1852") are one answer: two questions asking the same fact."""
    keys = [normalize_answer(a) for a in answers]
    golds_of: dict[str, list[str | None]] = {}
    for key, gold, ok in zip(keys, golds, correct):
        golds_of.setdefault(key, []).append(_spaced(gold) if ok else None)
    return [ok and _one_answer(golds_of[k]) for k, ok in zip(keys, correct)]


def _one_answer(golds: list[str | None]) -> bool:
    """Whether spaced golds (None: the answer was wrong there) all name one answer: the longest holds each."""
    if None in golds:
        return False
    longest = max(golds, key=len)
    return all(gold in longest for gold in golds)


def score_answers(grader, document: str, questions, generations: list[str]) -> list[dict]:
    """Per-question records of the protocol: the raw generation, the graded answer, the grader's verdict
    (`judged`), the credited verdict (`correct`), F1 / exact match, recitation and repetition flags."""
    answers = [graded_answer(g) for g in generations]
    judged = [bool(a) and bool(grader(q.question, q.answer, a)) for q, a in zip(questions, answers)]
    counts = Counter(normalize_answer(a) for a in answers)
    return [
        {
            "question": q.question,
            "gold": q.answer,
            "prediction": g,
            "answer": a,
            "judged": j,
            "correct": c,
            "f1": f1_score(a, q.answer),
            "em": exact_match(a, q.answer),
            "recites": recites(a, document, q.answer),
            "identical": bool(a) and counts[normalize_answer(a)] > 1,
        }
        for q, g, a, j, c in zip(questions, generations, answers, judged, credit(judged, answers, [q.answer for q in questions]))
    ]


METRICS = ("accuracy", "f1", "em", "recitation", "identical", "unrecited")


def summary(details: list[dict]) -> dict[str, float]:
    """Means over questions of the protocol's metrics (accuracy is the credited verdict; unrecited, the credited
    verdicts of answers that do not recite)."""
    n = len(details)
    return {"accuracy": sum(d["correct"] for d in details) / n, "f1": sum(d["f1"] for d in details) / n,
            "em": sum(d["em"] for d in details) / n, "recitation": sum(d["recites"] for d in details) / n,
            "identical": sum(d["identical"] for d in details) / n,
            "unrecited": sum(d["correct"] and not d["recites"] for d in details) / n}


def answers_table(answers: list[dict]) -> list[str]:
    """Markdown rows of graded answers (KnowledgeDomain.score details): question, gold, graded answer, marks."""
    lines = ["| question | gold | answer | |", "|---|---|---|---|"]
    for d in answers:
        marks = ("✓" if d["correct"] else "✗") + (" R" if d["recites"] else "") + (" =" if d["identical"] else "")
        cells = [d["question"], d["gold"], d["answer"] or "(empty)", marks]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return lines
