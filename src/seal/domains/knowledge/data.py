"""Passages and questions: SQuAD-format JSON, plain-text documents, JSONL question files.

Inputs are checked on the way in (UTF-8, non-empty, bounded size, required fields) so that a bad file
fails with a message naming the file and line, before any model is loaded.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

MAX_DOCUMENT_CHARS = 20_000  # ~5k tokens: beyond that a single update plan stops fitting the inner loop
EVAL_SEED = 42
EVAL_SIZE = 200


class DataError(ValueError):
    """An input file that cannot be used as it is."""


@dataclass(frozen=True)
class Question:
    question: str
    answer: str


@dataclass(frozen=True)
class Passage:
    title: str
    context: str
    questions: tuple[Question, ...] = field(default_factory=tuple)


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except IsADirectoryError as e:
        raise DataError(f"{path} is a directory; give a file") from e
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from e
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark at the start (some Windows editors write one) is dropped
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from e


def _question(obj: object, where: str) -> Question:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object with 'question' and 'answer'")
    q, a = obj.get("question"), obj.get("answer")
    if not isinstance(q, str) or not q.strip() or not isinstance(a, str) or not a.strip():
        raise DataError(f"{where}: 'question' and 'answer' must be non-empty strings")
    return Question(q.strip(), a.strip())


def check_document(text: str, where: str) -> str:
    text = text.strip()
    if not text:
        raise DataError(f"{where} is empty")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise DataError(
            f"{where} has {len(text):,} characters; the limit is {MAX_DOCUMENT_CHARS:,} (split it into several documents)"
        )
    return text


def load_document(path: str | Path, title: str | None = None) -> Passage:
    """A plain UTF-8 text file as a passage; the title defaults to the file name."""
    path = Path(path)
    text = check_document(read_text(path), str(path))
    return Passage(title or path.stem.replace("_", " ").replace("-", " ").strip(), text)


def load_questions(path: str | Path) -> tuple[Question, ...]:
    """Questions from JSONL, one `{"question": ..., "answer": ...}` per line."""
    path = Path(path)
    questions = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: invalid JSON ({e.msg})") from e
        questions.append(_question(obj, f"{path}:{n}"))
    if not questions:
        raise DataError(f"{path} contains no questions")
    return tuple(questions)


def load_squad(path: str | Path) -> list[Passage]:
    """Passages in SEAL's SQuAD layout: `[{title, context, questions: [{question, answer}]}]`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no SQuAD file {path}; set SEAL_DATA to the directory holding squad/, or give the file "
                        "with --set data=FILE")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of passages")
    passages = []
    for i, item in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("context"), str):
            raise DataError(f"{where}: expected an object with 'title', 'context' and 'questions'")
        qs = item.get("questions", [])
        if not isinstance(qs, list):
            raise DataError(f"{where}: 'questions' must be a list")
        passages.append(
            Passage(
                str(item.get("title", "")),
                check_document(item["context"], where),
                tuple(_question(q, f"{where}.questions[{j}]") for j, q in enumerate(qs)),
            )
        )
    return passages


def split_eval(passages: list[Passage]) -> tuple[list[Passage], list[Passage]]:
    """(evaluation, rest): the paper's 200 evaluation passages and the others, for training and tuning."""
    shuffled = list(passages)
    random.Random(EVAL_SEED).shuffle(shuffled)
    return shuffled[:EVAL_SIZE], shuffled[EVAL_SIZE:]
