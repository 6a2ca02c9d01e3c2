"""The `seal` command's user errors: one line naming the input and the fix, exit 2, nothing left behind;
a killed `seal learn` restarts cleanly. In-process through `main`, or as a real process where a kill is involved."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import seal
from seal.cli import main

DOC = "The Orrin Canal joins the river Tesk to the harbour of Lune. It opened in 1843.\n"
QUIZ = '{"question": "When did the Orrin Canal open?", "answer": "1843"}\n'
SMALL = ["--set", "sampling.max_new_tokens=8", "--set", "inner.epochs=1", "--set", "eval.max_new_tokens=4",
         "--set", "inner.rank=2", "--set", "inner.alpha=4"]
TRAINS = ["--set", "prompt=none", "--set", "gate=false"]  # trains on the passage whatever the random model writes


@pytest.fixture
def inputs(tmp_path) -> tuple[Path, Path]:
    (tmp_path / "doc.txt").write_text(DOC, encoding="utf-8")
    (tmp_path / "quiz.jsonl").write_text(QUIZ, encoding="utf-8")
    return tmp_path / "doc.txt", tmp_path / "quiz.jsonl"


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def one_error(capsys, command: str) -> str:
    """The single line on stderr, which must be `seal COMMAND: error: ...`; nothing on stdout."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"seal {command}: error: ") and captured.out == ""
    return lines[0]


def learn(inputs, out, model, *extra) -> int:
    return main(["learn", str(inputs[0]), "--questions", str(inputs[1]), "--out", str(out), "--model", str(model),
                 *SMALL, *extra])


# ----------------------------------------------------------------------------------- learn: checked first


@pytest.mark.parametrize("device, message", [("tpu", "model.device 'tpu' is not a device; use auto, cpu, cuda"),
                                             ("meta", "model.device 'meta' is not supported")])
def test_learn_with_an_unknown_device(inputs, tmp_path, tiny_model_dir, capsys, device, message):
    assert learn(inputs, tmp_path / "run", tiny_model_dir, "--set", f"model.device={device}") == 2
    assert message in one_error(capsys, "learn")
    assert not (tmp_path / "run").exists()


