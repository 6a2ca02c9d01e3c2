"""seal.generation on the tiny model: greedy and sampled decoding, seeds, batching, left padding, chat prompts,
filling in a template, streaming, log-likelihoods and next-token log-probabilities."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from seal import models
from seal.config import SamplingConfig
from seal.generation import chat_prompt, fill_in, generate, loglik, next_token_logprobs, sample_self_edits, stream

PROMPTS = [
    "When did",
    "The Orrin Canal joins the river Tesk to the harbour of Lune",
    "Question: Who built it? Answer:",
    "x",
]


@pytest.fixture(scope="module")
def lm(scrambled_model_dir):
    return models.load(str(scrambled_model_dir))


def test_greedy_is_deterministic_and_context_dependent(lm):
    model, tok = lm
    a = generate(model, tok, PROMPTS, max_new_tokens=10)
    b = generate(model, tok, PROMPTS, max_new_tokens=10)
    assert a == b
    assert [len(x) for x in a] == [1] * len(PROMPTS)
    assert all(x[0] for x in a) and len({x[0] for x in a}) == len(PROMPTS)


def test_left_padding_does_not_change_greedy_answers(lm):
    model, tok = lm
    tok.padding_side = "right"
    alone = [generate(model, tok, [p], max_new_tokens=10)[0][0] for p in PROMPTS]
    together = generate(model, tok, PROMPTS, max_new_tokens=10, batch_size=len(PROMPTS))
    assert [x[0] for x in together] == alone
    reordered = generate(model, tok, PROMPTS[::-1], max_new_tokens=10, batch_size=3)
    assert [x[0] for x in reordered] == alone[::-1]
    assert tok.padding_side == "right"  # the caller's tokenizer setting is restored


def test_sampling_is_reproducible_for_a_seed_and_differs_across_seeds(lm):
    model, tok = lm
    kw = dict(max_new_tokens=8, temperature=1.0, top_p=1.0, num_samples=3, batch_size=4)
    a = generate(model, tok, PROMPTS[:2], seed=7, **kw)
    assert a == generate(model, tok, PROMPTS[:2], seed=7, **kw)
    b = generate(model, tok, PROMPTS[:2], seed=8, **kw)
    assert a != b
    assert len(set(a[0] + a[1])) == 6  # samples of one prompt differ from each other


def test_different_seeds_share_no_samples_across_batches(lm):
    """A later batch of one seed must not replay an earlier batch of another seed."""
    model, tok = lm
    kw = dict(max_new_tokens=8, temperature=1.0, num_samples=4, batch_size=2)
    (a,) = generate(model, tok, [PROMPTS[1]], seed=0, **kw)
    (b,) = generate(model, tok, [PROMPTS[1]], seed=2, **kw)
    assert set(a).isdisjoint(b), (a, b)


def test_num_samples_shape_and_token_budget(lm, monkeypatch):
    model, tok = lm
    decoded = []
    decode = tok.decode
    monkeypatch.setattr(tok, "decode", lambda ids, **kw: decoded.append(len(ids)) or decode(ids, **kw))
    out = generate(model, tok, PROMPTS[:3], max_new_tokens=5, temperature=0.8, num_samples=4, batch_size=5)
    assert [len(x) for x in out] == [4, 4, 4]
    assert all(isinstance(s, str) for x in out for s in x)
    assert len(decoded) == 12 and max(decoded) <= 5
    assert generate(model, tok, [], max_new_tokens=5) == []


def test_greedy_batches_equal_single_calls(lm):
    model, tok = lm
    singles = [generate(model, tok, [p], max_new_tokens=6)[0] for p in PROMPTS]
    for bs in (1, 3):
        assert generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=bs) == singles


def test_a_stream_is_the_greedy_answer_in_pieces(lm):
    model, tok = lm
    for prompt in PROMPTS:
        pieces = list(stream(model, tok, chat_prompt(tok, prompt), max_new_tokens=40))
        assert "".join(pieces) == generate(model, tok, [chat_prompt(tok, prompt)], max_new_tokens=40)[0][0]
        assert len(pieces) > 1 and all(pieces)


def test_leaving_a_stream_early_stops_its_generation(lm):
    model, tok = lm
    steps = []

    def slow_step(*_) -> None:  # one per forward pass; 20 ms each gives the race with close() a wide margin
        steps.append(1)
        time.sleep(0.02)

    hook = model.register_forward_hook(slow_step)
    try:
        pieces = stream(model, tok, chat_prompt(tok, PROMPTS[1]), max_new_tokens=400)
        next(pieces)
        pieces.close()  # returns once the generating thread has ended
    finally:
        hook.remove()
    assert not [t for t in threading.enumerate() if t.name == "stream"]
    assert len(steps) < 40  # a few tokens past the first piece; without the stop, 87 (then EOS)
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(stream(model, tok, "x", max_new_tokens=0))


def test_a_failure_while_streaming_reaches_the_reader(lm):
    model, tok = lm

    def broken(*_) -> None:
        raise RuntimeError("out of memory")

    hook = model.register_forward_hook(broken)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            list(stream(model, tok, "x", max_new_tokens=5))
    finally:
        hook.remove()


def test_bad_arguments(lm):
    model, tok = lm
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, tok, ["a"], max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, tok, ["a"], max_new_tokens=4, num_samples=2)


def test_chat_prompt_uses_the_template(tiny):
    _, tok = tiny
    text = chat_prompt(tok, "When did the Orrin Canal open?")
    assert text == tok.apply_chat_template(
        [{"role": "user", "content": "When did the Orrin Canal open?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nWhen did the Orrin Canal open?<|im_end|>\n<|im_start|>assistant\n"
    tok.chat_template = None
    assert chat_prompt(tok, "plain text") == "plain text"


def test_chat_prompt_answers_decode_without_special_tokens(lm):
    model, tok = lm
    (answer,) = generate(model, tok, [chat_prompt(tok, "When did the Orrin Canal open?")], max_new_tokens=12)[0:1]
    assert "<|im_end|>" not in answer[0] and "<|endoftext|>" not in answer[0]
    assert answer[0] == answer[0].strip()


TEMPLATE = [("Colour:", (" red", " dark green", " blue")), (" size", ()), (" =", (" 1", " 22 7"))]


def _choice_logprob(model, tok, before: str, choice: str) -> float:
    """log p(choice | before) from one full forward pass, no cache: what fill_in's cached scoring must equal."""
    a = tok(before, add_special_tokens=False, return_tensors="pt")["input_ids"]
    b = tok(choice, add_special_tokens=False, return_tensors="pt")["input_ids"]
    logits = model(torch.cat([a, b], 1)).logits[0, a.shape[1] - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(1, b[0, :, None]).sum().item()


def test_fill_in_follows_the_template_and_its_greedy_choice_is_the_likeliest(lm):
    model, tok = lm
    [[text]] = fill_in(model, tok, ["Describe the box."], TEMPLATE, temperature=0)
    colour = max(TEMPLATE[0][1], key=lambda c: _choice_logprob(model, tok, "Describe the box.Colour:", c))
    before = f"Describe the box.Colour:{colour} size ="
    number = max(TEMPLATE[2][1], key=lambda c: _choice_logprob(model, tok, before, c))
    assert text == f"Colour:{colour} size ={number}"


@torch.no_grad()
def test_loglik_of_texts_or_token_ids_equals_one_forward_pass_each(lm):
    """Batched and padded, each pair scores as it does alone; token ids score as the text they cut."""
    model, tok = lm
    pairs = [(p, " 1843 and the river Tesk") for p in PROMPTS] + [("Orrin", "x")]
    expected = [_choice_logprob(model, tok, p, a) for p, a in pairs]
    assert loglik(model, tok, pairs, batch_size=3) == pytest.approx(expected, abs=1e-4)
    ids = tok(PROMPTS[1], add_special_tokens=False)["input_ids"]
    whole = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)
    by_token = whole.gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
    assert loglik(model, tok, [(ids[:1], ids[1:])]) == pytest.approx([by_token], abs=1e-4)
    with pytest.raises(ValueError, match="empty"):
        loglik(model, tok, [("When did", "")])


