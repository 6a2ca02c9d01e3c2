"""seal.memory on the tiny model: versions, gate, rollback, strategies, routing, kill-safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seal import models
from seal.config import ConfigError, EvalConfig, InnerConfig, ModelConfig, SamplingConfig
from seal.domains.base import Score
from seal.domains.knowledge.data import Passage
from seal.domains.knowledge.quiz import cloze_questions, usable_pairs
from seal.inner.lora import load_adapter
from seal.memory import Document, Memory, MemoryConfig, MemoryDirError, Question
from seal.memory import memory as memory_module
from seal.memory.probe import perplexity
from seal.memory.store import Store
from seal.memory.weights import fold_in

CANAL = Document("Orrin Canal", "The Orrin Canal joins the river Tesk to the harbour of Lune. It opened in 1843 "
                 "after six years of work.", (Question("When did the Orrin Canal open?", "1843"),))
GLACIER = Document("Vattna Glacier", "The Vattna Glacier covers the northern plateau of Esk. It has retreated "
                   "four kilometres since 1890.", (Question("How far has the Vattna Glacier retreated?", "four kilometres"),))


def config(model_dir, **kw) -> MemoryConfig:
    kw = {"gate": False, "strategy": "merge", **kw}  # the strategy most tests exercise; router is the default
    return MemoryConfig(model=ModelConfig(name=str(model_dir)), sampling=SamplingConfig(max_new_tokens=12),
                        inner=InnerConfig(rank=2, alpha=4, epochs=2, lr=1e-2),
                        eval=EvalConfig(max_new_tokens=6, grader="containment"), **kw)


def version_file(path: Path, name: str) -> dict:
    return json.loads((path / "versions" / f"{name}.json").read_text())


@pytest.mark.parametrize("strategy", ["merge", "replay", "router", "consolidate"])
def test_learn_makes_versions_and_rollback_restores_answers(scrambled_model_dir, tmp_path, strategy):
    mem = Memory.open(tmp_path / "m", config(scrambled_model_dir, strategy=strategy, consolidate_every=2))
    assert mem.active == "base"
    question = "When did the Orrin Canal open?"
    base_answer = mem.answer(question, topic="Orrin Canal")
    first = mem.learn(CANAL)
    assert first.accepted and first.version == "v0001" and mem.active == "v0001"
    assert first.quiz == [{"question": question, "answer": "1843", "source": "user"}]
    learned_answer = mem.answer(question, topic="Orrin Canal")
    second = mem.learn(GLACIER)
    v1 = version_file(tmp_path / "m", "v0001")
    if strategy in ("merge", "replay"):
        assert len(v1["merged"]) == 1 and v1["routed"] == []
    else:
        assert v1["merged"] == [] and len(v1["routed"]) == 1
    if strategy == "consolidate":  # two documents held apart, then folded into one adapter: a second version
        assert second.consolidation["version"] == "v0003" and second.consolidation["documents"] == 2
        v3 = version_file(tmp_path / "m", "v0003")
        assert len(v3["merged"]) == 1 and v3["routed"] == [] and len(v3["documents"]) == 2
    if strategy == "replay":  # the second update also rehearsed the first document's sequences
        assert second.sequences > first.sequences
    names = [v["name"] for v in mem.versions()]
    assert names[:3] == ["base", "v0001", "v0002"]
    assert [v["documents"] for v in mem.versions()][2] == ["Orrin Canal", "Vattna Glacier"]
    assert learned_answer != base_answer  # the update changed what the model says

    mem.activate("v0001")
    assert mem.answer(question, topic="Orrin Canal") == learned_answer
    mem.activate("base")
    assert mem.answer(question, topic="Orrin Canal") == base_answer
    reopened = Memory.open(tmp_path / "m")
    assert reopened.active == "base" and reopened.cfg.strategy == strategy
    reopened.activate("v0001")
    assert reopened.answer(question, topic="Orrin Canal") == learned_answer
    assert mem.answer(question, topic="Orrin Canal") == learned_answer  # the other handle follows the pointer
    with pytest.raises(MemoryDirError, match="no version 'v0099'"):
        mem.activate("v0099")


def test_gate_rejects_an_update_that_does_not_help_and_keeps_no_version(tiny_model_dir, tmp_path):
    mem = Memory.open(tmp_path / "m", config(tiny_model_dir, gate=True))
    result = mem.learn(CANAL)  # the random tiny model answers nothing right, before or after
    assert not result.accepted and result.version is None
    assert result.reason.startswith("quiz accuracy did not improve")
    assert [t["scale"] for t in result.scales_tried] == [1.0]  # one that taught nothing is not tried smaller
    assert mem.active == "base" and [v["name"] for v in mem.versions()] == ["base"]
    assert not list((tmp_path / "m" / "adapters").iterdir())
    assert not list((tmp_path / "m" / "staging").iterdir())  # the rejected adapter is not kept on disk
    record = json.loads((tmp_path / "m" / "learns.jsonl").read_text().splitlines()[0])
    assert record["accepted"] is False and record["title"] == "Orrin Canal"


def test_a_quiz_tie_is_kept_when_ties_are_kept(tiny_model_dir, tmp_path):
    from seal.config import from_dict

    mem = Memory.open(tmp_path / "m", config(tiny_model_dir, gate=True, strategy="router", quiz_ties="keep"))
    result = mem.learn(CANAL)  # 0 % -> 0 %, as in the test above
    assert result.quiz_before == result.quiz_after == 0.0
    assert result.accepted and result.reason.startswith("quiz accuracy 0% -> 0% (a tie, kept)") and mem.active == "v0001"
    with pytest.raises(ConfigError, match="quiz_ties"):
        from_dict(MemoryConfig, {"quiz_ties": "sometimes"})


def test_without_questions_the_gate_uses_a_held_out_self_quiz(tiny_model_dir, tmp_path):
    mem = Memory.open(tmp_path / "m", config(tiny_model_dir))
    result = mem.learn(Document(CANAL.title, CANAL.text))
    assert result.quiz and all(q["source"] in ("model", "cloze") for q in result.quiz)
    assert {"question": "Fill in the blank: It opened in ___ after six years of work.", "answer": "1843",
            "source": "cloze"} in result.quiz
    assert len(result.answers_after) == len(result.quiz)


def test_self_qa_items_train_in_the_configured_answer_format(tiny_model_dir, tmp_path, monkeypatch):

    self_edit = "Question: Which river does the canal join?\nAnswer: the Tesk"
    monkeypatch.setattr(memory_module, "sample_self_edits", lambda *a, **k: [[self_edit]])
    for qa_format in ("chat", "text"):
        mem = Memory.open(tmp_path / qa_format, config(tiny_model_dir, prompt="self-qa", qa_format=qa_format))
        mem.learn(CANAL)
        [doc] = (tmp_path / qa_format / "documents").iterdir()
        passage, item = json.loads(doc.read_text())["sequences"]
        assert passage[0] == "" and CANAL.text in passage[1]
        if qa_format == "chat":  # the closed-book question as the prompt, the loss on the answer only
            assert "Which river does the canal join?" in item[0] and item[1].strip() == "the Tesk"
        else:
            assert item[0] == "" and "Which river does the canal join?" in item[1] and "the Tesk" in item[1]


@torch.no_grad()
def test_probe_perplexity_is_the_exp_of_the_mean_next_token_loss(tiny):
    model, tok = tiny
    text = CANAL.text * 3
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    mean_loss = torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:])
    assert perplexity(model, tok, text) == pytest.approx(torch.exp(mean_loss).item(), rel=1e-5)
    with pytest.raises(ValueError, match="two tokens"):
        perplexity(model, tok, "x")


def test_quiz_pairs_must_be_short_and_supported_by_the_document():
    passage = Passage("Orrin Canal", CANAL.text)
    text = ("Question 1: When did the canal open?\nAnswer: 1843\n\nQuestion 2: What colour is it?\nAnswer: blue\n"
            "Question 3: Which river does the Orrin Canal join?\nAnswer: the river Tesk\n"
            "Question 4: What joins the Tesk to Lune?\nAnswer: the Orrin Canal joins the river Tesk to the harbour of Lune\n"
            "Question 5: 2. How long did the work take?\nAnswer: six years\n"
            "Question 6: The Orrin Canal opened in 1843.\nAnswer: 1843\n"  # a statement, not a question
            "Question 7: Where does the canal lead?\nAnswer: Lune harbour\n"  # its words, not a span of the document
            "Question 8: 1843年, what opened?\nAnswer: the Orrin Canal\n"  # a letter the document does not use
            "Question 9: What did the Orrin Canal's builders open?\nAnswer: the Orrin Canal")  # given away
    assert usable_pairs(passage, text) == [("When did the canal open?", "1843"),
                                           ("Which river does the Orrin Canal join?", "the river Tesk"),
                                           ("How long did the work take?", "six years")]
    cloze = cloze_questions(passage, 5)
    assert [q.answer for q in cloze] == ["Orrin Canal", "1843"]
    formula = Passage("Series", "The harmonic series 1 + 1/2 + 1/3 diverges, as Oresme showed around 1350 already.")
    assert [q.answer for q in cloze_questions(formula, 1)] == ["1350"]  # a lone digit is not blanked
    cited = Passage("Tesla", "Tesla fired a secretary because of her weight.:110 He was quick to criticize clothing.")
    assert [q.answer for q in cloze_questions(cited, 1)] == ["secretary"]  # a citation's page is not a fact
    # a blank the rest of the sentence gives away is not asked: the next candidate is
    repeated = Passage("Shah", "The Shah's army was split by feuds and by the Shah's decision to divide it.")
    assert [q.answer for q in cloze_questions(repeated, 1)] == ["decision"]


def test_reopening_refuses_another_model_or_strategy(tiny_model_dir, scrambled_model_dir, tmp_path):
    Memory.open(tmp_path / "m", config(tiny_model_dir))
    with pytest.raises(MemoryDirError, match="strategy: 'merge' -> 'router'"):
        Memory.open(tmp_path / "m", config(tiny_model_dir, strategy="router"))
    with pytest.raises(MemoryDirError, match="model"):
        Memory.open(tmp_path / "m", config(scrambled_model_dir))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(MemoryDirError, match="not empty"):
        Memory.open(tmp_path / "other", config(tiny_model_dir))


def test_a_memory_from_before_a_default_changed_keeps_learning_as_it_was_created(tiny_model_dir, tmp_path):
    """sampling.pieces came in as 3: a memory whose saved settings predate it goes on sampling one piece."""
    Memory.open(tmp_path / "m", config(tiny_model_dir))
    meta = json.loads((tmp_path / "m" / "memory.json").read_text())
    del meta["config"]["sampling"]["pieces"], meta["config"]["fold_scales"]
    (tmp_path / "m" / "memory.json").write_text(json.dumps(meta))
    assert Memory.open(tmp_path / "m").cfg.sampling.pieces == 1 and MemoryConfig().sampling.pieces == 3
    assert Memory.open(tmp_path / "m").cfg.fold_scales == [1.0] and MemoryConfig().fold_scales == [1.0, 0.5, 0.25]


def test_folded_weights_match_peft_merge(scrambled_model_dir, tmp_path):
    mem = Memory.open(tmp_path / "m", config(scrambled_model_dir))
    mem.learn(CANAL)
    adapter = next((tmp_path / "m" / "adapters").iterdir())
    ours, _ = models.load(str(scrambled_model_dir))
    fold_in(ours, mem.cfg.inner, adapter)
    theirs, _ = models.load(str(scrambled_model_dir))
    theirs = load_adapter(theirs, adapter).merge_and_unload()
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)


def test_an_update_that_costs_the_probe_is_folded_in_at_the_largest_scale_that_holds(scrambled_model_dir, tmp_path,
                                                                                      monkeypatch):
    """The gentler merge: the quiz improves at every scale here, the probe holds only at half scale or less, so
    the update is tried at 1, then 0.5, kept at 0.5: the version's weights are the base plus half the update."""
    mem = Memory.open(tmp_path / "m", config(scrambled_model_dir, gate=True, fold_scales=[1.0, 0.5, 0.25]))
    monkeypatch.setattr(Memory, "_quiz_score", lambda self, passage: Score(len(self._loaded.merged) / 2))
    holds_at = 0.5
    monkeypatch.setattr(memory_module.probes, "holds", lambda before, after, cfg: (
        (True, "") if mem._loaded.merged[-1][1] <= holds_at else (False, "general probe fell from 100% to 50%")))
    result = mem.learn(CANAL)
    assert result.accepted and result.scale == 0.5 and mem.active == "v0001"
    assert [(t["scale"], t["reason"]) for t in result.scales_tried] == [
        (1.0, "general probe fell from 100% to 50%"),
        (0.5, "quiz accuracy 0% -> 50%; general probe held (at scale 0.5)")]
    adapter = next((tmp_path / "m" / "adapters").iterdir())
    assert version_file(tmp_path / "m", "v0001")["scales"] == {adapter.name: 0.5}

    base, _ = models.load(str(scrambled_model_dir))
    full, _ = models.load(str(scrambled_model_dir))
    fold_in(full, mem.cfg.inner, adapter)
    reopened = Memory.open(tmp_path / "m")
    reopened.answer("warm up")  # loads the active version, folded in from disk
    changed = 0
    for (name, w0), (_, w1), (_, held) in zip(base.named_parameters(), full.named_parameters(),
                                               reopened._loaded.model.named_parameters()):
        torch.testing.assert_close(held, w0 + 0.5 * (w1 - w0), msg=name)
        changed += not torch.equal(w0, w1)
    assert changed  # the update touched the weights, so half of it is not the base either

    holds_at = 0.1  # rejected at every scale: the result reports the update as trained, at full scale
    rejected = mem.learn(GLACIER)
    assert not rejected.accepted and mem.active == "v0001" and [t["scale"] for t in rejected.scales_tried] == [1, 0.5, 0.25]
    assert (rejected.scale, rejected.quiz_after, rejected.reason) == (1.0, 1.0, "general probe fell from 100% to 50%")

    with pytest.raises(ConfigError, match="fold_scales"):
        MemoryConfig(fold_scales=[1.0, 0.0])


