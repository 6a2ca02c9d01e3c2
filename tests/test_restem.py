"""ReST-EM on the tiny model: rounds end to end, rewards, resume after a kill, determinism, teacher-student."""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import pytest
import torch

from seal import models
from seal.config import ConfigError, EvalConfig, InnerConfig, ModelConfig, SamplingConfig, load_config
from seal.domains.base import Example, Score
from seal.domains.knowledge.data import Passage, Question
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.selfedit import split_self_edit
from seal.generation import PIECE_SEPARATOR
from seal.rl import restem as restem_mod
from seal.rl.restem import RestEMConfig, SFTConfig, restem, reward, winners
from seal.runs import Run

PASSAGES = [
    Passage("Orrin Canal", "The Orrin Canal joins the river Tesk to the harbour of Lune. It opened in 1843.",
            (Question("When did the Orrin Canal open?", "1843"), Question("Which river does it join?", "Tesk"))),
    Passage("Lune", "Lune is a harbour town. Its guild of engineers built the canal.",
            (Question("Who built the canal?", "guild of engineers"),)),
]


def small_config(model_dir, **overrides) -> RestEMConfig:
    base = dict(
        generator=ModelConfig(name=str(model_dir)),
        rounds=2, k=2, reward="best", require_improvement=False,
        sampling=SamplingConfig(temperature=1.0, top_p=0.95, max_new_tokens=12),
        inner=InnerConfig(rank=2, alpha=4, epochs=1, batch_size=4),
        sft=SFTConfig(epochs=1, rank=2, alpha=4, lr=1e-2),
    )
    return RestEMConfig(**{**base, **overrides})


def domain(**options) -> KnowledgeDomain:
    return KnowledgeDomain(eval=EvalConfig(max_new_tokens=4, grader="containment"), **options)


def episodes(run: Run) -> list[tuple]:
    return [(e["round"], e["context"], e["sample"], e["text"], e["score"]) for e in run.records(event="episode")]


def record_clones(monkeypatch) -> list:
    """The examples every M-step of the test clones, in order (the M-step itself still runs)."""
    cloned, real = [], restem_mod.sft_generator
    def clone(model, tok, examples, cfg, **options):
        cloned.extend(examples)
        return real(model, tok, examples, cfg, **options)

    monkeypatch.setattr(restem_mod, "sft_generator", clone)
    return cloned


def test_rewards_and_winners():
    eps = [{"sample": 0, "score": 0.5}, {"sample": 1, "score": 0.8}, {"sample": 2, "score": None}]
    strict = RestEMConfig(reward="best")
    assert winners(eps, 0.8, strict) == []  # nothing beat the baseline: the reference code would keep sample 1
    assert winners(eps, 0.4, strict) == [eps[1]]
    assert winners(eps, 0.4, RestEMConfig(reward="binary")) == eps[:2]
    assert reward(0.8, 0.5, "binary") == 1.0 and reward(0.5, 0.5, "binary") == 0.0
    assert reward(0.8, 0.5, "gain") == pytest.approx(0.3)
    assert reward(None, 0.5, "gain") is None  # a failed episode: counted as failed, in no mean
    with pytest.raises(ValueError, match="reward"):
        RestEMConfig(reward="bogus")
    noted = [{"sample": 0, "score": 0.9, "notes": {"copied": 0.6}}, {"sample": 1, "score": 0.7, "notes": {"copied": 0.2}}]
    assert winners(noted, 0.4, strict) == [noted[0]]
    assert winners(noted, 0.4, RestEMConfig(reward="best", winner_max_notes={"copied": 0.25})) == [noted[1]]
    with pytest.raises(ValueError, match=r"notes no \['copyd'\]"):  # a resumed round's records are checked too
        winners(noted, 0.4, RestEMConfig(winner_max_notes={"copyd": 0.25}))