@torch.no_grad()
def test_next_token_logprobs_are_the_last_positions_distribution(lm):
    model, tok = lm
    tokens = [5, 17, 300]
    got = next_token_logprobs(model, tok, PROMPTS, tokens)
    for prompt, row in zip(PROMPTS, got):
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        expected = torch.log_softmax(model(ids).logits[0, -1].float(), -1)[tokens]
        assert row == pytest.approx(expected.tolist(), abs=1e-5)
    assert got[0] != got[1]


def test_fill_in_samples_are_seeded_and_vary(lm):
    model, tok = lm
    a = fill_in(model, tok, PROMPTS[:2], TEMPLATE, temperature=5.0, num_samples=6, seed=3)
    assert a == fill_in(model, tok, PROMPTS[:2], TEMPLATE, temperature=5.0, num_samples=6, seed=3)
    assert [len(x) for x in a] == [6, 6] and len({t for x in a for t in x}) > 1
    assert all(t.startswith("Colour:") and " size =" in t for x in a for t in x)
    with pytest.raises(ValueError, match="at least two"):
        fill_in(model, tok, ["x"], [("a", (" b",))], temperature=1.0)


def test_structured_sampling_needs_the_domains_template(lm):
    model, tok = lm

    class Untemplated:
        name = "untemplated"

        def self_edit_prompt(self, context):
            return context

    with pytest.raises(ValueError, match="untemplated domain has no self-edit template"):
        sample_self_edits(model, tok, Untemplated(), ["x"], SamplingConfig(structured=True), 1, seed=0)
    [[free]] = sample_self_edits(model, tok, Untemplated(), ["x"], SamplingConfig(max_new_tokens=4), 1, seed=0)
    assert free  # written freely


