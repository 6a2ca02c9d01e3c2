"""seal.domains.knowledge.data: documents, JSONL questions, SQuAD files, and the paper's evaluation split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seal.domains.knowledge.data import (
    EVAL_SIZE,
    MAX_DOCUMENT_CHARS,
    DataError,
    Passage,
    Question,
    load_document,
    load_questions,
    load_squad,
    split_eval,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad"
needs_squad = pytest.mark.skipif(not (SHARED / "squad_val.json").is_file(), reason="shared SQuAD data not present")


# ----------------------------------------------------------------------------------------------- documents


def test_document_title_from_file_name_and_text_stripped(tmp_path):
    path = tmp_path / "orrin_canal-history.txt"
    path.write_text("\n  The Orrin Canal opened in 1843.\nIt joins the Tesk.  \n\n", encoding="utf-8")
    p = load_document(path)
    assert p == Passage("orrin canal history", "The Orrin Canal opened in 1843.\nIt joins the Tesk.")
    assert p.questions == ()
    assert load_document(str(path), title="The Orrin Canal").title == "The Orrin Canal"


def test_document_keeps_unicode(tmp_path):
    path = tmp_path / "café.txt"
    path.write_text("Ångström — 東京 ✓", encoding="utf-8")
    assert load_document(path) == Passage("café", "Ångström — 東京 ✓")


@pytest.mark.parametrize("content", [b"", b"   \n\t\r\n  "])
def test_empty_or_whitespace_document(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="empty") as err:
        load_document(path)
    assert str(path) in str(err.value)


def test_huge_document(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("a" * (MAX_DOCUMENT_CHARS + 1), encoding="utf-8")
    with pytest.raises(DataError, match=f"{MAX_DOCUMENT_CHARS:,}") as err:
        load_document(path)
    assert str(path) in str(err.value)
    path.write_text(" " + "a" * MAX_DOCUMENT_CHARS + "\n", encoding="utf-8")  # exactly at the limit after strip
    assert len(load_document(path).context) == MAX_DOCUMENT_CHARS


def test_non_utf8_document(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8") as err:
        load_document(path)
    assert str(path) in str(err.value) and "byte 3" in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_document(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a directory; give a file"):
        load_document(tmp_path)


def test_a_leading_byte_order_mark_is_dropped(tmp_path):
    (tmp_path / "doc.txt").write_bytes(b"\xef\xbb\xbfThe canal opened in 1843.\n")
    (tmp_path / "q.jsonl").write_bytes(b'\xef\xbb\xbf{"question": "When?", "answer": "1843"}\n')
    assert load_document(tmp_path / "doc.txt").context == "The canal opened in 1843."
    assert load_questions(tmp_path / "q.jsonl")[0].question == "When?"


# ----------------------------------------------------------------------------------------------- questions


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_questions_jsonl(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [
        json.dumps({"question": " When did it open? ", "answer": "1843 ", "extra": 1}),
        "",
        "   ",
        json.dumps({"question": "Où?", "answer": "Lune"}, ensure_ascii=False),
    ])
    assert load_questions(path) == (Question("When did it open?", "1843"), Question("Où?", "Lune"))


def test_bad_json_line_is_named(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [
        json.dumps({"question": "a?", "answer": "b"}),
        "",
        '{"question": "c?", "answer": ',
    ])
    with pytest.raises(DataError, match="invalid JSON") as err:
        load_questions(path)
    assert f"{path}:3" in str(err.value)


@pytest.mark.parametrize(
    "line",
    [
        json.dumps({"question": "a?"}),
        json.dumps({"answer": "b"}),
        json.dumps({"question": "a?", "answer": ""}),
        json.dumps({"question": "  ", "answer": "b"}),
        json.dumps({"question": "a?", "answer": None}),
        json.dumps(["a?", "b"]),
        json.dumps("a?"),
    ],
)
def test_missing_or_bad_fields(tmp_path, line):
    path = _jsonl(tmp_path / "q.jsonl", [json.dumps({"question": "ok?", "answer": "ok"}), line])
    with pytest.raises(DataError) as err:
        load_questions(path)
    assert f"{path}:2" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_questions_file(tmp_path, content):
    path = tmp_path / "q.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match="no questions"):
        load_questions(path)


def test_non_utf8_questions(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"question": "\xff?", "answer": "x"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        load_questions(path)


# ----------------------------------------------------------------------------------------------- SQuAD


def test_load_squad_small_file(tmp_path):
    data = [
        {"title": "Orrin_Canal", "context": " The canal opened in 1843. ",
         "questions": [{"question": "When?", "answer": "1843"}, {"question": "What?", "answer": "a canal"}]},
        {"title": "Lune", "context": "Lune is a harbour.", "questions": []},
        {"context": "No title and no questions."},
    ]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    passages = load_squad(path)
    assert passages == [
        Passage("Orrin_Canal", "The canal opened in 1843.", (Question("When?", "1843"), Question("What?", "a canal"))),
        Passage("Lune", "Lune is a harbour.", ()),
        Passage("", "No title and no questions.", ()),
    ]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"title": "x"}, "list of passages"),
        ([{"title": "x"}], "[0]"),
        ([{"title": "x", "context": "c", "questions": {}}], "'questions' must be a list"),
        ([{"title": "x", "context": "c", "questions": []}, {"context": "  "}], "[1] is empty"),
        ([{"title": "x", "context": "c", "questions": [{"question": "q"}]}], "[0].questions[0]"),
    ],
)
def test_load_squad_errors(tmp_path, data, fragment):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_squad(path)
    assert fragment in str(err.value)


def test_load_squad_invalid_json(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('[\n{"title": "x",\n', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON"):
        load_squad(path)


def test_split_eval_is_a_seeded_partition():
    passages = [Passage(f"t{i}", f"c{i}") for i in range(EVAL_SIZE + 37)]
    ev, rest = split_eval(passages)
    assert (len(ev), len(rest)) == (EVAL_SIZE, 37)
    assert sorted(ev + rest, key=lambda p: int(p.title[1:])) == passages
    assert ev[:10] != passages[:10]  # shuffled, not a prefix
    assert split_eval(list(passages)) == (ev, rest)
    assert passages[0].title == "t0"  # the input list is not shuffled in place


@needs_squad
def test_split_eval_on_the_papers_data_matches_its_evaluation_order():
    passages = load_squad(SHARED / "squad_val.json")
    assert len(passages) == 2067
    ev, rest = split_eval(passages)
    assert (len(ev), len(rest)) == (200, 1867)
    assert sum(len(p.questions) for p in ev) == 974
    assert {p.context for p in ev}.isdisjoint(p.context for p in rest)
    base = json.loads((SHARED / "synthetic" / "base_val.json").read_text(encoding="utf-8"))
    assert len(base) == 200
    assert ev[0].context == base[0]["context"].strip()
    assert ev[0].title == base[0]["title"]
    # the whole order, not just the first passage, is the one the paper's self-edits were written for
    assert [p.context for p in ev] == [b["context"].strip() for b in base]
