"""`seal bench forgetting` on the tiny model: matrix arithmetic, the run directory, resume, the CLI."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from seal.bench import transfer
from seal.bench.forgetting import ForgettingBenchConfig, interim, run_bench, sequences
from seal.cli import main
from seal.config import EvalConfig, InnerConfig, ModelConfig, SamplingConfig
from seal.memory import MemoryConfig
from seal.memory.config import ProbeConfig

PASSAGES = [
    {"title": "Harrow Mill", "context": "Harrow Mill grinds barley for the village of Penn. It was rebuilt in 1902 after a fire.",
     "questions": [{"question": "When was Harrow Mill rebuilt?", "answer": "1902"}]},
    {"title": "Penn", "context": "Penn is a hill village whose weavers sell wool at the autumn fair.",
     "questions": [{"question": "What do the weavers of Penn sell?", "answer": "wool"},
                   {"question": "When is the fair?", "answer": "autumn"}]},
    {"title": "Corr Lake", "context": "Corr Lake is a deep lake where trout are caught each spring by the villagers.",
     "questions": [{"question": "What fish are caught in Corr Lake?", "answer": "trout"}]},
    {"title": "Vattna Glacier", "context": "The Vattna Glacier covers the northern plateau of Esk. It has retreated "
     "four kilometres since 1890.", "questions": [{"question": "Since when has the glacier retreated?", "answer": "1890"}]},
]


def test_matrix_measures_by_hand():
    R = [[0.2, 0.1, 0.0],   # untouched
         [0.8, 0.3, 0.0],   # after passage 1
         [0.6, 0.9, 0.4],   # after passage 2
         [0.4, 0.6, 1.0]]   # after passage 3
    assert transfer.acc(R) == pytest.approx((0.4 + 0.6 + 1.0) / 3)
    assert transfer.bwt(R) == pytest.approx(((0.4 - 0.8) + (0.6 - 0.9)) / 2)
    assert transfer.fwt(R) == pytest.approx(((0.3 - 0.1) + (0.4 - 0.0)) / 2)
    assert transfer.just_after(R) == pytest.approx((0.8 + 0.9 + 1.0) / 3)
    assert transfer.retention(R) == pytest.approx((0.4 / 0.8 + 0.6 / 0.9) / 2)
    assert transfer.summary(R)["first_column"] == [0.2, 0.8, 0.6, 0.4]
    assert transfer.bwt([[0.0], [1.0]]) is None and transfer.acc([[0.0], [1.0]]) == 1.0
    assert transfer.retention([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]) is None  # nothing known to retain
    with pytest.raises(ValueError, match="T \\+ 1 rows"):
        transfer.acc([[0.1, 0.2], [0.3, 0.4]])


@pytest.fixture
def squad(tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(PASSAGES))
    return path


def config(model_dir, squad, **kw) -> ForgettingBenchConfig:
    memory = MemoryConfig(model=ModelConfig(name=str(model_dir)), sampling=SamplingConfig(max_new_tokens=12),
                          inner=InnerConfig(rank=2, alpha=4, epochs=2, lr=1e-2), gate=False,
                          eval=EvalConfig(max_new_tokens=6, grader="containment"), probe=ProbeConfig(data=""),
                          consolidate_every=2)
    return ForgettingBenchConfig(**{"data": str(squad), "documents": 2, "sequences": 2, "memory": memory, **kw})


def test_sequences_are_disjoint_and_reproducible(tiny_model_dir, squad):
    cfg = config(tiny_model_dir, squad)
    first, again = sequences(cfg), sequences(cfg)
    assert [[p.title for p in s] for s in first.values()] == [[p.title for p in s] for s in again.values()]
    titles = [p.title for s in first.values() for p in s]
    assert len(titles) == len(set(titles)) == 4
    # a run from the second sequence on draws the very passages the whole run gives sequence 1
    assert {1: [p.title for p in first[1]]} == {
        s: [p.title for p in seq] for s, seq in sequences(config(tiny_model_dir, squad, first_sequence=1,
                                                                 sequences=1)).items()}
    with pytest.raises(ValueError, match="need 6 passages"):
        sequences(config(tiny_model_dir, squad, documents=3))
    with pytest.raises(ValueError, match="need 6 passages"):
        sequences(config(tiny_model_dir, squad, first_sequence=1))


def test_bench_writes_matrix_report_plots_and_resumes(scrambled_model_dir, squad, tmp_path):
    cfg = config(scrambled_model_dir, squad, strategies=["merge", "router"])
    out = tmp_path / "run"
    results = run_bench(cfg, out)
    rows = {r["strategy"]: r for r in results["strategies"]}
    assert list(rows) == ["merge", "router"]
    for r in rows.values():
        assert r["sequences"] == 2 and r["learns"] == 4 and r["accepted"] == 1.0
        assert len(r["R"]) == 3 and all(len(row) == 2 for row in r["R"])
        assert 0.0 <= r["acc"] <= 1.0 and r["disk_mb"] > 0
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 2 * 2 * 3
    # the matrix in results is the mean of the logged rows
    merge_final = [s["row"] for s in steps if s["strategy"] == "merge" and s["step"] == 2]
    assert rows["merge"]["R"][2] == pytest.approx([sum(c) / 2 for c in zip(*merge_final)])
    # router: every learned document is held apart, and questions about the not-yet-learned one go nowhere
    router_step1 = [s for s in steps if s["strategy"] == "router" and s["step"] == 1]
    assert all([p["held_apart"] for p in s["answers"]] == [True, False] for s in router_step1)
    assert rows["router"]["routing"]["questions_held"] > 0 and rows["merge"]["routing"] is None
    report = (out / "report.md").read_text()
    assert "| reference (SEAL, Qwen2.5-7B, merge) | 64 | 24.7% |" in report and "| router | 2 |" in report
    assert all(0.0 <= r["final_recitation"] <= 1.0 and 0.0 <= r["final_identical"] <= 1.0 for r in rows.values())
    assert "## router, sequence 2: " in (out / "answers.md").read_text()
    for name in ("config.yaml", "results.json", "plots/heatmaps.png", "plots/curves.png"):
        assert (out / name).is_file()

    # killed after the last learn but before its step was logged: the rerun measures, never learns again
    (out / "results.json").unlink()
    (out / "metrics.jsonl").write_text("\n".join(json.dumps(s) for s in steps[:-1]) + "\n")
    learns = (out / "memories" / "router-1" / "learns.jsonl").read_text()
    assert main(["bench", "status", str(out)]) == 0  # the table so far of a killed run
    again = run_bench(cfg, out)
    assert (out / "memories" / "router-1" / "learns.jsonl").read_text() == learns
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(steps)
    assert again["strategies"][1]["R"] == rows["router"]["R"]


def test_runs_on_different_sequences_pool_into_the_whole_run(scrambled_model_dir, squad, tmp_path, capsys):
    whole = run_bench(config(scrambled_model_dir, squad, strategies=["router"]), tmp_path / "whole")
    for s in (0, 1):
        run_bench(config(scrambled_model_dir, squad, strategies=["router"], first_sequence=s, sequences=1),
                  tmp_path / f"part{s}")
    pooled, _ = interim(tmp_path / "part0", tmp_path / "part1")
    assert pooled["strategies"][0]["sequences"] == 2
    assert pooled["strategies"][0]["R"] == whole["strategies"][0]["R"]
    assert main(["bench", "status", str(tmp_path / "part0"), str(tmp_path / "part1")]) == 0
    assert re.search(r"│ router +│ 2 +│", capsys.readouterr().err)  # both parts' sequences in one row
    with pytest.raises(ValueError, match="both ran router sequence 0"):
        interim(tmp_path / "whole", tmp_path / "part0")
    other = config(scrambled_model_dir, squad, strategies=["router"], first_sequence=1, sequences=1, seed=5)
    run_bench(dataclasses.replace(other, documents=1), tmp_path / "other")
    with pytest.raises(ValueError, match="differ in more than their sequences"):
        interim(tmp_path / "part0", tmp_path / "other")


def test_cli_refuses_a_bad_strategy_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "forgetting", "--strategy", "forget-nothing", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert not (tmp_path / "x").exists()


def test_sparse_rows_measure_what_the_measures_read(scrambled_model_dir, squad, tmp_path):
    """Whole rows only at the first and last steps: a step between asks the passage just learned and the next
    one, and every measure equals the dense run's (the learns are the same; only the answering is skipped)."""
    dense = run_bench(config(scrambled_model_dir, squad, documents=3, sequences=1, strategies=["merge"]),
                      tmp_path / "dense")["strategies"][0]
    sparse = run_bench(config(scrambled_model_dir, squad, documents=3, sequences=1, strategies=["merge"],
                              full_row_every=5), tmp_path / "sparse")["strategies"][0]
    measured = [[v is not None for v in row] for row in sparse["R"]]
    assert measured == [[True] * 3, [True, True, False], [False, True, True], [True] * 3]
    assert all(s == d for srow, drow in zip(sparse["R"], dense["R"]) for s, d in zip(srow, drow) if s is not None)
    for key in ("acc", "bwt", "fwt", "retention", "just_after", "base"):
        assert sparse[key] == pytest.approx(dense[key]), key
    assert "| 1 | " in (tmp_path / "sparse" / "report.md").read_text()
    assert (tmp_path / "sparse" / "plots" / "heatmaps.png").is_file()
    with pytest.raises(ValueError, match="full_row_every must be at least 1"):
        run_bench(config(scrambled_model_dir, squad, full_row_every=0), tmp_path / "bad")