def test_rounds_save_generators_that_differ(tiny_model_dir, tmp_path, capfd):
    run = Run(tmp_path / "run", small_config(tiny_model_dir))
    summaries = restem(domain(), PASSAGES, small_config(tiny_model_dir), run)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capfd.readouterr().err)  # the terminal's escape codes removed
    assert re.search(r"round 2 M-step\W+\d+/\d+ loss \d", shown)  # a bar with its steps, as the E-step's
    assert [s["round"] for s in summaries] == [1, 2]
    for s in summaries:  # reward "best" without the improvement check: one winner per context with a usable self-edit
        ran = [e for e in run.records(event="episode", round=s["round"]) if e["score"] is not None]
        scored = {e["context"] for e in ran}
        assert s["episodes"] == 4 and s["training_examples"] == len(scored) > 0
        assert s["failed"] == 4 - len(ran)  # failed episodes in their own count, in no mean:
        assert s["mean_score"] == pytest.approx(sum(e["score"] for e in ran) / len(ran))
    assert len(episodes(run)) == 8 and len(run.records(event="m_step")) == 2
    assert all(m["peak_gb"] >= m["resident_gb_after"] > 0 for m in run.records(event="m_step"))  # after the release
    base, _ = models.load(str(tiny_model_dir))
    r1, _ = models.load(str(tmp_path / "run" / "round-1"))
    r2, _ = models.load(str(tmp_path / "run" / "round-2"))
    w = lambda m: m.model.layers[0].self_attn.q_proj.weight  # noqa: E731
    assert not torch.equal(w(base), w(r1)) and not torch.equal(w(r1), w(r2))
    assert set(dict(r1.named_parameters())) == set(dict(base.named_parameters()))  # merged: no LoRA left


def test_a_round_rewarded_on_unrecited_accuracy_scores_every_episode_by_it(tiny_model_dir, tmp_path, monkeypatch):
    answers = {"When did the Orrin Canal open?": "The Orrin Canal joins the river Tesk to the harbour of Lune, in 1843.",
               "Which river does it join?": "Tesk.", "Who built the canal?": "Its guild of engineers."}
    monkeypatch.setattr(KnowledgeDomain, "answer", lambda self, model, tok, passage, supports=None:
                        [answers[q.question] for q in passage.questions])  # every answer right, one recited
    cfg = small_config(tiny_model_dir, rounds=1, inner=InnerConfig(rank=2, alpha=4, epochs=1, parallel=1))
    run = Run(tmp_path / "run", cfg)
    restem(domain(score_by="unrecited"), PASSAGES, cfg, run)
    ran = [e for e in run.records(event="episode") if e["score"] is not None]
    assert ran and all(e["metrics"]["accuracy"] == 1.0 for e in ran)
    assert {(e["context"], e["score"]) for e in ran} == {(0, 0.5), (1, 1.0)}


def test_a_round_reports_how_much_of_its_self_edits_is_copied(tiny_model_dir, tmp_path, monkeypatch):
    own = "1. Barges carried coal and timber along the new waterway."
    monkeypatch.setattr(restem_mod, "sample_self_edits", lambda model, tok, domain, contexts, sampling, k, seed:
                        [[f"1. {c.context}", own] for c in contexts])  # one copy of the passage, one of its own
    cfg = small_config(tiny_model_dir, rounds=1)
    run = Run(tmp_path / "run", cfg)
    [summary] = restem(domain(), PASSAGES, cfg, run)
    assert sorted(e["notes"]["copied"] for e in run.records(event="episode")) == [0.0, 0.0, 1.0, 1.0]
    assert (summary["self_edit_copied"], summary["self_edit_items"]) == (0.5, 1.0)


def test_a_self_edit_over_a_note_limit_is_never_cloned(tiny_model_dir, tmp_path, monkeypatch):
    cloned = record_clones(monkeypatch)
    own = "1. Barges carried coal and timber along the new waterway."
    monkeypatch.setattr(restem_mod, "sample_self_edits", lambda model, tok, domain, contexts, sampling, k, seed:
                        [[f"1. {c.context}", own] for c in contexts])  # one copy of the passage, one of its own
    cfg = load_config(RestEMConfig, overrides=[f"generator.name={tiny_model_dir}", "rounds=1", "k=2",
                                               "reward=binary", "require_improvement=false",
                                               "winner_max_notes.copied=0.25", "inner.rank=2", "inner.alpha=4",
                                               "inner.epochs=1", "sft.epochs=1", "sft.rank=2", "sft.alpha=4"])
    assert cfg.winner_max_notes == {"copied": 0.25}
    [summary] = restem(domain(), PASSAGES, cfg, Run(tmp_path / "run", cfg))
    assert summary["self_edit_copied"] == 0.5  # both were sampled and scored ...
    assert [x.completion for x in cloned] == [own, own]  # ... the copy of each passage was not cloned

    bad = dataclasses.replace(cfg, winner_max_notes={"copyd": 0.25})
    with pytest.raises(ValueError, match=r"notes no \['copyd'\] of a self-edit \(it notes \['copied', 'items'\]\)"):
        restem(domain(), PASSAGES, bad, Run(tmp_path / "bad", bad))
    assert not list(Run(tmp_path / "bad", bad).records(event="episode"))  # it stopped before any episode was logged
    with pytest.raises(ConfigError, match="winner_max_notes.copied: expected a number"):
        load_config(RestEMConfig, overrides=["winner_max_notes.copied=lots"])


