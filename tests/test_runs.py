"""seal.runs: run directories, metrics records, finished vs resumable runs, fresh run names."""

from __future__ import annotations

import json
import threading

import pytest
import yaml

from seal.bench.forgetting import ForgettingBenchConfig
from seal.config import LearnConfig, load_config, to_dict
from seal.runs import CorruptRecordsError, Run, RunExistsError, atomic_write, default_run_dir


def _cfg() -> LearnConfig:
    return load_config(LearnConfig, overrides=["inner.lr=3e-4", "gate=false"])


def test_new_run_writes_config_and_plots_dir(tmp_path):
    run = Run(tmp_path / "a" / "b", _cfg())
    assert run.path == tmp_path / "a" / "b"
    assert (run.path / "plots").is_dir()
    assert yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8")) == to_dict(_cfg())
    assert load_config(LearnConfig, run.path / "config.yaml") == _cfg()
    assert run.records() == [] and not run.metrics_path.exists()


def test_log_and_records(tmp_path):
    run = Run(tmp_path / "r", _cfg())
    run.log({"event": "baseline", "accuracy": 0.25})
    run.log({"event": "self_edit", "index": 0, "accuracy": 0.5})
    run.log({"event": "self_edit", "index": 1, "accuracy": 0.0, "note": "ü"})
    lines = run.metrics_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(isinstance(json.loads(line)["time"], float) for line in lines)
    assert [r["index"] for r in run.records(event="self_edit")] == [0, 1]
    assert run.records(event="self_edit", index=1)[0]["note"] == "ü"
    assert run.records(event="baseline")[0]["accuracy"] == 0.25
    assert run.records(event="missing") == []
    assert len(run.records()) == 3


def test_finished_run_is_never_reused(tmp_path):
    run = Run(tmp_path / "r", _cfg(), results_name="result.json")
    run.log({"event": "x"})
    run.report("# report\n")
    run.finish({"accuracy": 0.5})
    assert json.loads((tmp_path / "r" / "result.json").read_text(encoding="utf-8")) == {"accuracy": 0.5}
    assert (tmp_path / "r" / "report.md").read_text(encoding="utf-8") == "# report\n"
    before = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    other = load_config(LearnConfig, overrides=["seed=5"])
    for resume in (True, False):
        with pytest.raises(RunExistsError, match="finished"):
            Run(tmp_path / "r", other, results_name="result.json", resume=resume)
    after = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert after == before  # not even config.yaml was rewritten
    assert not list((tmp_path / "r").glob(".*.tmp"))  # atomic writes leave no temporary files


def test_unfinished_run_resumes_with_its_records(tmp_path):
    run = Run(tmp_path / "r", _cfg())
    run.log({"event": "step", "n": 1})
    run.log({"event": "step", "n": 2})
    again = Run(tmp_path / "r", _cfg())  # e.g. after a kill
    assert [r["n"] for r in again.records(event="step")] == [1, 2]
    again.log({"event": "step", "n": 3})
    assert [r["n"] for r in again.records(event="step")] == [1, 2, 3]
    with pytest.raises(RunExistsError, match="not empty"):
        Run(tmp_path / "r", _cfg(), resume=False)