def test_structured_knowledge_self_edits_are_question_answer_pairs_written_sentence_by_sentence(lm):
    from seal.domains.knowledge.data import Passage
    from seal.domains.knowledge.domain import KnowledgeDomain
    from seal.domains.knowledge.selfedit import qa_pair, split_self_edit

    model, tok = lm
    passages = [Passage("Orrin Canal", "The Orrin Canal opened in 1843. It joins the Tesk to Lune."),
                Passage("Lune", "Lune is a harbour town.")]
    domain, cfg = KnowledgeDomain(prompt="self-qa", qa_format="chat"), SamplingConfig(structured=True)
    first = sample_self_edits(model, tok, domain, passages, cfg, 3, seed=5)
    assert first == sample_self_edits(model, tok, domain, passages, cfg, 3, seed=5)  # seeded
    assert [len(s) for s in first] == [3, 3] and len(set(first[0])) > 1  # samples differ
    items = [split_self_edit(text) for texts in first for text in texts]
    assert max(len(i) for i in items[:3]) <= 2 and max(len(i) for i in items[3:]) <= 1  # one pair per sentence at most
    assert any(items) and all(qa_pair(item) for per_edit in items for item in per_edit)


def test_self_qa_answered_open_book_trains_what_the_model_says_with_the_passage_in_view(lm, monkeypatch):
    from seal.domains.knowledge import domain as knowledge
    from seal.domains.knowledge.data import Passage
    from seal.domains.knowledge.prompts import answer_prompt
    from seal.domains.knowledge.selfedit import qa_pair, split_self_edit

    _, tok = lm
    passage = Passage("Orrin Canal", "The Orrin Canal opened in 1843. It joins the Tesk to Lune. Barges pay a toll.")
    book = (passage.title, passage.context)
    asked_open_book = []

    def scripted(model, tokenizer, prompts, **kwargs):  # the model's side, by prompt: ask, scaffold answer, open book
        outs = []
        for p in prompts:
            n = next(i for i, s in enumerate(("opened in 1843", "joins the Tesk", "pay a toll")) if s in p)
            if p.endswith("Question:"):
                outs.append([f" Fact {n}?\nAnswer: ignored"])
            elif p.endswith("Answer:"):
                outs.append([f" scaffold {n}\nmore"])
            else:  # the whole passage is in view: the question says which
                asked_open_book.append(p)
                n = p.rsplit("Fact ", 1)[1][0]
                outs.append([f"open {n}. A second sentence is not graded, so not trained."])
        return outs

    monkeypatch.setattr(knowledge, "generate", scripted)
    domain = knowledge.KnowledgeDomain(prompt="self-qa", qa_format="chat")

    def pairs(answers):
        [[text]] = domain.write_self_edits(None, tok, [passage], SamplingConfig(structured=True, answers=answers), 1, 0)
        return [qa_pair(item) for item in split_self_edit(text)]

    assert pairs("scaffold") == [(f"Fact {n}?", f"scaffold {n}") for n in range(3)] and not asked_open_book
    assert pairs("open-book") == [(f"Fact {n}?", f"open {n}.") for n in range(3)]
    # asked exactly as the closed-book eval asks, with the passage before the question
    assert asked_open_book == [chat_prompt(tok, answer_prompt(passage.title, f"Fact {n}?", book)) for n in range(3)]

    calls = []

    def agrees_on_the_middle_one(question, gold, prediction):
        calls.append((question, gold, prediction))
        return question == "Fact 1?"

    domain.grader = agrees_on_the_middle_one
    assert pairs("checked") == [("Fact 1?", "open 1.")]  # the others are dropped
    assert calls == [(f"Fact {n}?", f"open {n}.", f"scaffold {n}") for n in range(3)]  # gold: the open-book answer