@pytest.mark.parametrize("against, second_kept", [("untouched", False), ("parent", True)])
def test_the_probe_is_held_to_the_untouched_model_so_small_losses_cannot_add_up(tiny_model_dir, tmp_path,
                                                                                 monkeypatch, against, second_kept):
    """Each update raises the probe's perplexity 1.15x: within tolerance (1.2x) of the version it starts from,
    but after the second update 1.32x the untouched model's."""
    cfg = config(tiny_model_dir, gate=True)
    cfg.probe.against = against
    mem = Memory.open(tmp_path / "m", cfg)
    monkeypatch.setattr(Memory, "_quiz_score", lambda self, passage: Score(len(self._loaded.merged) / 2))
    base = mem._probe_of("base")
    monkeypatch.setattr(Memory, "_probe_score", lambda self: {
        "accuracy": base["accuracy"], "perplexity": base["perplexity"] * 1.15 ** len(self._loaded.merged)})
    first = mem.learn(CANAL)
    assert first.accepted and first.probe_after["perplexity"] == pytest.approx(base["perplexity"] * 1.15)
    second = mem.learn(GLACIER)
    assert second.accepted is second_kept and second.probe_before == first.probe_after
    if not second_kept:
        assert second.reason == (f"perplexity on the probe text rose from {base['perplexity']:.1f} to "
                                 f"{base['perplexity'] * 1.15 ** 2:.1f}") and mem.active == "v0001"
        assert [t["scale"] for t in second.scales_tried] == [1.0, 0.5, 0.25]
    meta = json.loads((tmp_path / "m" / "memory.json").read_text())
    del meta["config"]["probe"]["against"]  # a memory from before the setting was held to its parent version
    (tmp_path / "m" / "memory.json").write_text(json.dumps(meta))
    assert Memory.open(tmp_path / "m").cfg.probe.against == "parent"


