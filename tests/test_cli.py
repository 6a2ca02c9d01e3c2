"""The `seal` command, run in-process on the tiny model: learn, ask, grade, models, and its user errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from seal import models
from seal.cli import main
from seal.config import EvalConfig, LearnConfig, load_config
from seal.domains.knowledge.data import Passage, Question
from seal.domains.knowledge.domain import KnowledgeDomain, grader_for
from seal.domains.knowledge.grading import describe, get_grader
from seal.domains.knowledge.prompts import answer_prompt
from seal.generation import PIECE_SEPARATOR, chat_prompt, generate
from seal.inner.lora import load_adapter

DOC = "The Orrin Canal joins the river Tesk to the harbour of Lune. It opened in 1843.\n"
QUESTIONS = [
    {"question": "When did the Orrin Canal open?", "answer": "1843"},
    {"question": "Which river does the Orrin Canal join?", "answer": "the Tesk"},
]
SMALL = ["--set", "sampling.max_new_tokens=16", "--set", "inner.epochs=1", "--set", "eval.max_new_tokens=8",
         "--set", "inner.rank=4", "--set", "inner.alpha=8"]


@pytest.fixture(scope="module")
def model_dir(scrambled_model_dir) -> Path:
    return scrambled_model_dir


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("inputs")
    (d / "orrin_canal.txt").write_text(DOC, encoding="utf-8")
    (d / "quiz.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    return d / "orrin_canal.txt", d / "quiz.jsonl"


def _learn(inputs, model_dir, out, *extra) -> int:
    doc, quiz = inputs
    return main(["learn", str(doc), "--questions", str(quiz), "--out", str(out), "--model", str(model_dir),
                 *SMALL, *extra])


@pytest.fixture(scope="module")
def gated_run(inputs, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gated"
    return _learn(inputs, model_dir, out), out  # the default self-edit: three lists of implications


@pytest.fixture(scope="module")
def ungated_run(inputs, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ungated"
    # prompt=none trains on the passage whatever the random model writes, so this run always has an update
    return _learn(inputs, model_dir, out, "--set", "gate=false", "--set", "prompt=none", "--title", "Orrin Canal"), out


def _questions() -> tuple[Question, ...]:
    return tuple(Question(q["question"], q["answer"]) for q in QUESTIONS)


def _files(path: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------------------------- learn


def test_learn_writes_a_complete_run_directory(gated_run, model_dir):
    rc, out = gated_run
    assert rc == 0
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    for key in ("baseline_accuracy", "adapted_accuracy", "accepted", "self_edits", "seconds"):
        assert key in result
    assert result["error"] is None and result["title"] == "orrin canal" and result["gate"] is True
    assert result["grader"] == describe(get_grader())
    assert 0 <= result["baseline_accuracy"] <= 1 and 0 <= result["adapted_accuracy"] <= 1
    assert result["accepted"] == (result["adapted_accuracy"] > result["baseline_accuracy"])
    assert (out / "adapter").is_dir() == result["accepted"]
    assert not (out / "candidates").exists()
    assert result["seconds"] >= sum(result["timings"].values()) > 0
    (edit,) = result["self_edits"]  # sampling.num_samples defaults to 1
    assert edit["index"] == 0 and isinstance(edit["text"], str) and edit["text"]
    assert len(edit["text"].split(PIECE_SEPARATOR)) == 3  # sampling.pieces: three samples trained together
    assert edit["sequences"] >= 2 and edit["train"]["steps"] >= 1
    assert edit["adapted_accuracy"] == result["adapted_accuracy"]

    # the baseline is what the base model really answers
    model, tok = models.load(str(model_dir))
    passage = Passage("orrin canal", DOC.strip(), _questions())
    base = KnowledgeDomain(eval=EvalConfig(max_new_tokens=8)).evaluate(model, tok, passage)
    assert [d["prediction"] for d in result["baseline_answers"]] == [d["prediction"] for d in base.details]
    assert any(d["prediction"] for d in base.details)  # non-empty answers, so the comparison means something
    assert result["baseline_accuracy"] == base.value

    config = load_config(LearnConfig, out / "config.yaml")
    assert config.model.name == str(model_dir)
    assert (config.sampling.max_new_tokens, config.inner.epochs, config.eval.max_new_tokens) == (16, 1, 8)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["event"] for r in records] == ["baseline", "self_edit"]
    assert records[0]["accuracy"] == result["baseline_accuracy"]
    assert records[1]["adapted_accuracy"] == result["adapted_accuracy"]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# seal learn: orrin canal") and f"{result['baseline_accuracy']:.1%}" in report
    assert f"{edit['items']} items ({edit['copied']:.0%} of their words copied from the document)" in report
    assert (out / "plots" / "learn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learn_without_gate_always_keeps_a_peft_adapter(ungated_run, model_dir):
    rc, out = ungated_run
    assert rc == 0
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert result["accepted"] is True and result["gate"] is False and result["title"] == "Orrin Canal"
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert json.loads((adapter / "seal.json").read_text()) == {"model": str(model_dir), "title": "Orrin Canal"}
    # the saved adapter answers exactly as the adapted model did during the run
    model, tok = models.load(str(model_dir))
    adapted = load_adapter(model, adapter)
    passage = Passage("Orrin Canal", DOC.strip(), _questions())
    score = KnowledgeDomain(eval=EvalConfig(max_new_tokens=8)).evaluate(adapted, tok, passage)
    chosen = result["self_edits"][result["chosen_self_edit"]]
    assert [d["prediction"] for d in chosen["answers"]] == [d["prediction"] for d in score.details]
    assert score.value == result["adapted_accuracy"]


def test_rerun_into_a_finished_directory_changes_nothing(gated_run, inputs, model_dir, capsys):
    _, out = gated_run
    before = _files(out)
    capsys.readouterr()
    assert _learn(inputs, model_dir, out, "--set", "gate=false") == 2
    err = capsys.readouterr().err
    assert "seal learn: error:" in err and "finished run" in err and str(out) in err
    assert _files(out) == before


def _bad_inputs(tmp_path: Path, doc: bytes | None = None, quiz: str | None = None) -> tuple[Path, Path]:
    (tmp_path / "doc.txt").write_bytes(DOC.encode() if doc is None else doc)
    (tmp_path / "q.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in QUESTIONS) if quiz is None else quiz, encoding="utf-8")
    return tmp_path / "doc.txt", tmp_path / "q.jsonl"


@pytest.mark.parametrize(
    "doc, quiz, extra, message",
    [
        ("caf\u00e9".encode("latin-1"), None, [], "not UTF-8"),
        (b"", None, [], "is empty"),
        (b" \n\t\n", None, [], "is empty"),
        (None, '{"question": "When?", "answer": "1843"}\n{"question": \n', [], "q.jsonl:2: invalid JSON"),
        (None, '{"question": "When?"}\n', [], "q.jsonl:1"),
        (None, "", [], "no questions"),
        (None, None, ["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (None, None, ["--model", "/no/such/model"], "does not exist"),
        (None, None, ["--set", "inner.lr=fast"], "inner.lr"),
        (None, None, ["--set", "inner.epochs=0"], "inner.epochs"),
        (None, None, ["--set", "inner.lrr=1"], "lrr"),
        (None, None, ["--set", "inner.method=full"], "inner.method must be 'lora'"),
        (None, None, ["--set", "prompt=bogus"], "unknown self-edit prompt 'bogus'"),
        (None, None, ["--set", "eval.grader=bogus"], "unknown grader 'bogus'"),
        (None, None, ["--set", "model.dtype=float99"], "dtype"),
        (None, None, ["--set", "model.backend=fast"], "model.backend"),
        (None, None, ["--set", "model.backend=vllm"], "backend 'vllm'"),  # not installed, or no GPU here
        (None, None, ["--config", "/no/such/config.yaml"], "no config file /no/such/config.yaml"),
    ],
)
def test_learn_user_errors_exit_2_and_write_nothing(tmp_path, model_dir, capsys, doc, quiz, extra, message):
    inputs = _bad_inputs(tmp_path, doc, quiz)
    out = tmp_path / "run"
    rc = main(["learn", str(inputs[0]), "--questions", str(inputs[1]), "--out", str(out), "--model", str(model_dir),
               *SMALL, *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert "seal learn: error:" in err and message in err
    assert len(err.strip().splitlines()) == 1  # one clear line, no traceback
    assert not out.exists()


def test_missing_document_exits_2(tmp_path, model_dir, capsys):
    _, quiz = _bad_inputs(tmp_path)
    assert main(["learn", str(tmp_path / "nope.txt"), "--questions", str(quiz), "--out", str(tmp_path / "run"),
                 "--model", str(model_dir)]) == 2
    assert "nope.txt" in capsys.readouterr().err and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------- ask


def test_ask_with_an_adapter(ungated_run, model_dir, capsys):
    _, out = ungated_run
    question = "When did the Orrin Canal open?"
    capsys.readouterr()
    assert main(["ask", question, "--adapter", str(out / "adapter"), "--model", str(model_dir),
                 "--max-new-tokens", "8"]) == 0
    printed = capsys.readouterr().out
    model, tok = models.load(str(model_dir))
    adapted = load_adapter(model, out / "adapter")
    prompt = chat_prompt(tok, answer_prompt("Orrin Canal", question))  # title from the adapter's seal.json
    (expected,) = generate(adapted, tok, [prompt], max_new_tokens=8)[0]
    assert expected and printed == expected + "\n"
    # without --model, the adapter's own base model (recorded in seal.json) is used
    assert main(["ask", question, "--adapter", str(out / "adapter"), "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out == printed


def test_ask_with_a_directory_that_is_not_an_adapter(tmp_path, model_dir, capsys):
    assert main(["ask", "q?", "--adapter", str(tmp_path), "--model", str(model_dir)]) == 2
    assert "not a PEFT adapter directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- grade


def _grade_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


RECORDS = [
    {"question": "When did the Orrin Canal open?", "gold": "1843", "prediction": "It opened in 1843.", "id": 1},
    {"question": "When did the Orrin Canal open?", "gold": "1843", "prediction": "In 1912.", "id": 2},
    {"question": "Which river?", "gold": "the Tesk", "prediction": "", "id": 3},
]


def test_grade_adds_correct(tmp_path, capsys):
    path = _grade_file(tmp_path, [json.dumps(r) for r in RECORDS[:2]] + ["", json.dumps(RECORDS[2])])
    assert main(["grade", str(path)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    grader = grader_for("default")
    assert out == [{**r, "correct": bool(grader(r["question"], r["gold"], r["prediction"]))} for r in RECORDS]
    assert [r["correct"] for r in out] == [True, False, False]


def test_grade_reads_stdin_and_takes_a_grader(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({**RECORDS[0], "prediction": "1843"}) + "\n"))
    assert main(["grade", "-", "--grader", "exact"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["correct"] is True


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"question": "q", "gold": "g", ', ":3: invalid JSON"),
        ('{"question": "q", "gold": "g"}', ":3: needs string fields"),
        ('["q", "g", "p"]', ":3: needs string fields"),
    ],
)
def test_grade_bad_line_prints_nothing(tmp_path, capsys, bad, message):
    path = _grade_file(tmp_path, [json.dumps(RECORDS[0]), json.dumps(RECORDS[1]), bad, json.dumps(RECORDS[2])])
    assert main(["grade", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err and str(path) in captured.err


def test_grade_errors(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    (tmp_path / "latin1.jsonl").write_bytes(json.dumps(RECORDS[0]).encode() + b"\n" + b'{"question": "caf\xe9"}\n')
    assert main(["grade", str(tmp_path / "latin1.jsonl")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "latin1.jsonl is not UTF-8" in captured.err
    path = _grade_file(tmp_path, [json.dumps(RECORDS[0])])
    assert main(["grade", str(path), "--grader", "bogus"]) == 2
    assert "unknown grader" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- models


def test_models_lists_the_embedded_models(capsys, monkeypatch, tmp_path):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for name, line in zip(models.EMBEDDED, lines):
        assert line.startswith(f"{name}")
        assert models.EMBEDDED[name].install in line
    assert "(default)" in lines[0] and models.DEFAULT_MODEL in lines[0]
    cached = models.cache_root() / "models" / models.DEFAULT_MODEL
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(": cached") and not lines[1].endswith("cached")


def test_models_prepare_unknown(capsys):
    assert main(["models", "--prepare", "bogus"]) == 2
    assert "unknown embedded model 'bogus'" in capsys.readouterr().err


def test_demo_user_error_leaves_no_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--model", "no-such-model"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert not any((tmp_path / "runs").glob("demo-*"))


def test_learn_replaces_an_unusable_self_edit_by_a_fresh_sample(monkeypatch):
    from seal import learn as learn_module
    from seal.config import LearnConfig
    from seal.domains.base import SelfEditError
    from seal.domains.knowledge.data import Passage
    from seal.domains.knowledge.domain import KnowledgeDomain

    scripted = {0: ["Imprecisions:", "- The Orrin Canal opened in 1843."], 1: ["Imprecisions:"], 2: ["- It joins the Tesk."]}
    calls = []

    def sample(model, tokenizer, domain, contexts, sampling, num_samples, seed):
        calls.append((num_samples, seed))
        return [scripted[seed - 7]]

    monkeypatch.setattr(learn_module, "sample_self_edits", sample)
    cfg = LearnConfig(seed=7)
    cfg.sampling.num_samples = 2
    tries = learn_module._sample_plans(None, None, KnowledgeDomain(), Passage("Orrin Canal", "It opened in 1843."), cfg)
    assert calls == [(2, 7), (1, 8), (1, 9)]  # one replacement per unusable sample, each with a seed of its own
    assert [t for t, _ in tries] == ["Imprecisions:", "- The Orrin Canal opened in 1843.", "Imprecisions:",
                                     "- It joins the Tesk."]
    assert [isinstance(p, SelfEditError) for _, p in tries] == [True, False, True, False]
    cfg.resample = 0
    calls.clear()
    assert len(learn_module._sample_plans(None, None, KnowledgeDomain(), Passage("Orrin Canal", "x"), cfg)) == 2
    assert calls == [(2, 7)]


def test_learn_with_drop_copied_resamples_a_self_edit_that_only_copies_and_reports_the_dropped(monkeypatch):
    from seal import learn as learn_module
    from seal.config import LearnConfig
    from seal.domains.base import SelfEditError
    from seal.domains.knowledge.data import Passage
    from seal.domains.knowledge.domain import KnowledgeDomain

    doc = Passage("Orrin Canal", "The Orrin Canal opened in 1843 and carried slate from the hills to the harbour at "
                                 "Tesk.")
    scripted = {0: [f"1. {doc.context}"], 1: [f"1. {doc.context}\n2. Slate boats used the canal from 1843."]}
    monkeypatch.setattr(learn_module, "sample_self_edits", lambda *args, seed, **kw: [scripted[seed]])
    cfg = LearnConfig(seed=0, drop_copied=True)
    tries = learn_module._sample_plans(None, None, KnowledgeDomain(drop_copied=True), doc, cfg)
    (_, unusable), (_, plan) = tries  # the copy alone is unusable and replaced by a fresh sample
    assert isinstance(unusable, SelfEditError) and "copy the passage" in str(unusable)
    assert plan.notes["dropped"] == 1 and len(plan.examples) == 2  # the passage and the one item of its own
    record = {"index": 0, "text": "", "items": 2, "copied": plan.notes["copied"], "dropped": 1,
              "metrics": dict.fromkeys(("accuracy", "f1", "em", "recitation", "identical", "unrecited"), 0.0)}
    result = {"title": doc.title, "model": "m", "baseline_metrics": record["metrics"], "adapted_metrics": None,
              "accepted": False, "seconds": 0.0, "timings": {}, "baseline_answers": [], "self_edits": [record]}
    report = learn_module._report(result)
    assert "### 1: 2 items (" in report and "1 of them copying it not trained" in report