def test_a_structured_self_edit_is_cloned_as_the_scaffold_prompts_it_was_written_from(lm):
    from seal.domains.knowledge.data import Passage
    from seal.domains.knowledge.domain import KnowledgeDomain
    from seal.generation import self_edit_examples

    _, tok = lm
    passage = Passage("Orrin Canal", "The Orrin Canal opened in 1843. It joins the river Tesk to the harbour of Lune.")
    domain = KnowledgeDomain(prompt="self-qa", qa_format="chat")
    text = "Question: Which river does the canal join?\nAnswer: the Tesk\n\nQuestion: When did it open?\nAnswer: 1843"
    river, year = self_edit_examples(tok, domain, passage, text, SamplingConfig(structured=True))
    assert "joins the river Tesk" in river.prompt and "1843" not in river.prompt  # each pair to its own sentence
    assert "opened in 1843" in year.prompt and river.prompt.endswith("Question:")
    assert river.completion == " Which river does the canal join?\nAnswer: the Tesk"
    assert year.completion == " When did it open?\nAnswer: 1843"
    [whole] = self_edit_examples(tok, domain, passage, text, SamplingConfig(structured=False))  # written in one piece
    assert whole.completion == text and passage.context in whole.prompt


def test_a_self_edit_of_several_pieces_joins_that_many_samples_and_is_cloned_piece_by_piece(lm):
    from seal.domains.knowledge.data import Passage
    from seal.domains.knowledge.domain import KnowledgeDomain
    from seal.domains.knowledge.selfedit import split_self_edit
    from seal.generation import PIECE_SEPARATOR, self_edit_examples

    model, tok = lm
    passage = Passage("Orrin Canal", "The Orrin Canal opened in 1843. It joins the river Tesk to the harbour of Lune.")
    domain = KnowledgeDomain(prompt="implications")
    one = SamplingConfig(temperature=1.0, max_new_tokens=12)
    three = SamplingConfig(temperature=1.0, max_new_tokens=12, pieces=3)
    [singles] = sample_self_edits(model, tok, domain, [passage], one, 6, seed=3)
    [joined] = sample_self_edits(model, tok, domain, [passage], three, 2, seed=3)
    assert len(joined) == 2 and len(set(singles)) == 6
    assert [t.split(PIECE_SEPARATOR) for t in joined] == [
        [s.strip("\n") for s in singles[:3]], [s.strip("\n") for s in singles[3:]]]  # the same samples, grouped
    examples = self_edit_examples(tok, domain, passage, joined[0], three)
    usable = [p for p in joined[0].split(PIECE_SEPARATOR) if split_self_edit(p)]  # pieces that describe an update
    assert usable and [e.completion for e in examples] == usable
    assert all(passage.context in e.prompt for e in examples)  # each piece as the answer to the prompt it came from