def test_router_picks_the_learned_document_or_none_and_batches_mixed_adapters(scrambled_model_dir, tmp_path):
    mem = Memory.open(tmp_path / "m", config(scrambled_model_dir, strategy="router"))
    mem.learn(CANAL)
    mem.learn(GLACIER)
    mem.answer("warm up")  # loads the active version
    assert [d["title"] for d in mem.routed_documents()] == ["Orrin Canal", "Vattna Glacier"]
    assert mem.route("When did the Orrin Canal open?") == 0
    assert mem.route("How far has the glacier on the Esk plateau retreated?") == 1
    assert mem.route("What do worker bees turn nectar into?") is None  # a background passage wins
    assert mem.route("What is it that has been there since then?") is None  # stop words reach no adapter
    questions = ["When did the Orrin Canal open?", "How far has the Vattna Glacier retreated?",
                 "What do worker bees turn nectar into?"]
    together = mem.answer_many(questions)
    assert [mem.answer(q) for q in questions] == together  # given again from what was answered
    fresh = Memory.open(tmp_path / "m")  # nothing answered yet: each question decoded on its own
    assert [fresh.answer(q) for q in questions] == together
    assert ["".join(mem.answer_stream(q)) for q in questions] == together  # streamed through the same adapters
    # the routed answer is the document's own adapter's answer, as peft computes it
    adapter = tmp_path / "m" / "adapters" / version_file(tmp_path / "m", "v0002")["routed"][1]["adapter"]
    model, tokenizer = models.load(str(scrambled_model_dir))
    from seal.domains.knowledge.prompts import answer_prompt
    from seal.generation import chat_prompt, generate

    # asked with no topic, a routed question is asked under its document's title, as the gate asked it
    unrouted = generate(model, tokenizer, [chat_prompt(tokenizer, questions[2])], max_new_tokens=6)[0][0]
    assert together[2] == unrouted  # the bare question, to the base model
    prompt = chat_prompt(tokenizer, answer_prompt("Vattna Glacier", questions[1]))
    expected = generate(load_adapter(model, adapter), tokenizer, [prompt], max_new_tokens=6)[0][0]
    assert together[1] == expected == mem.answer(questions[1], topic="Vattna Glacier")