def test_resume_after_kill_redoes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    cfg = small_config(tiny_model_dir, rounds=1)
    real, calls = restem_mod.score_self_edits, []

    def dying(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # killed after the first context's self-edits were scored
        calls.append((args[-2], args[-1], sorted(args[2])))
        return real(*args, **kwargs)

    monkeypatch.setattr(restem_mod, "score_self_edits", dying)
    with pytest.raises(KeyboardInterrupt):
        restem(domain(), PASSAGES, cfg, Run(tmp_path / "run", cfg))
    assert len(Run(tmp_path / "run", cfg).records(event="episode")) == 2

    calls.clear()
    spy = lambda *a, **k: calls.append((a[-2], a[-1], sorted(a[2]))) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(restem_mod, "score_self_edits", spy)
    run = Run(tmp_path / "run", cfg)
    restem(domain(), PASSAGES, cfg, run)
    assert calls == [(1, 1, [0, 1])]  # only the unfinished context ran
    assert len(episodes(run)) == 4 and (tmp_path / "run" / "round-1" / "config.json").is_file()

    fresh = Run(tmp_path / "fresh", cfg)
    restem(domain(), PASSAGES, cfg, fresh)
    assert sorted(episodes(fresh)) == sorted(episodes(run))  # a resumed run equals an uninterrupted one


def test_same_seed_same_run_other_seed_other_self_edits(tiny_model_dir, tmp_path):
    cfg = small_config(tiny_model_dir, rounds=1)
    a, b = Run(tmp_path / "a", cfg), Run(tmp_path / "b", cfg)
    restem(domain(), PASSAGES, cfg, a)
    restem(domain(), PASSAGES, cfg, b)
    assert episodes(a) == episodes(b)
    c = Run(tmp_path / "c", cfg)
    restem(domain(), PASSAGES, small_config(tiny_model_dir, rounds=1, seed=7), c)
    assert [e[3] for e in episodes(c)] != [e[3] for e in episodes(a)]


def test_teacher_student_trains_only_the_teacher(tiny_model_dir, tmp_path, monkeypatch):
    from conftest import build_tiny_model

    student_dir = build_tiny_model(tmp_path / "student", seed=1)
    w = lambda m: m.model.layers[0].mlp.up_proj.weight.detach().clone()  # noqa: E731
    student_w = w(models.load(str(student_dir))[0])
    learners = []
    real = restem_mod.adapt_and_evaluate_all
    monkeypatch.setattr(restem_mod, "adapt_and_evaluate_all",
                        lambda m, *a, **k: learners.extend([w(m)] * len(a[3])) or real(m, *a, **k))
    cfg = small_config(tiny_model_dir, rounds=1, learner=str(student_dir))
    run = Run(tmp_path / "run", cfg)
    restem(domain(), PASSAGES, cfg, run)
    trained_episodes = [e for e in run.records(event="episode") if e["score"] is not None]
    assert len(learners) == len(trained_episodes) > 0
    assert all(torch.equal(x, student_w) for x in learners)  # every update was applied to the student
    teacher, _ = models.load(str(tiny_model_dir))
    trained, _ = models.load(str(tmp_path / "run" / "round-1"))
    assert not torch.equal(w(teacher), w(trained))  # the teacher was trained
    assert torch.equal(w(models.load(str(student_dir))[0]), student_w)  # the student's weights are untouched


def test_structured_self_qa_round_clones_the_scaffold_prompts(tiny_model_dir, tmp_path, monkeypatch):
    cloned = record_clones(monkeypatch)
    cfg = small_config(tiny_model_dir, rounds=1, sampling=SamplingConfig(structured=True, temperature=1.0))
    run = Run(tmp_path / "run", cfg)
    restem(KnowledgeDomain(prompt="self-qa", qa_format="chat", eval=EvalConfig(max_new_tokens=4, grader="containment")),
           PASSAGES, cfg, run)
    won = [e for e in run.records(event="episode") if e["score"] is not None]
    assert cloned and len(cloned) >= len({e["context"] for e in won})  # one example per question-answer pair
    sentences = [s for p in PASSAGES for s in p.context.split(". ")]
    assert all(x.prompt.endswith("Question:") and any(s.rstrip(".") in x.prompt for s in sentences) for x in cloned)
    words = lambda t: set(re.findall(r"\w+", t))  # noqa: E731  (the parser drops the random model's control bytes)
    assert all("\nAnswer: " in x.completion and any(words(x.completion) <= words(e["text"]) for e in won) for x in cloned)


def test_a_self_edit_of_several_pieces_is_cloned_piece_by_piece(tiny_model_dir, tmp_path, monkeypatch):
    cloned = record_clones(monkeypatch)
    cfg = small_config(tiny_model_dir, rounds=1, sampling=SamplingConfig(temperature=1.0, max_new_tokens=12, pieces=3))
    run = Run(tmp_path / "run", cfg)
    restem(domain(), PASSAGES, cfg, run)
    scored = [e for e in run.records(event="episode") if e["score"] is not None]
    assert all(len(e["text"].split(PIECE_SEPARATOR)) == 3 for e in scored)
    pieces = {p for e in scored for p in e["text"].split(PIECE_SEPARATOR)}
    # reward "best": one winner per passage, each of its three pieces that describes an update (the random model's
    # pieces often do not) the completion of the prompt it came from
    winners = [max((e for e in scored if e["context"] == i), key=lambda e: (e["score"], -e["sample"]))
               for i in {e["context"] for e in scored}]
    usable = [p for e in winners for p in e["text"].split(PIECE_SEPARATOR) if split_self_edit(p)]
    assert cloned and sorted(x.completion for x in cloned) == sorted(usable)
    assert all(x.completion in pieces for x in cloned)


def test_a_piece_that_says_nothing_is_not_cloned_with_the_rewarded_ones(tiny_model_dir, tmp_path, monkeypatch):
    cloned = record_clones(monkeypatch)
    empty, own = "No implications derived directly or indirectly from the content.", "1. Barges carried coal to Lune."
    monkeypatch.setattr(restem_mod, "sample_self_edits", lambda model, tok, domain, contexts, sampling, k, seed:
                        [[PIECE_SEPARATOR.join([own, empty])] * k for _ in contexts])
    cfg = small_config(tiny_model_dir, rounds=1, sampling=SamplingConfig(temperature=1.0, max_new_tokens=12, pieces=2))
    restem(domain(), PASSAGES, cfg, Run(tmp_path / "run", cfg))
    assert [x.completion for x in cloned] == [own, own]  # one winner per passage (reward "best"), its empty piece left out


def test_no_winner_is_an_error_not_a_silent_round(tiny_model_dir, tmp_path):
    cfg = small_config(tiny_model_dir, rounds=1, require_improvement=True)
    with pytest.raises(restem_mod.UpdateError, match="nothing to clone"):
        restem(KnowledgeDomain(eval=EvalConfig(max_new_tokens=2, grader="exact")), PASSAGES, cfg,
               Run(tmp_path / "run", cfg))


@pytest.mark.parametrize("sft", [SFTConfig(epochs=2, rank=2, alpha=4, lr=1e-2, batch_size=2, kl_to_base=1.0),
                                 SFTConfig(mode="full", epochs=1, lr=1e-3, batch_size=2)], ids=["lora-kl", "full"])
def test_a_checkpointed_m_step_clones_the_same_generator(tiny_model_dir, sft):
    """Checkpointing recomputes activations in the backward pass (seen on during every step, off after): the
    merged generator is the one the plain M-step gives."""
    examples = [Example(f"{i}. The canal opened in 1843 and joins the river Tesk.", prompt=PASSAGES[0].context)
                for i in range(1, 4)]
    cloned, seen = [], []
    for checkpointing in (False, True):
        model, tokenizer = models.load(str(tiny_model_dir))
        cfg = dataclasses.replace(sft, checkpointing=checkpointing)
        model = restem_mod.sft_generator(model, tokenizer, examples, cfg,
                                         on_step=lambda *_: seen.append(model.is_activation_checkpointing))
        assert not model.is_activation_checkpointing
        cloned.append(model.state_dict())
    assert seen == [False] * (len(seen) // 2) + [True] * (len(seen) // 2) and len(seen) >= 4
    assert not all(torch.equal(a, b) for a, b in zip(cloned[0].values(), models.load(str(tiny_model_dir))[0]
                                                    .state_dict().values()))  # the M-step moved the weights
    for name, tensor in cloned[0].items():
        torch.testing.assert_close(cloned[1][name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_batched_scoring_equals_one_at_a_time(tiny_model_dir, tmp_path):
    batched = small_config(tiny_model_dir, rounds=1, k=3)
    single = small_config(tiny_model_dir, rounds=1, k=3, inner=InnerConfig(rank=2, alpha=4, epochs=1, batch_size=4,
                                                                          parallel=1))
    a, b = Run(tmp_path / "a", batched), Run(tmp_path / "b", single)
    restem(domain(), PASSAGES, batched, a)
    restem(domain(), PASSAGES, single, b)
    assert episodes(a) == episodes(b)


def test_against_the_context_baseline_a_self_edit_wins_only_for_what_its_items_add(tiny_model_dir, tmp_path,
                                                                                    monkeypatch):
    vague, telling = "1. The canal is a canal.", "1. Barges carried coal along the waterway."
    monkeypatch.setattr(restem_mod, "sample_self_edits", lambda model, tok, domain, contexts, sampling, k, seed:
                        [[vague, telling] for c in contexts])
    # the passage teaches 0.1 whatever else is trained; only the telling item adds to it
    monkeypatch.setattr(restem_mod, "adapt_and_evaluate_all", lambda model, tok, domain, context, plans, cfgs: [
        SimpleNamespace(score=Score(0.1 + 0.2 * any("Barges" in e.completion for e in p.examples), metrics={}))
        for p in plans])
    monkeypatch.setattr(KnowledgeDomain, "evaluate", lambda self, model, tok, passage, supports=None: Score(0.0))
    rewarded, summaries = {}, {}
    for baseline in ("untouched", "context"):
        cfg = small_config(tiny_model_dir, rounds=1, reward="binary", require_improvement=True, baseline=baseline)
        run = Run(tmp_path / baseline, cfg)
        [summaries[baseline]] = restem(domain(), PASSAGES, cfg, run)
        rewarded[baseline] = sorted((e["context"], e["text"]) for e in run.records(event="episode") if e["reward"])
        assert [b["score"] for b in run.records(event="baseline")] == [0.0 if baseline == "untouched" else 0.1] * 2
    assert rewarded["untouched"] == sorted((i, t) for i in (0, 1) for t in (vague, telling))  # the passage's win
    assert rewarded["context"] == [(0, telling), (1, telling)]
    assert (summaries["context"]["baseline"], summaries["context"]["mean_baseline"]) == ("context", 0.1)


def test_the_context_baseline_trains_what_every_self_edit_trains_besides_its_items():
    knowledge = domain()
    for p in PASSAGES:
        plan = knowledge.context_plan(p)
        assert plan.examples == knowledge.parse(p, "1. Barges carried coal.").examples[:1]
        assert plan.examples[0].completion.startswith(p.title) and p.context in plan.examples[0].completion
    with pytest.raises(ValueError, match="baseline"):
        RestEMConfig(baseline="passage")


def test_a_domain_without_a_context_update_has_no_context_baseline(tiny_model_dir, tmp_path):
    cfg = small_config(tiny_model_dir, baseline="context")
    with pytest.raises(ValueError, match="arc domain does not define"):
        restem(SimpleNamespace(name="arc"), [], cfg, Run(tmp_path / "run", cfg))
