"""`seal bench knowledge` end to end on the tiny model and a small SQuAD-format file of our own."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from seal import models
from seal.bench import self_edits
from seal.bench.knowledge import (KnowledgeBenchConfig, conditions_of, merged_plan, multi_passage_updates, run_bench,
                                  run_episode, select_passages)
from seal.bench.knowledge_table import comparisons, report, summarise
from seal.bench.self_edits import sampled_self_edits
from seal.bench.stats import format_ci, mean_ci, paired_difference
from seal.cli import main
from seal.config import EvalConfig, InnerConfig, ModelConfig, SamplingConfig
from seal.domains.knowledge.data import DataError, split_eval, load_squad
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.grading import describe, get_grader
from seal.domains.knowledge.retrieval import Retriever
from seal.runs import Run

PASSAGES = [
    {"title": "Orrin Canal", "context": "The Orrin Canal joins the river Tesk to the harbour of Lune. It opened in 1843.",
     "questions": [{"question": "When did the Orrin Canal open?", "answer": "1843"}]},
    {"title": "Lune", "context": "Lune is a harbour town whose guild of engineers built the canal.",
     "questions": [{"question": "Who built the canal?", "answer": "the guild of engineers"},
                   {"question": "What kind of town is Lune?", "answer": "harbour town"}]},
    {"title": "Tesk", "context": "The Tesk is a slow river that freezes in hard winters.",
     "questions": [{"question": "What happens to the Tesk in hard winters?", "answer": "it freezes"}]},
]


@pytest.fixture
def data(tmp_path):
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(PASSAGES))
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    stored = [{**p, "completions": [f"1. {p['title']} is described in the passage.\n2. {p['context']}"] * 2}
              for p in PASSAGES]
    (synthetic / "teacher_val.json").write_text(json.dumps(stored))
    return squad, synthetic


def config(tiny_model_dir, squad, synthetic, **kw) -> KnowledgeBenchConfig:
    return KnowledgeBenchConfig(
        model=ModelConfig(name=str(tiny_model_dir)), data=str(squad), synthetic_dir=str(synthetic), passages=3,
        conditions=["base", "passage", "self-edit", "file:teacher", "open-book", "retrieval"],
        sampling=SamplingConfig(max_new_tokens=12), inner=InnerConfig(rank=2, alpha=4, epochs=1),
        eval=EvalConfig(max_new_tokens=4, grader="containment"), **kw)


@pytest.mark.parametrize("setting", ["single", "multi"])
def test_bench_writes_table_and_resumes(tiny_model_dir, data, tmp_path, setting):
    cfg = config(tiny_model_dir, *data, setting=setting)
    results = run_bench(cfg, tmp_path / "run")
    rows = {r["condition"]: r for r in results["rows"]}
    assert list(rows) == ["recitation", *cfg.conditions]  # the no-model control is always there
    assert results["grader"] == describe(get_grader("containment"))
    expected = 3 if setting == "single" else 1
    assert all(r["episodes"] == expected for r in rows.values())
    if setting == "single":  # one episode per passage: each passage is scored, or its episode failed
        assert all(r["passages"] + r["failed"] == 3 for r in rows.values())
    assert all((r["ci_low"] is None) == (r["passages"] < 2) for r in rows.values())
    assert all(0.0 <= r["ci_low"] <= r["accuracy"] <= r["ci_high"] <= 1.0
               for r in rows.values() if r["ci_low"] is not None)
    for name in ("config.yaml", "metrics.jsonl", "results.json", "report.md", "answers.md", "plots/conditions.png"):
        assert (tmp_path / "run" / name).is_file()
    assert "| file:teacher |" in (tmp_path / "run" / "report.md").read_text()
    episodes = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = [e for e in episodes if e.get("event") == "episode" and e["condition"] == "file:teacher"]
    assert all(e["sequences"] >= 2 for e in trained)  # passage + stored items
    if setting == "single":  # each parsed self-edit notes what it copies; the passage row has no self-edit
        assert all(0.0 <= e["copied"] <= 1.0 for e in trained)
        assert rows["file:teacher"]["self_edit_copied"] == pytest.approx(sum(e["copied"] for e in trained) / len(trained))
        assert rows["passage"]["self_edit_copied"] is None

    # a killed run (results missing, last episode lost) resumes and redoes only the missing episode
    (tmp_path / "run" / "results.json").unlink()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "run" / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    again = run_bench(cfg, tmp_path / "run")
    after = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(after) == len(lines)
    assert [r["condition"] for r in again["rows"]] == ["recitation", *cfg.conditions]


def test_combined_self_edits_train_together_in_one_episode_per_passage(tiny_model_dir, data, tmp_path):
    squad, synthetic = data
    stored = [{**p, "completions": [f"1. {p['title']} is old.", f"1. {p['title']} is far away.\n2. It is quiet."]}
              for p in PASSAGES]
    (synthetic / "two_val.json").write_text(json.dumps(stored))
    cfg = dataclasses.replace(config(tiny_model_dir, squad, synthetic, k=2, combine=True),
                              conditions=["passage", "file:two"])
    results = run_bench(cfg, tmp_path / "run")
    episodes = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    combined = [e for e in episodes if e.get("event") == "episode" and e["condition"] == "file:two"]
    assert [e["sample"] for e in combined] == [0, 0, 0]  # one update per passage, not one per self-edit
    assert all(e["sequences"] == 1 + 3 for e in combined)  # the passage + the items of both self-edits
    assert {r["condition"]: r["episodes"] for r in results["rows"]}["file:two"] == 3
    assert "k=2 self-edit(s) per passage trained together in one update" in (tmp_path / "run" / "report.md").read_text()


def test_a_stored_self_edit_joins_as_many_completions_as_a_sampled_one_joins_samples(tiny_model_dir, data, tmp_path):
    squad, synthetic = data
    stored = [{**p, "completions": [f"1. {p['title']} is old.", f"1. {p['title']} is far away.\n2. It is quiet."]}
              for p in PASSAGES]
    (synthetic / "two_val.json").write_text(json.dumps(stored))
    base = config(tiny_model_dir, squad, synthetic)
    cfg = dataclasses.replace(base, conditions=["file:two"], sampling=dataclasses.replace(base.sampling, pieces=2))
    run_bench(cfg, tmp_path / "run")
    episodes = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    joined = [e for e in episodes if e.get("event") == "episode" and e["condition"] == "file:two"]
    assert [e["sequences"] for e in joined] == [1 + 3] * 3  # the passage + the items of both completions
    assert "k=1 self-edit(s) per passage, each 2 sample(s) or stored completion(s) joined" in \
        (tmp_path / "run" / "report.md").read_text()

    three = dataclasses.replace(cfg, sampling=dataclasses.replace(base.sampling, pieces=3))
    with pytest.raises(DataError, match="fewer than k x sampling.pieces = 3 completions"):
        run_bench(three, tmp_path / "other")
    assert not (tmp_path / "other" / "results.json").exists()


class Killed(Exception):
    pass


def test_self_edits_sampled_before_a_kill_are_kept_and_the_rest_sampled_as_without_one(tiny_model_dir, data, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setattr(self_edits, "SAMPLING_CHUNK", 1)
    cfg = config(tiny_model_dir, *data, setting="single")
    model, tokenizer = models.load(cfg.model)
    domain, passages = KnowledgeDomain(eval=cfg.eval), select_passages(cfg)
    sample_into = lambda run: sampled_self_edits(cfg, run, "self-edit", "passage", model, tokenizer, domain,  # noqa: E731
                                                 passages)
    whole = sample_into(Run(tmp_path / "whole", cfg))

    sample, calls, kill = self_edits.sample_self_edits, [], True

    def killed_at_the_second_chunk(model, tokenizer, domain, chunk, *args, **kwargs):
        calls.append([p.title for p in chunk])
        if kill and len(calls) == 2:
            raise Killed
        return sample(model, tokenizer, domain, chunk, *args, **kwargs)

    monkeypatch.setattr(self_edits, "sample_self_edits", killed_at_the_second_chunk)
    with pytest.raises(Killed):
        sample_into(Run(tmp_path / "killed", cfg))
    calls.clear()
    kill = False
    resumed = sample_into(Run(tmp_path / "killed", cfg))
    assert calls == [[passages[1].title], [passages[2].title]]  # the first passage's self-edits were not redone
    assert resumed == whole


def test_multi_passage_updates_trained_together_score_as_one_at_a_time(tiny_model_dir, data):
    cfg = config(tiny_model_dir, *data, setting="multi")
    passages = select_passages(cfg)
    domain = KnowledgeDomain(cfg.prompt, None, cfg.eval)
    model, tokenizer = models.load(cfg.model)
    inner = dataclasses.replace(cfg.inner, epochs=3, lr=3e-2)
    plans = [merged_plan(domain, passages, None)[0],
             merged_plan(domain, passages, [[f"{p.title} has a guild.\n{p.title} lies north."] for p in passages])[0]]
    steps = []
    together = multi_passage_updates(domain, model, tokenizer, passages, plans, inner, lambda *a: steps.append(a))
    alone = [run_episode(domain, model, tokenizer, passages, "", plan, inner, None) for plan in plans]
    assert [[s["answers"] for s in per_plan] for per_plan in together] == \
        [[s["answers"] for s in per_plan] for per_plan in alone]
    base = run_episode(domain, model, tokenizer, passages, "base", None, inner, None)
    assert together[0] != base and together[0] != together[1]  # the updates changed the answers, differently
    assert steps[-1][0] == steps[-1][1] > 0  # the progress callback saw the last training step


def test_multi_passage_full_finetuning_runs_one_update_at_a_time_and_leaves_the_model_as_it_was(tiny_model_dir, data):
    model, tokenizer = models.load(str(tiny_model_dir))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    passages = select_passages(config(tiny_model_dir, *data))
    domain = KnowledgeDomain(eval=EvalConfig(max_new_tokens=4, grader="containment"))
    inner = InnerConfig(method="full", lr=1e-3, epochs=2, batch_size=2)
    plans = [merged_plan(domain, passages, None)[0], merged_plan(domain, passages[:1], None)[0]]
    steps = []
    scores = multi_passage_updates(domain, model, tokenizer, passages, plans, inner,
                                   lambda step, total, loss: steps.append((step, total)))
    assert [len(s) for s in scores] == [3, 3] and steps[-1] == (2, 2) and (4, 4) in steps  # 2 updates, one by one
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def scores(accuracy: float, f1: float) -> list[dict]:
    return [{"accuracy": accuracy, "f1": f1, "em": 0.0, "recitation": 0.0, "identical": 0.0}]


def test_summarise_counts_failed_episodes_apart_from_the_mean():
    eps = [
        {"passages": [0], "condition": "base", "sample": 0, "scores": scores(0.5, 0.4), "seconds": 1},
        {"passages": [0], "condition": "self-edit", "sample": 0, "error": "no statements", "seconds": 2},
        {"passages": [1], "condition": "base", "sample": 0, "scores": scores(0.0, 0.0), "seconds": 1},
        {"passages": [1], "condition": "self-edit", "sample": 0, "scores": scores(1.0, 1.0), "seconds": 4,
         "copied": 0.25},
    ]
    row = summarise(eps, ["self-edit"])[0]
    assert (row["failed"], row["passages"], row["accuracy"], row["seconds_per_episode"]) == (1, 1, 1.0, 3)
    assert (row["self_edit_copied"], summarise(eps, ["base"])[0]["self_edit_copied"]) == (0.25, None)
    assert row["ci_low"] is None  # one passage: no interval
    failed = summarise(eps[1:2], ["self-edit"])[0]
    assert failed["accuracy"] is None and failed["failed"] == 1 and failed["passages"] == 0
    assert "| self-edit | - | none (n=0) | - | - | - | - | - | - | 1 |" in report({"setting": "single", "model": "m", "passages": 1,
                                                                 "split": "eval", "k": 1, "rows": [failed]})


def test_unrecited_accuracy_is_averaged_like_the_others_and_absent_from_older_records():
    with_it = [{**s, "unrecited": u} for s, u in ((scores(1.0, 1.0)[0], 0.5), (scores(0.5, 0.5)[0], 0.0))]
    eps = [{"passages": [i], "condition": "passage", "sample": 0, "scores": [s], "seconds": 1} for i, s in enumerate(with_it)]
    assert summarise(eps, ["passage"])[0]["unrecited"] == pytest.approx(0.25)
    older = eps + [{"passages": [2], "condition": "passage", "sample": 0, "scores": scores(0.0, 0.0), "seconds": 1}]
    assert summarise(older, ["passage"])[0]["unrecited"] is None  # never a mean over the records that have it


def test_intervals_are_t_intervals_with_their_n_and_small_n_is_flagged():
    mean, low, high = mean_ci([0.2, 0.25])  # the example: a z interval said 17.6-27.4 %
    assert mean == pytest.approx(0.225) and low == 0.0 and high == pytest.approx(0.5426, abs=1e-3)  # t(1) = 12.71
    five = [0.1, 0.2, 0.3, 0.4, 0.5]
    _, low, high = mean_ci(five)
    assert (high - low) / 2 == pytest.approx(2.776 * 0.1581 / 5 ** 0.5, rel=1e-3)  # t(4) = 2.776
    assert mean_ci([0.4]) == (0.4, None, None)
    assert format_ci(low, high, 5) == f"{low:.1%}–{high:.1%} (n=5)"
    assert format_ci(0.0, 0.54, 2) == "0.0%–54.0% (n=2, too few)"
    assert format_ci(None, None, 1) == "none (n=1)"


def test_retriever_finds_the_right_passage(data):
    passages = load_squad(data[0])
    r = Retriever(passages)
    assert r.top("Lune guild of engineers").title == "Lune"
    assert r.top("river freezes winter").title == "Tesk"


def test_eval_split_matches_the_papers_evaluation_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default data paths do not depend on the working directory
    cfg = KnowledgeBenchConfig()
    evaluation, rest = split_eval(load_squad(cfg.data))
    stored = json.loads((Path(cfg.synthetic_dir) / "gpt4_1_val.json").read_text())
    assert [p.context for p in evaluation] == [s["context"].strip() for s in stored]
    assert len(rest) == 1867


def test_seal_data_points_the_defaults_elsewhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEAL_DATA", str(tmp_path / "elsewhere"))
    assert KnowledgeBenchConfig().data == str(tmp_path / "elsewhere" / "squad" / "squad_val.json")
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "knowledge"]) == 2  # into a default runs/bench-knowledge-<time>, removed again
    err = capsys.readouterr().err.strip()
    assert err == (f"seal bench: error: no SQuAD file {tmp_path}/elsewhere/squad/squad_val.json; set SEAL_DATA to "
                   "the directory holding squad/, or give the file with --set data=FILE")
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_condition_exits_2(tiny_model_dir, data, tmp_path, capsys):
    squad, synthetic = data
    code = main(["bench", "knowledge", "--model", str(tiny_model_dir), "--out", str(tmp_path / "run"),
                 "--set", f"data={squad}", "--set", "conditions=[base,telepathy]"])
    assert code == 2 and "telepathy" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_generator_rounds_get_a_row_and_a_plot_per_round(tiny_model_dir, data, tmp_path):
    import shutil

    round_1 = tmp_path / "train" / "round-1"
    shutil.copytree(tiny_model_dir, round_1)  # the same weights: its self-edits must equal the bench model's
    cfg = config(tiny_model_dir, *data, setting="single")
    cfg.conditions = ["passage", "self-edit", f"generator:{round_1}"]
    results = run_bench(cfg, tmp_path / "run")
    rows = {r["condition"]: r for r in results["rows"]}
    assert [r["round"] for r in results["rows"]] == [None, None, 0, 1]  # recitation control, passage, rounds
    assert rows[f"generator:{round_1}"]["accuracy"] == rows["self-edit"]["accuracy"]
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    texts = {r["condition"]: r["texts"] for r in logged if r.get("event") == "self_edits" and r["passage"] == 0}
    assert texts["self-edit"] == texts[f"generator:{round_1}"]
    assert (tmp_path / "run" / "plots" / "rounds.png").stat().st_size > 0
    same = {(c["a"], c["b"]): c for c in results["comparisons"]}[f"generator:{round_1}", "self-edit"]
    ran = rows["self-edit"]["passages"]  # passages whose self-edit could be used: paired over those only
    assert ran + rows["self-edit"]["failed"] == 3
    assert (same["difference"], same["units"]) == (0.0, ran)
    assert f"| generator:{round_1} − self-edit | +0.0% |" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize("condition, expected", [("self-edit", 0), ("generator:runs/t/round-2", 2),
                                                 ("generator:runs/t/round-x", None), ("passage", None),
                                                 ("file:gpt4_1", None), ("generator:qwen", None)])
def test_rl_round_of_a_condition(condition, expected):
    from seal.bench.knowledge_table import rl_round

    assert rl_round(condition) == expected


def test_status_of_a_killed_run_averages_only_its_complete_passages(tiny_model_dir, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")  # the table's cells must not wrap for the checks on the printed text
    cfg = config(tiny_model_dir, *data, setting="single")
    final = run_bench(cfg, tmp_path / "run")
    (tmp_path / "run" / "results.json").unlink()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    first_of_last = next(i for i, x in enumerate(lines) if '"passages": [2]' in x)
    (tmp_path / "run" / "metrics.jsonl").write_text("\n".join(lines[: first_of_last + 1]) + "\n")  # killed in passage 2

    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "80")  # the width rich gives a pipe
    assert main(["bench", "status", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    printed = " ".join(err.split())  # titles may wrap
    assert "2 of 3 passages done" in printed and "file:teacher − self-edit" in printed
    # into a pipe (80 columns) the tables keep their full width: no figure cut to "…", each row on one line
    assert "…" not in err and any("file:teacher − self-edit" in x and "(n=" in x for x in err.splitlines())
    from seal.bench.knowledge_status import interim

    episodes = [json.loads(x) for x in lines if '"event": "episode"' in x and '"passages": [2]' not in x]
    assert interim(tmp_path / "run")["rows"] == summarise(episodes, conditions_of(cfg))
    pairs = {(c["a"], c["b"]): c["units"] for c in interim(tmp_path / "run")["comparisons"]}
    ran = sum("scores" in e for e in episodes if e["condition"] == "self-edit")  # the others failed: not paired
    assert pairs == {("self-edit", "passage"): ran, ("file:teacher", "passage"): 2, ("file:teacher", "self-edit"): ran}
    assert summarise(episodes, conditions_of(cfg)) != final["rows"]  # the third passage's episodes were left out
    assert "(n=2, too few)" in printed  # every interval shows its n; under 5 passages it is flagged
    assert main(["bench", "status", str(tmp_path / "nowhere")]) == 2

    capsys.readouterr()  # a damaged line before the last is corruption, not a kill: refused, naming file and line
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"event": "episode", "pass\n' + lines[-1] + "\n")
    assert main(["bench", "status", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"metrics.jsonl:{first_of_last + 2}: not a JSON record" in err


def test_status_pools_shards_run_at_different_offsets(tiny_model_dir, data, tmp_path, capsys):
    cfg = dataclasses.replace(config(tiny_model_dir, *data, setting="single"),
                              conditions=["base", "passage", "self-edit", "file:teacher"])
    whole = run_bench(cfg, tmp_path / "whole")
    run_bench(dataclasses.replace(cfg, passages=2), tmp_path / "a")
    run_bench(dataclasses.replace(cfg, offset=2, passages=1), tmp_path / "b")
    from seal.bench.knowledge_status import interim

    pooled = interim(tmp_path / "a", tmp_path / "b")
    assert pooled["passages"] == pooled["passages_done"] == 3
    measured = ("condition", "episodes", "accuracy", "ci_low", "ci_high", "f1")
    assert [{k: r[k] for k in measured} for r in pooled["rows"]] == [{k: r[k] for k in measured} for r in whole["rows"]]
    assert pooled["comparisons"] == whole["comparisons"]
    ran = next(r["passages"] for r in whole["rows"] if r["condition"] == "self-edit")
    assert pooled["comparisons"][0]["units"] == ran
    capsys.readouterr()
    assert main(["bench", "status", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "3 of 3 passages done" in " ".join(capsys.readouterr().err.split())
    assert main(["bench", "status", str(tmp_path / "a"), str(tmp_path / "b"), "--grader", "exact"]) == 0
    assert "3 of 3 passages done, regraded by exact 1" in " ".join(capsys.readouterr().err.split())
    from seal.domains.knowledge.grading import DEFAULT_GRADER

    assert main(["bench", "status", str(tmp_path / "a"), "--grader", "default"]) == 0  # named as a config names it
    assert f"regraded by {DEFAULT_GRADER} " in " ".join(capsys.readouterr().err.split())
    assert main(["bench", "status", str(tmp_path / "a"), "--grader", "no-such"]) == 2
    assert "unknown grader 'no-such'" in capsys.readouterr().err

    # a run killed in its last passage, continued by a shard from that passage: pooled, each passage from the
    # run that finished it
    killed = tmp_path / "killed"
    run_bench(cfg, killed)
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    (killed / "metrics.jsonl").write_text("\n".join(lines[: next(i for i, x in enumerate(lines) if '"passages": [2]' in x)
                                                           + 1]) + "\n")
    continued = interim(killed, tmp_path / "b")
    assert continued["passages"] == continued["passages_done"] == 3
    assert [{k: r[k] for k in measured} for r in continued["rows"]] == [{k: r[k] for k in measured} for r in whole["rows"]]

    run_bench(dataclasses.replace(cfg, offset=1, passages=2), tmp_path / "overlap")
    with pytest.raises(ValueError, match=r"overlap: .* both finished passage\(s\) \[1\]"):
        interim(tmp_path / "a", tmp_path / "overlap")
    run_bench(dataclasses.replace(cfg, offset=2, passages=1, inner=InnerConfig(rank=2, alpha=4, epochs=2)),
              tmp_path / "other")
    assert main(["bench", "status", str(tmp_path / "a"), str(tmp_path / "other")]) == 2
    assert "is not a shard of" in capsys.readouterr().err


def test_paired_difference_keeps_its_sign_and_counts_wins():
    d = paired_difference([1.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 0.5])
    assert d["difference"] == pytest.approx(0.125) and (d["better"], d["worse"], d["units"]) == (1, 1, 4)
    assert d["ci_low"] < 0 < d["ci_high"]  # not clipped to [0, 1] like a rate's interval
    assert paired_difference([0.2, 0.3], [0.5, 0.6])["ci_high"] == pytest.approx(-0.3)  # a constant shift
    assert d["p_wilcoxon"] == pytest.approx(1.0)  # one unit up, one down by as much: no evidence either way
    ten_up = paired_difference([0.6] * 10, [0.2] * 10)
    assert ten_up["p_wilcoxon"] == pytest.approx(2 / 2**10)  # exact test: only all ten up is as extreme, both ways
    assert paired_difference([0.5, 0.2], [0.5, 0.2])["p_wilcoxon"] is None  # nothing differs: no test
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1.0], [1.0, 0.0])


def test_comparisons_pair_rounds_and_files_over_shared_passages():
    def ep(condition, passage, accuracy):
        return {"passages": [passage], "condition": condition, "sample": 0, "seconds": 1,
                "scores": scores(accuracy, accuracy)}

    r2 = "generator:runs/t/round-2"
    eps = [ep("self-edit", 0, 0.0), ep("self-edit", 1, 0.5), ep(r2, 0, 1.0), ep(r2, 1, 0.5),
           ep("file:gpt4_1", 0, 1.0), ep("file:gpt4_1", 1, 1.0), ep("file:gpt4_1", 2, 1.0), ep("passage", 0, 1.0)]
    got = {(c["a"], c["b"]): (c["difference"], c["units"]) for c in
           comparisons(eps, ["passage", "self-edit", r2, "file:gpt4_1"])}
    assert got == {("self-edit", "passage"): (-1.0, 1), (r2, "passage"): (0.0, 1), ("file:gpt4_1", "passage"): (0.0, 1),
                   (r2, "self-edit"): (0.5, 2), ("file:gpt4_1", "self-edit"): (0.75, 2), ("file:gpt4_1", r2): (0.25, 2)}
    assert comparisons(eps, ["base", "file:gpt4_1"]) == []  # neither the passage nor a round to compare with
    assert all(c["unrecited"] is None for c in comparisons(eps, ["passage", "self-edit"]))  # records without the rate


def test_comparisons_set_a_lead_made_of_recitations_apart():
    def ep(condition, passage, accuracy, unrecited):
        return {"passages": [passage], "condition": condition, "sample": 0, "seconds": 1,
                "scores": [{**scores(accuracy, accuracy)[0], "unrecited": unrecited}]}

    # the self-edit is credited more on both passages, but only through answers that recite the passage
    eps = [ep("passage", 0, 0.2, 0.2), ep("passage", 1, 0.4, 0.2), ep("self-edit", 0, 0.6, 0.2), ep("self-edit", 1, 0.6, 0.2)]
    (c,) = comparisons(eps, ["passage", "self-edit"])
    assert c["difference"] == pytest.approx(0.3) and c["unrecited"]["difference"] == pytest.approx(0.0)
    text = report({"setting": "single", "model": "tiny", "passages": 2, "split": "eval", "k": 1,
                   "rows": summarise(eps, ["passage", "self-edit"]), "comparisons": [c]})
    assert "| self-edit − passage | +30.0% |" in text and "| 0.5 | +0.0% (+0.0% to +0.0% (n=2, too few)) |" in text


def test_regrade_recomputes_accuracy_from_the_stored_answers_with_the_live_credit_rule():
    from seal.bench.knowledge_status import regrade
    from seal.domains.knowledge.grading import get_grader

    def answer(question, gold, text, recites=False):
        return {"question": question, "gold": gold, "answer": text, "judged": True, "correct": True,
                "f1": 0.5, "em": False, "recites": recites, "identical": False}

    stored = [answer("Where?", "Lune", "in Lune"), answer("When?", "1842", "1842", recites=True),
              answer("Where first?", "Lune", "Lune in 1842"), answer("When first?", "1842", "Lune in 1842")]
    episode = {"event": "episode", "condition": "passage", "passages": [0],
               "scores": [{"accuracy": 1.0, "f1": 0.5, "recitation": 0.25, "unrecited": 0.75, "answers": stored}]}
    exact = regrade(episode, get_grader("exact"))["scores"][0]
    assert exact["accuracy"] == 0.25 and [a["judged"] for a in exact["answers"]] == [False, True, False, False]
    assert exact["unrecited"] == 0  # its one credited answer recites
    assert (exact["f1"], exact["recitation"]) == (0.5, 0.25)  # the grader decides none of these
    contained = regrade(episode, get_grader("containment"))["scores"][0]
    # "Lune in 1842" contains the gold of both its questions, but one answer to two different golds is generic
    assert [a["judged"] for a in contained["answers"]] == [True] * 4
    assert contained["accuracy"] == 0.5 and [a["correct"] for a in contained["answers"]] == [True, True, False, False]
    assert contained["unrecited"] == 0.25
    assert episode["scores"][0]["accuracy"] == 1.0  # the stored episode is not modified
    assert regrade({"event": "episode", "condition": "self-edit", "error": "no usable self-edit"},
                   get_grader("exact")) == {"event": "episode", "condition": "self-edit", "error": "no usable self-edit"}