def test_an_answer_is_decoded_once_per_weights_and_adapter(scrambled_model_dir, tmp_path, monkeypatch):
    """A router's update leaves the weights alone: a question it does not route is answered again without decoding,
    one it routes to the new adapter is decoded; folding an adapter in (merge) changes every answer's weights."""
    from seal.memory import loaded

    decoded = []
    real = loaded.routed_generate
    monkeypatch.setattr(loaded, "routed_generate", lambda *a, **kw: decoded.extend(a[4]) or real(*a, **kw))
    bees, canal = "What do worker bees turn nectar into?", "When did the Orrin Canal open?"
    for strategy in ("router", "merge"):
        mem = Memory.open(tmp_path / strategy, config(scrambled_model_dir, strategy=strategy))
        decoded.clear()  # (opening chose the general probe)
        before = mem.answer_many([bees, canal, bees])
        assert len(decoded) == 2  # the same prompt twice in one call is decoded once
        mem.learn(CANAL)  # its gate asked `canal` of the update it kept
        decoded.clear()
        after = mem.answer_many([bees, canal, "Where does the Orrin Canal lead?"])
        assert after[1] != before[1] and not any(canal in p for p in decoded)
        if strategy == "router":
            assert after[0] == before[0] and len(decoded) == 1 and "Where does" in decoded[0]
        else:
            assert len(decoded) == 2
        decoded.clear()