def test_with_drop_copied_the_m_step_clones_only_the_items_in_the_generators_own_words(lm):
    from seal.domains.knowledge.data import Passage
    from seal.domains.knowledge.domain import KnowledgeDomain
    from seal.generation import PIECE_SEPARATOR, self_edit_examples

    _, tok = lm
    passage = Passage("Orrin Canal", "The Orrin Canal opened in 1843 and joins the river Tesk to the harbour of Lune.")
    copied = "The Orrin Canal opened in 1843 and joins the river Tesk to the harbour."
    mixed = f"Implications:\n1. {copied}\n2. The canal is older than the railway.\n3. Boats reach Lune by the Tesk."
    only_copies = f"1. {copied}"
    self_edit = PIECE_SEPARATOR.join([mixed, only_copies])
    sampling = SamplingConfig(pieces=2)
    dropping = self_edit_examples(tok, KnowledgeDomain(drop_copied=True), passage, self_edit, sampling)
    assert [e.completion for e in dropping] == [  # renumbered; the piece of nothing but copies is not cloned
        "1. The canal is older than the railway.\n2. Boats reach Lune by the Tesk."]
    keeping = self_edit_examples(tok, KnowledgeDomain(), passage, self_edit, sampling)
    assert [e.completion for e in keeping] == [mixed, only_copies]  # by default each piece is cloned as written
    assert all(passage.context in e.prompt for e in dropping + keeping)


def test_with_mask_copied_the_m_step_clones_each_piece_but_learns_none_of_its_copied_words(lm):
    from seal.domains.knowledge.data import Passage
    from seal.domains.knowledge.domain import KnowledgeDomain
    from seal.generation import PIECE_SEPARATOR, self_edit_examples
    from seal.inner.lora import IGNORE, tokenize_examples

    _, tok = lm
    passage = Passage("Orrin Canal", "The Orrin Canal opened in 1843 and joins the river Tesk to the harbour of Lune.")
    copied = "The Orrin Canal opened in 1843 and joins the river Tesk to the harbour."
    mixed = f"Implications:\n1. {copied}\n2. The canal is older than the railway.\n3. Boats reach Lune by the Tesk."
    self_edit = PIECE_SEPARATOR.join([mixed, "1. Boats pay a toll."])
    masked = self_edit_examples(tok, KnowledgeDomain(mask_copied=True), passage, self_edit, SamplingConfig(pieces=2))
    assert [e.completion for e in masked] == [mixed, "1. Boats pay a toll."]  # cloned as written
    assert [[e.completion[a:b] for a, b in e.unlearned] for e in masked] == [[copied.rstrip(".")], []]
    (ids, labels), _ = tokenize_examples(tok, masked, 1024)
    learned = tok.decode([t for t in labels if t != IGNORE])
    assert "1843" not in learned and "Tesk to the harbour" not in learned  # read, not learned
    assert "The canal is older than the railway." in learned and "Boats reach Lune by the Tesk." in learned
    with pytest.raises(ValueError, match="exclusive"):
        KnowledgeDomain(mask_copied=True, drop_copied=True)
