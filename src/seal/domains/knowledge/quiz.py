"""A document's self-quiz: question-answer pairs the model writes about a document it is about to learn.

A real user hands a memory a document without questions, yet the gate must judge whether an update
taught the document. The model is asked for short-answer questions about the document (open book), and
a pair is kept only if it is a question (it ends with "?", written in the document's letters) whose answer
is really in the document: a span of it (up to case, punctuation and articles), and short (a few words, like
the closed-book answers it will be compared with). These pairs are held out of the update and asked
closed-book before and after it.

When the model writes fewer usable pairs than asked (small models often do), the quiz is filled up
with cloze questions built from the document's own sentences (a number or name blanked out), so that
the gate always has something to measure. Each question records its source ("model" or "cloze").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from seal.domains.knowledge.data import Passage, Question
from seal.domains.knowledge.grading import normalize_answer
from seal.domains.knowledge.selfedit import split_self_edit
from seal.generation import chat_prompt, generate

QUIZ_PROMPT = ("Write {n} short questions that test the key facts of the following passage. After each question "
               "write its answer in a few words, on a line that starts with 'Answer:'.\n\n"
               "Passage:\n{title}\n{context}\n\n")
QUIZ_START = "Question 1: "  # the reply is started for the model, so that it writes pairs, not an essay
MAX_ANSWER_WORDS = 8
_PAIR = re.compile(r"^Question: (?P<q>.+)\nAnswer: (?P<a>.+)$", re.S)
_NUMBERING = re.compile(r"^(?:\d+[.)]|[-*])\s+")  # "1. What ...": the model numbered its question once more
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# two digits or more: a lone digit was often a formula's ("1 + 1/___"); none after a colon, which in Wikipedia's
# text marks a citation's page ("her weight.:110 He was"), a number no question can be about
_NUMBER = re.compile(r"(?<!:)\b\d[\d,.]*\d\b")
_NAME = re.compile(r"(?<=\s)[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*")
_WORD = re.compile(r"[^\W\d_]{4,}")


@dataclass(frozen=True)
class QuizQuestion(Question):
    source: str = "model"  # model | cloze | user


def _words(text: str) -> set[str]:
    return set(normalize_answer(text).split())


def usable_pairs(passage: Passage, text: str) -> list[tuple[str, str]]:
    """(question, answer) pairs of a quiz text whose short answer the document supports."""
    raw = f"{passage.title} {passage.context}"
    document = f" {normalize_answer(raw)} "
    pairs = []
    for item in split_self_edit(text):
        match = _PAIR.match(item)
        if not match:
            continue
        question, answer = _NUMBERING.sub("", match["q"].strip()), match["a"].strip().rstrip(".")
        span = normalize_answer(answer)
        if not span or len(answer.split()) > MAX_ANSWER_WORDS or f" {span} " not in document:
            continue
        if not question.endswith("?") or any(c.isalpha() and not c.isascii() and c not in raw for c in question):
            continue  # a statement, or a question in other letters than the document's (a stray "1206年")
        asked = _words(question)
        if all(any(word.startswith(a) for word in asked) for a in span.split()):
            continue  # the question gives its own answer away (also as "Kenya's" for "Kenya")
        pairs.append((question, answer))
    return pairs


def cloze_questions(passage: Passage, n: int) -> list[QuizQuestion]:
    """Up to n fill-in-the-blank questions from sentences spread over the document: a number, else a name
    that does not open the sentence, else the sentence's longest word, blanked out; never a word that the
    rest of the sentence repeats (a recited sentence would then contain the answer whatever it filled in)."""
    sentences = [s for s in _SENTENCE.split(passage.context) if len(s.split()) >= 6]
    found = []
    for sentence in sentences:
        candidates = [*_NUMBER.finditer(sentence), *_NAME.finditer(sentence),
                      *sorted(_WORD.finditer(sentence), key=lambda m: -len(m.group(0)))]
        for match in candidates:
            blanked = sentence[: match.start()] + "___" + sentence[match.end():]
            rest = re.findall(r"\w+", blanked.lower())
            if not any(word.startswith(a) for a in re.findall(r"\w+", match.group(0).lower()) for word in rest):
                found.append(QuizQuestion(f"Fill in the blank: {blanked}", match.group(0), "cloze"))
                break
    if len(found) <= n:
        return found
    step = len(found) / n
    return [found[int(i * step)] for i in range(n)]


def self_quiz(model, tokenizer, passage: Passage, n: int, *, samples: int, temperature: float,
              max_new_tokens: int, seed: int) -> tuple[QuizQuestion, ...]:
    """n held-out questions about `passage`, from `samples` quiz texts the model writes (see `quiz_of`)."""
    prompt = chat_prompt(tokenizer, QUIZ_PROMPT.format(n=n, title=passage.title, context=passage.context))
    texts = generate(model, tokenizer, [prompt + QUIZ_START], max_new_tokens=max_new_tokens,
                     temperature=temperature, num_samples=samples, seed=seed)[0]
    return quiz_of(passage, [QUIZ_START + text for text in texts], n)


def quiz_of(passage: Passage, texts: list[str], n: int) -> tuple[QuizQuestion, ...]:
    """n questions: the usable pairs of the quiz texts first (deduplicated), then cloze questions."""
    quiz, seen = [], set()
    for text in texts:
        for question, answer in usable_pairs(passage, text):
            key = normalize_answer(question)
            if key not in seen and len(quiz) < n:
                seen.add(key)
                quiz.append(QuizQuestion(question, answer, "model"))
    for q in cloze_questions(passage, n):
        if len(quiz) < n and normalize_answer(q.question) not in seen:
            quiz.append(q)
    return tuple(quiz)