def test_the_quiz_answers_logprob_is_recorded_through_the_routed_adapter(scrambled_model_dir, tmp_path):
    from seal.domains.knowledge.prompts import answer_prompt
    from seal.generation import chat_prompt, loglik

    mem = Memory.open(tmp_path / "m", config(scrambled_model_dir, strategy="router"))
    result = mem.learn(GLACIER)
    assert result.quiz_logprob_before < result.quiz_logprob_after < 0  # trained on it: likelier
    assert mem.learn_records()[-1]["quiz_logprob_after"] == result.quiz_logprob_after
    # what peft gives with the document's adapter loaded, per token of the answer
    adapter = tmp_path / "m" / "adapters" / version_file(tmp_path / "m", "v0001")["routed"][0]["adapter"]
    model, tokenizer = models.load(str(scrambled_model_dir))
    question, answer = GLACIER.questions[0].question, GLACIER.questions[0].answer
    pair = (chat_prompt(tokenizer, answer_prompt("Vattna Glacier", question)), answer)
    tokens = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    assert result.quiz_logprob_before == pytest.approx(loglik(model, tokenizer, [pair])[0] / tokens, rel=1e-3)
    assert result.quiz_logprob_after == pytest.approx(loglik(load_adapter(model, adapter), tokenizer, [pair])[0] / tokens,
                                                      rel=1e-3)


def test_a_question_about_a_folded_in_document_is_asked_under_its_title(scrambled_model_dir, tmp_path):
    mem = Memory.open(tmp_path / "m", config(scrambled_model_dir, strategy="merge"))
    mem.learn(CANAL)
    question = "When did the Orrin Canal open?"
    assert mem.answer(question) == mem.answer(question, topic="Orrin Canal")  # as the gate asked it
    assert mem.answer(question) != mem.answer(question, topic="Vattna Glacier")
    assert mem._loaded.topic("What do worker bees turn nectar into?") is None  # about nothing held: asked bare