def test_learn_out_that_cannot_be_a_run_directory_is_refused_before_the_model_loads(inputs, tmp_path, capsys):
    (tmp_path / "afile").write_text("mine\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    unwritable = Path("/sys/seal-test-run") if os.geteuid() == 0 else locked / "run"  # root writes anywhere else
    cases = [(tmp_path / "afile", "afile is a file, not a directory; choose another output directory"),
             (tmp_path / "afile" / "run", "afile/run lies under"),
             (unwritable, f"cannot write into {unwritable}")]
    for out, message in cases:  # a model that does not exist: the output directory is checked before any loading
        assert learn(inputs, out, "/no/such/model") == 2
        assert message in one_error(capsys, "learn")
    assert (tmp_path / "afile").read_text() == "mine\n" and not os.listdir(locked) and not unwritable.exists()


def test_learn_with_an_unknown_target_module_writes_nothing(inputs, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "new" / "run"
    assert learn(inputs, out, tiny_model_dir, *TRAINS, "--set", "inner.target_modules=nosuch_proj") == 2
    line = one_error(capsys, "learn")
    assert "inner.target_modules" in line and "'nosuch_proj'" in line and "q_proj" in line
    assert not (tmp_path / "new").exists()


def _refused_endpoint() -> str:
    with socket.socket() as s:  # a port nothing listens on once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_learn_failing_mid_run_removes_what_it_wrote(inputs, tmp_path, scrambled_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("SEAL_JUDGE_BASE_URL", _refused_endpoint())
    out = tmp_path / "run"
    out.mkdir()  # given empty: left empty
    # the scrambled model answers something, so grading the baseline calls the judge, which fails
    assert learn(inputs, out, scrambled_model_dir, "--set", "eval.grader=llm-judge") == 2
    assert "judge request to http://127.0.0.1:" in capsys.readouterr().err
    assert files_under(out) == set()


# --------------------------------------------------------------------------------- learn: killed, rerun


def start_learn_and_wait_for_its_baseline(inputs, out: Path, model_dir: Path) -> subprocess.Popen:
    """A real `seal learn` process with minutes of training ahead, once it has logged its baseline."""
    env = {**os.environ, "PYTHONPATH": str(Path(seal.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    slow = ["--set", "inner.epochs=5000"]
    proc = subprocess.Popen([sys.executable, "-m", "seal.cli", "learn", str(inputs[0]), "--questions", str(inputs[1]),
                             "--out", str(out), "--model", str(model_dir), *SMALL, *TRAINS, *slow],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            # a shell running the suite in the background ignores SIGINT, and children inherit
                            # that: give the learn process the default handling a terminal's Ctrl-C meets
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while '"baseline"' not in ((out / "metrics.jsonl").read_text() if (out / "metrics.jsonl").exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"learn ended or hung before it could be stopped: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    return proc


def test_learn_interrupted_with_ctrl_c_exits_130_and_removes_what_it_wrote(inputs, tmp_path, tiny_model_dir):
    proc = start_learn_and_wait_for_its_baseline(inputs, tmp_path / "new" / "run", tiny_model_dir)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", err.strip().splitlines()[-1])  # the bar's show-cursor code
    assert proc.returncode == 130 and last == "seal learn: interrupted"
    assert not (tmp_path / "new").exists()


def test_learn_killed_with_sigkill_restarts_cleanly_when_rerun(inputs, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    proc = start_learn_and_wait_for_its_baseline(inputs, out, tiny_model_dir)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert {"config.yaml", "metrics.jsonl"} <= files_under(out) and not (out / "result.json").exists()

    capsys.readouterr()
    assert learn(inputs, out, tiny_model_dir, *TRAINS) == 0
    assert "did not finish: starting it again" in " ".join(capsys.readouterr().err.split())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["baseline", "self_edit"]  # the killed run's records are gone
    assert json.loads((out / "result.json").read_text())["accepted"] is True
    assert "candidates" not in files_under(out)

    (out / "result.json").unlink()
    (out / "notes.txt").write_text("not seal's")  # not only a learn run's files: never deleted
    assert learn(inputs, out, tiny_model_dir, *TRAINS) == 2
    assert "is not empty" in one_error(capsys, "learn") and (out / "notes.txt").exists()


# --------------------------------------------------------------------------------------------- grade


def test_grade_a_directory_an_empty_file_and_a_bom(tmp_path, capsys):
    assert main(["grade", str(tmp_path)]) == 2
    assert f"{tmp_path} is a directory" in one_error(capsys, "grade")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert main(["grade", str(tmp_path / "empty.jsonl")]) == 2
    assert "empty.jsonl holds no records, so nothing was graded" in one_error(capsys, "grade")
    record = {"question": "When?", "gold": "1843", "prediction": "1843"}
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(record).encode() + b"\n")
    assert main(["grade", str(tmp_path / "bom.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out) == {**record, "correct": True}


def test_grade_with_an_unreachable_judge_names_the_endpoint_and_the_setting(tmp_path, capsys, monkeypatch):
    url = _refused_endpoint()
    monkeypatch.setenv("SEAL_JUDGE_BASE_URL", url)
    (tmp_path / "a.jsonl").write_text(json.dumps({"question": "q", "gold": "g", "prediction": "p"}) + "\n")
    assert main(["grade", str(tmp_path / "a.jsonl"), "--grader", "llm-judge"]) == 2
    line = one_error(capsys, "grade")
    assert f"{url}/chat/completions failed" in line and "Connection refused" in line and "SEAL_JUDGE_BASE_URL" in line


# ----------------------------------------------------------------------------------------------- ask


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("learned")
    (d / "doc.txt").write_text(DOC, encoding="utf-8")
    (d / "quiz.jsonl").write_text(QUIZ, encoding="utf-8")
    assert learn((d / "doc.txt", d / "quiz.jsonl"), d / "run", tiny_model_dir, *TRAINS) == 0
    return d / "run" / "adapter"


@pytest.fixture(scope="module")
def wider_model_dir(tmp_path_factory) -> Path:
    """A model of another shape, for an adapter that cannot fit it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from conftest import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("wider"))
    config = LlamaConfig.from_pretrained(path)
    config.hidden_size, config.intermediate_size = 48, 96
    LlamaForCausalLM(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(path).save_pretrained(path)
    return path


def test_ask_with_an_adapter_of_another_model(adapter, wider_model_dir, tmp_path, capsys):
    assert main(["ask", "When?", "--adapter", str(adapter), "--model", str(wider_model_dir)]) == 2
    line = one_error(capsys, "ask")
    assert f"{adapter} was trained for model" in line and "(its seal.json)" in line and "leave out --model" in line
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(adapter, bare)
    (bare / "seal.json").unlink()  # no record of its model: the shapes tell
    assert main(["ask", "When?", "--adapter", str(bare), "--model", str(wider_model_dir)]) == 2
    assert "does not fit model" in one_error(capsys, "ask")


def test_ask_with_a_malformed_seal_json_names_the_file(adapter, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(adapter, broken)
    (broken / "seal.json").write_text('{"model": ')
    assert main(["ask", "When?", "--adapter", str(broken)]) == 2
    assert f"{broken / 'seal.json'} is not valid JSON" in one_error(capsys, "ask")


# ------------------------------------------------------------------------------------- configs, inputs


def test_a_bad_yaml_config_names_the_file_and_line(inputs, tmp_path, tiny_model_dir, capsys):
    (tmp_path / "bad.yaml").write_text("inner:\n  lr: [1\n  epochs: 2\n")
    assert learn(inputs, tmp_path / "run", tiny_model_dir, "--config", str(tmp_path / "bad.yaml")) == 2
    line = one_error(capsys, "learn")
    assert f"{tmp_path / 'bad.yaml'}:3:" in line and "invalid YAML" in line and "from line 2" in line
    assert "<unicode string>" not in line and not (tmp_path / "run").exists()


def test_a_directory_where_a_file_belongs(inputs, tmp_path, tiny_model_dir, capsys):
    assert main(["learn", str(tmp_path), "--questions", str(inputs[1]), "--out", str(tmp_path / "run"),
                 "--model", str(tiny_model_dir)]) == 2
    assert f"{tmp_path} is a directory" in one_error(capsys, "learn")
    assert main(["bench", "status", str(inputs[0])]) == 2
    assert "is not a benchmark run" in one_error(capsys, "bench")


# ------------------------------------------------------------------------------ the sweep of other commands


@pytest.mark.parametrize("argv, message", [
    (["bench", "knowledge", "--passages", "0"], "config.passages: 0 is out of range (must be >= 1)"),
    (["bench", "knowledge", "--passages", "-1"], "config.passages: -1 is out of range"),  # once ran 199 passages
    (["bench", "arc", "--tasks", "{doc}"], "doc.txt:1: not valid JSON (Expecting value); expected ARC tasks"),
    (["train", "arc", "--tasks", "{doc}"], "doc.txt:1: not valid JSON"),
    (["train", "knowledge", "--set", "mask_copied=true", "--set", "drop_copied=true"],
     "drop_copied and mask_copied are exclusive"),
    (["train", "knowledge", "--set", "restem.sft.mode=full", "--set", "restem.sft.kl_to_base=0.5"],
     "sft.kl_to_base needs sft.mode=lora"),
    (["train", "knowledge", "--set", "restem.sft.kl_to_base=-1"], "kl_to_base: -1.0 is out of range (must be >= 0)"),
    (["bench", "arc", "--max-tasks", "0"], "config.max_tasks: 0 is out of range"),
    (["bench", "arc"], "no ARC tasks at runs/arc-filter-eval; expected a directory written by `seal bench arc-filter`"),
    (["bench", "forgetting", "--out", "{doc}"], "doc.txt is a file, not a directory"),
    (["learn", "{doc}", "--questions", "{quiz}", "--set", "inner.target_modules=[]"], "inner.target_modules is empty"),
    (["learn", "{doc}", "--questions", "{quiz}", "--config", "{dir}"], "is a directory"),
])
def test_other_user_errors_are_one_line_and_leave_nothing(inputs, tmp_path, tiny_model_dir, capsys, monkeypatch,
                                                         argv, message):
    monkeypatch.chdir(tmp_path)
    fill = {"doc": str(inputs[0]), "quiz": str(inputs[1]), "dir": str(tmp_path)}
    argv = [a.format(**fill) for a in argv] + (["--model", str(tiny_model_dir)] if argv[0] == "learn" else [])
    before = set(os.listdir(tmp_path))
    out = ["--out", str(tmp_path / "run")] if argv[0] == "learn" else []  # the others make runs/<kind>-<time>
    assert main(argv + out) == 2
    assert message in one_error(capsys, argv[0])
    assert set(os.listdir(tmp_path)) == before