def test_resume_with_a_changed_config_is_refused_and_writes_nothing(tmp_path):
    run = Run(tmp_path / "r", _cfg())
    run.log({"event": "step", "n": 1})
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    changed = load_config(LearnConfig, overrides=["inner.lr=1e-3", "gate=false", "seed=3"])
    with pytest.raises(RunExistsError, match=r"different config \(inner\.lr, seed\).*--config"):
        Run(tmp_path / "r", changed)
    assert {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before
    saved = load_config(LearnConfig, run.path / "config.yaml")
    assert [r["n"] for r in Run(tmp_path / "r", saved).records(event="step")] == [1]


def test_a_run_from_before_a_setting_existed_resumes_with_that_setting_at_its_default(tmp_path):
    run = Run(tmp_path / "r", _cfg())
    run.log({"event": "step", "n": 1})
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    del saved["sampling"]["temperature"]  # as if the run started before seal had this setting
    (run.path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert [r["n"] for r in Run(tmp_path / "r", _cfg()).records(event="step")] == [1]
    (run.path / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(RunExistsError, match=r"different config \(sampling\.temperature\)"):
        Run(tmp_path / "r", load_config(LearnConfig, overrides=["inner.lr=3e-4", "gate=false", "sampling.temperature=0.3"]))


def test_a_run_from_before_a_default_changed_resumes_with_what_it_did(tmp_path):
    """sampling.pieces came in as 3 by default: a run that predates the setting sampled one piece per self-edit,
    and its saved config reads so, for resuming as for reports."""
    run = Run(tmp_path / "r", load_config(LearnConfig, overrides=["sampling.pieces=1"]))
    run.log({"event": "step", "n": 1})
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    del saved["sampling"]["pieces"]
    (run.path / "config.yaml").write_text(yaml.safe_dump(saved))
    recorded = load_config(LearnConfig, run.path / "config.yaml")
    assert recorded.sampling.pieces == 1 and LearnConfig().sampling.pieces == 3
    with pytest.raises(RunExistsError, match=r"different config \(sampling\.pieces\)"):
        Run(tmp_path / "r", LearnConfig())
    assert [r["n"] for r in Run(tmp_path / "r", recorded).records(event="step")] == [1]
    elsewhere = tmp_path / "c.yaml"  # a config file of the user's own: today's defaults fill it
    elsewhere.write_text(yaml.safe_dump(saved))
    assert load_config(LearnConfig, elsewhere).sampling.pieces == 3


def test_a_bench_from_before_the_probe_reference_resumes_holding_the_probe_to_the_parent(tmp_path):
    """The memory settings a bench holds under `memory` are read as recorded too: a forgetting run from before
    probe.against gated each update on its parent version's probe, and resumes so, not under today's default."""
    run = Run(tmp_path / "r", load_config(ForgettingBenchConfig, overrides=["memory.probe.against=parent"]))
    run.log({"event": "step", "n": 1})
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    del saved["memory"]["probe"]["against"]
    (run.path / "config.yaml").write_text(yaml.safe_dump(saved))
    assert load_config(ForgettingBenchConfig, run.path / "config.yaml").memory.probe.against == "parent"
    assert ForgettingBenchConfig().memory.probe.against == "untouched"
    with pytest.raises(RunExistsError, match=r"different config \(memory\.probe\.against\)"):
        Run(tmp_path / "r", ForgettingBenchConfig())


def test_resume_false_accepts_a_missing_or_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    Run(tmp_path / "empty", _cfg(), resume=False)
    Run(tmp_path / "new", _cfg(), resume=False)
    assert (tmp_path / "empty" / "config.yaml").is_file() and (tmp_path / "new" / "config.yaml").is_file()


def test_truncated_last_line_is_tolerated_and_later_records_survive(tmp_path):
    run = Run(tmp_path / "r", _cfg())
    run.log({"event": "step", "n": 1})
    with run.metrics_path.open("a", encoding="utf-8") as f:
        f.write('{"time": 1.0, "event": "step", "n"')  # killed mid-write
    resumed = Run(tmp_path / "r", _cfg())
    assert [r["n"] for r in resumed.records(event="step")] == [1]
    resumed.log({"event": "step", "n": 2})
    assert [r["n"] for r in resumed.records(event="step")] == [1, 2]
    assert resumed.metrics_path.read_text(encoding="utf-8").count("\n") == 2  # the cut record is gone, not kept


def test_a_damaged_line_before_the_last_fails_loudly_naming_the_file_and_line(tmp_path):
    run = Run(tmp_path / "r", _cfg())
    run.log({"event": "step", "n": 1})
    with run.metrics_path.open("a", encoding="utf-8") as f:
        f.write('{"event": "step", "n"\n')  # complete line, not a record: damage, not a kill
    run.log({"event": "step", "n": 3})
    with pytest.raises(CorruptRecordsError, match=r"metrics\.jsonl:2: not a JSON record"):
        run.records()


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "f.json"
    atomic_write(path, "old")
    atomic_write(path, "new")
    assert path.read_text(encoding="utf-8") == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_default_run_dir_never_collides(tmp_path):
    paths = [default_run_dir("demo", tmp_path) for _ in range(5)]
    assert len(set(paths)) == 5
    assert all(p.parent == tmp_path and p.name.startswith("demo-") for p in paths)
    for p in paths:  # each is usable for a new run
        Run(p, _cfg(), resume=False)


def test_default_run_dir_concurrent_callers_get_distinct_paths(tmp_path):
    out: list = []
    threads = [threading.Thread(target=lambda: out.append(default_run_dir("bench", tmp_path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8 and len(set(out)) == 8