def _learner(model_dir, memory_dir, strategy: str, count: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(Path(__file__).parent / "memory_child.py"), str(model_dir),
                             str(memory_dir), strategy, str(count)], stdout=subprocess.PIPE, text=True, env=env)


def test_a_learner_killed_mid_learn_leaves_the_last_complete_version(scrambled_model_dir, tmp_path):
    """A learner in another process (consolidating every 2 documents), killed with SIGKILL while training its
    second document, then while committing its third: the memory reopens on a complete version whose
    answers are those of that version rebuilt from scratch, and a handle that was answering meanwhile follows."""
    path = tmp_path / "m"
    answering = None
    for kill_in, stage in ((2, "train"), (3, "commit")):  # the learn (over the whole memory) the learner dies in
        done = len(Store(path).learn_records())
        proc = _learner(scrambled_model_dir, path, "consolidate", 4)
        for line in proc.stdout:
            if line.startswith("learned"):
                done += 1
                if answering is None:
                    answering = Memory.open(path)  # another handle, answering while the learner works
                    answering.answer("When did Canal 0 open?")
            elif line.strip() == stage and done >= kill_in - 1:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        reopened = Memory.open(path)
        active = reopened.active
        assert active != "base"
        record = version_file(path, active)
        for adapter in record["merged"] + [r["adapter"] for r in record["routed"]]:
            assert (path / "adapters" / adapter / "adapter_model.safetensors").is_file()
        fresh = Memory.open(path)
        question = "When did Canal 0 open?"
        assert reopened.answer(question) == fresh.answer(question, version=active)
        assert answering.answer(question) == fresh.answer(question)  # the answering handle followed the pointer
    assert Memory.open(path).learn(GLACIER).accepted  # the next learn clears what the killed ones left in staging
    assert not [p for p in (path / "staging").iterdir()]


def test_a_learn_killed_in_the_consolidation_after_it_is_on_record(scrambled_model_dir, tmp_path):
    """The learn that makes a consolidation due is committed, then the consolidation trains for minutes: a kill
    there leaves that learn's version active, and its record must be on file, or a resumed run learns it again."""
    path = tmp_path / "m"
    proc = _learner(scrambled_model_dir, path, "consolidate", 2)
    committed = 0
    for line in proc.stdout:
        committed += line.strip() == "commit"
        if committed == 2 and line.strip() == "train":  # the second document committed, the fold training
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    memory = Memory.open(path)
    records = memory.learn_records()
    assert [r["version"] for r in records] == ["v0001", "v0002"] == [v["name"] for v in memory.versions()[1:]]
    assert memory.active == "v0002" and records[1]["consolidation"] is None
    finished = memory.learn(GLACIER)  # the next learn folds all three documents in, and its record says so
    assert finished.consolidation["documents"] == 3
    assert memory.learn_records()[-1]["consolidation"] == finished.consolidation
    assert memory.learn_records()[-1]["seconds"] == pytest.approx(finished.seconds)


class _Killed(BaseException):
    """Stands for a SIGKILL at one exact instant, which a signal from another process cannot hit."""


def test_a_kill_between_the_record_and_the_pointer_is_finished_on_reopening(scrambled_model_dir, tmp_path,
                                                                            monkeypatch):
    """The learn's journal line is the commit point: killed after it and before the pointer moved, the memory
    reopens on the recorded version; a rollback is journalled too, so reopening does not undo it; a journal from
    before the lines named a version to activate is left as it is."""
    path = tmp_path / "m"
    memory = Memory.open(path, config(scrambled_model_dir))

    def killed(self, name):
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(Store, "set_active", killed)
        with pytest.raises(_Killed):
            memory.learn(CANAL)
    assert (path / "ACTIVE").read_text().strip() == "base"  # as the kill left it
    reopened = Memory.open(path)
    assert reopened.active == "v0001" and [r["version"] for r in reopened.learn_records()] == ["v0001"]
    assert reopened.learn(GLACIER).version == "v0002"

    reopened.activate("v0001")  # a rollback, on the journal
    assert Memory.open(path).active == "v0001" and len(Memory.open(path).learn_records()) == 2
    journal = path / "learns.jsonl"
    old = [json.loads(line) for line in journal.read_text().splitlines()]
    journal.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "activate"}) + "\n"
                               for r in old if "accepted" in r))  # as written before the commit point moved
    (path / "ACTIVE").write_text("base\n")  # rolled back, unjournalled
    assert Memory.open(path).active == "base"
