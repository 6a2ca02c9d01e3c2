"""seal.inner.lora on the tiny model: losses, seeds, label masking, exact restoration, saving and merging."""

from __future__ import annotations

import gc
import math

import pytest
import torch

from seal import models
from seal.config import InnerConfig
from seal.domains.base import Example, UpdatePlan
from seal.inner import loss as loss_module
from seal.inner.lora import (
    UpdateError,
    collate,
    fresh_adapter,
    fresh_update,
    load_adapter,
    lr_factor,
    merge_adapter,
    save_adapter,
    tokenize_examples,
    train,
)
from seal.inner.loss import IGNORE, update_loss

FACT = "The Orrin Canal joins the river Tesk to the harbour of Lune and opened in 1843."
CFG = InnerConfig(rank=4, alpha=8, lr=1e-2, epochs=1, batch_size=4, max_length=64)


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return models.load(str(tiny_model_dir))


def _cfg(**kw) -> InnerConfig:
    return InnerConfig(**{**CFG.__dict__, **kw})


def _plan_loss(model, tokenizer, examples) -> float:
    batch = collate(tokenize_examples(tokenizer, examples, 64), tokenizer.pad_token_id, model.device)
    labels = batch.pop("labels")
    with torch.no_grad():
        return update_loss(model, batch, labels).item()


def _predicting(labels: torch.Tensor) -> list[tuple[int, int]]:
    """The (row, position) pairs whose next token is labelled: the logits at t-1 predict the token at t."""
    return [(r, t - 1) for r in range(labels.shape[0]) for t in range(1, labels.shape[1]) if labels[r, t] != IGNORE]


def _token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean next-token cross-entropy over labelled tokens, written out position by position."""
    return torch.stack([-torch.log_softmax(logits[r, c], -1)[labels[r, c + 1]] for r, c in _predicting(labels)]).mean()


def _kl(logits: torch.Tensor, base_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean KL(base || trained) over the positions that predict a label, written out."""
    return torch.stack([(torch.softmax(base_logits[r, c], -1) * (torch.log_softmax(base_logits[r, c], -1)
                                                                 - torch.log_softmax(logits[r, c], -1))).sum()
                        for r, c in _predicting(labels)]).mean()


def _adapter_weights(peft_model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}


def _logits(model, tokenizer, text: str = "Topic: Orrin Canal\nWhen did the Orrin Canal open?") -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


# ----------------------------------------------------------------------------------------------- training


def test_training_lowers_the_loss_on_a_repeated_example(base):
    model, tok = base
    examples = [Example(FACT)] * 4
    cfg = _cfg(epochs=8, lr=3e-2)
    with fresh_adapter(model, cfg) as pm:
        before = _plan_loss(pm, tok, examples)
        report = train(pm, tok, UpdatePlan(examples), cfg)
        after = _plan_loss(pm, tok, examples)
    assert before == pytest.approx(report.losses[0], rel=1e-4)  # a fresh adapter starts as the base model
    # the random tiny model starts near uniform (ln 400 = 6.0 nats) and its LoRA learns slowly, but it learns
    assert after < before - 0.2
    assert report.losses[-1] < report.losses[0] - 0.1
    assert (report.steps, report.epochs, report.examples) == (8, 8, 4)
    assert len(report.losses) == 8 and all(math.isfinite(x) for x in report.losses)
    n_tokens = len(tok(FACT, add_special_tokens=False)["input_ids"]) + 1  # + EOS
    assert report.tokens == 4 * n_tokens * 8
    assert report.lr == pytest.approx(3e-2) and report.seconds > 0
    assert _plan_loss(model, tok, examples) == pytest.approx(before, rel=1e-5)  # the base model is untouched


def test_plan_hyperparameters_override_the_config(base):
    model, tok = base
    steps = []
    plan = UpdatePlan([Example(FACT), Example("Lune is a harbour.")], lr=1e-3, epochs=3)
    with fresh_adapter(model, _cfg(batch_size=1)) as pm:
        report = train(pm, tok, plan, _cfg(batch_size=1), on_step=lambda s, total, loss: steps.append((s, total)))
    assert (report.epochs, report.lr, report.steps) == (3, 1e-3, 6)
    assert steps == [(s, 6) for s in range(1, 7)]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_schedules_decay_like_transformers_after_a_warmup_from_near_zero(schedule):
    from transformers import get_scheduler

    total = 40
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_scheduler(schedule, optimizer, num_warmup_steps=0, num_training_steps=total)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert [lr_factor(_cfg(lr_schedule=schedule), s, total) for s in range(total)] == pytest.approx(expected)
    warm = [lr_factor(_cfg(lr_schedule=schedule, warmup=0.1), s, total) for s in range(total)]
    assert warm[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])  # 4 warm-up steps, then the decay from 1
    assert all(a > b for a, b in zip(warm[4:], warm[5:])) and 0 < warm[-1] < 0.1
    assert [lr_factor(_cfg(warmup=0.1), s, total) for s in range(4, total)] == [1.0] * (total - 4)


def test_schedules_change_training_from_their_first_different_lr(base):
    model, tok = base
    plan = UpdatePlan([Example(FACT), Example("Lune is a harbour."), Example("It opened in 1843.")])
    losses = {}
    for schedule, warmup in (("constant", 0.0), ("constant", 0.3), ("linear", 0.3)):
        cfg = _cfg(epochs=3, batch_size=1, lr_schedule=schedule, warmup=warmup)
        with fresh_adapter(model, cfg) as pm:
            losses[schedule, warmup] = train(pm, tok, plan, cfg).losses
    plain, warm, decayed = losses["constant", 0.0], losses["constant", 0.3], losses["linear", 0.3]
    assert plain[0] == warm[0] and all(a != b for a, b in zip(plain[1:], warm[1:]))  # 3 warm-up steps of 9
    # the same warm-up, then the linear decay starts at step 5 (after update 4, the first with factor < 1)
    assert decayed[:5] == warm[:5] and all(a != b for a, b in zip(decayed[5:], warm[5:]))


def _train_once(model, tok, seed: int):
    cfg = _cfg(seed=seed, epochs=2, batch_size=2)
    plan = UpdatePlan([Example(FACT), Example("Lune is a harbour."), Example("It opened in 1843.")])
    with fresh_adapter(model, cfg) as pm:
        init = _adapter_weights(pm)
        report = train(pm, tok, plan, cfg)
        return init, _adapter_weights(pm), report.losses


def test_same_seed_same_adapter_different_seed_different(base):
    model, tok = base
    init_a, a, losses_a = _train_once(model, tok, seed=3)
    init_b, b, losses_b = _train_once(model, tok, seed=3)
    init_c, c, losses_c = _train_once(model, tok, seed=4)
    assert a.keys() == b.keys() == c.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert losses_a == losses_b
    assert any(not torch.equal(init_a[k], init_c[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert losses_a != losses_c


# ----------------------------------------------------------------------------------------------- masking


def test_prompt_tokens_carry_no_loss_and_completions_end_with_eos(base):
    _, tok = base
    (ids, labels), = tokenize_examples(tok, [Example(completion=" opened in 1843.", prompt="The Orrin Canal")], 64)
    prompt = tok("The Orrin Canal", add_special_tokens=False)["input_ids"]
    completion = tok(" opened in 1843.", add_special_tokens=False)["input_ids"]
    assert ids == prompt + completion + [tok.eos_token_id]
    assert labels == [IGNORE] * len(prompt) + completion + [tok.eos_token_id]


def test_unlearned_spans_are_read_but_carry_no_loss(base):
    _, tok = base
    completion = "1. The canal opened in 1843. 2. Boats reach Lune."
    start = completion.index("The canal")
    span = (start, completion.index(" 2."))
    (ids, labels), = tokenize_examples(tok, [Example(completion, prompt="Lists:", unlearned=(span,))], 64)
    (plain_ids, plain_labels), = tokenize_examples(tok, [Example(completion, prompt="Lists:")], 64)
    assert ids == plain_ids and IGNORE not in plain_labels[len(tok("Lists:", add_special_tokens=False)["input_ids"]):]
    learned = tok.decode([t for t in labels if t != IGNORE])
    unlearned = tok.decode([t for t, label in zip(ids, labels) if label == IGNORE])
    assert "opened in 1843" in unlearned and "opened" not in learned  # the span's tokens are in the input only
    assert learned.startswith("1.") and "Boats reach Lune" in learned and learned.endswith(tok.eos_token)


def test_truncation_and_rows_left_without_labels(base):
    _, tok = base
    n_prompt = len(tok("The Orrin Canal joins the river Tesk", add_special_tokens=False)["input_ids"])
    rows = tokenize_examples(tok, [
        Example(completion=FACT),
        Example(completion=" opened", prompt="The Orrin Canal joins the river Tesk"),
    ], max_length=n_prompt)
    assert len(rows) == 1  # the second row's prompt alone fills max_length: dropped
    ids, labels = rows[0]
    assert len(ids) == len(labels) == n_prompt and IGNORE not in labels
    with pytest.raises(UpdateError, match="no trainable tokens"):
        train(None, tok, UpdatePlan([Example(completion="x", prompt=FACT)]), _cfg(max_length=4))


def test_collate_pads_right_with_no_attention_and_no_labels():
    rows = [([5, 6], [IGNORE, 6]), ([7, 8, 9, 10], [7, 8, 9, 10])]
    batch = collate(rows, pad_id=0, device="cpu")
    assert batch["input_ids"].tolist() == [[5, 6, 0, 0], [7, 8, 9, 10]]
    assert batch["labels"].tolist() == [[IGNORE, 6, IGNORE, IGNORE], [7, 8, 9, 10]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def _batch(tok, examples):
    batch = collate(tokenize_examples(tok, examples, 64), tok.pad_token_id, "cpu")
    return batch, batch.pop("labels")


@pytest.mark.parametrize("kl_to_base", [0.0, 0.5])
@pytest.mark.parametrize("chunk", [128, 3])  # every labelled position in one chunk, or several chunks
@pytest.mark.parametrize("head", ["linear", "full logits"])  # a plain LM head, or one it must not bypass
def test_update_loss_is_the_token_loss_plus_the_kl_at_labelled_positions(base, kl_to_base, chunk, head,
                                                                         monkeypatch):
    """The loss and its gradient are those written out from the full logits: cross-entropy at the positions
    that predict a label (none of the long prompt's, none of the padding), plus the KL from the adapter
    switched off; however the positions are chunked, and whether or not the LM head is bypassed."""
    monkeypatch.setattr(loss_module, "LOSS_POSITIONS", chunk)
    if head == "full logits":
        monkeypatch.setattr(loss_module, "linear_head", lambda model: None)
    model, tok = base
    batch, labels = _batch(tok, [Example(" opened in 1843.", prompt=FACT), Example(" Lune.", prompt="The harbour")])
    with fresh_adapter(model, CFG) as adapted:
        with torch.no_grad():  # a fresh adapter is the base model: move it so that the KL is not zero
            for name, p in adapted.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
            with adapted.disable_adapter():
                base_logits = adapted(**batch).logits
        params = [p for p in adapted.parameters() if p.requires_grad]
        expected = _token_loss(adapted(**batch).logits, labels)
        if kl_to_base:
            expected = expected + kl_to_base * _kl(adapted(**batch).logits, base_logits, labels)
        expected_grads = torch.autograd.grad(expected, params)
        loss = update_loss(adapted, batch, labels, kl_to_base)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            kl = _kl(adapted(**batch).logits, base_logits, labels).item()
    assert kl > 1e-3  # the moved adapter is not the base model: the KL term is really tested
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_kl_to_base_keeps_the_trained_model_near_the_base(base):
    """The same update with the KL term moves the next-token distributions it trains on less far from the
    base model's, and starts from the plain loss (a fresh adapter is the base model)."""
    model, tok = base
    plan = UpdatePlan([Example(" opened in 1843 and joins the river Tesk.", prompt=FACT)] * 4)
    rows = tokenize_examples(tok, plan.examples, 64)
    batch = collate(rows, tok.pad_token_id, "cpu")
    labels = batch.pop("labels")
    with torch.no_grad():
        before = model(**batch).logits
    cfg, drift, first_losses = _cfg(epochs=3, batch_size=1), [], []
    for weight in (0.0, 100.0):  # the random tiny model's flat logits move little: a large weight shows it
        with fresh_adapter(model, cfg) as adapted:
            report = train(adapted, tok, plan, cfg, kl_to_base=weight)
            with torch.no_grad():
                drift.append(_kl(adapted(**batch).logits, before, labels).item())
        first_losses.append(report.losses[0])
    assert first_losses[1] == pytest.approx(first_losses[0], rel=1e-5)
    assert 0 < drift[1] < drift[0] / 2


def test_padding_changes_no_loss(base):
    model, tok = base
    short, long = Example("Lune."), Example(FACT + " " + FACT)
    rows = tokenize_examples(tok, [short, long], 64)
    assert len(rows[0][0]) < len(rows[1][0])
    alone = [_plan_loss(model, tok, [ex]) for ex in (short, long)]
    counts = [len(r[0]) - 1 for r in rows]  # predicted tokens per row
    weighted = (alone[0] * counts[0] + alone[1] * counts[1]) / sum(counts)
    assert _plan_loss(model, tok, [short, long]) == pytest.approx(weighted, rel=1e-5)


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "plan, cfg",
    [
        (UpdatePlan([]), CFG),
        (UpdatePlan([Example(FACT)], lr=0.0), CFG),
        (UpdatePlan([Example(FACT)], lr=-1e-3), CFG),
        (UpdatePlan([Example(FACT)], lr=float("nan")), CFG),
        (UpdatePlan([Example(FACT)], epochs=0), CFG),
        (UpdatePlan([Example(FACT)]), _cfg(epochs=0)),
        (UpdatePlan([Example(FACT)]), _cfg(lr=0.0)),
    ],
)
def test_update_errors_leave_the_base_model_intact(tiny, plan, cfg):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UpdateError):
        with fresh_adapter(model, cfg) as pm:
            train(pm, tok, plan, cfg)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_non_finite_loss_is_an_error(base):
    model, tok = base
    with pytest.raises(UpdateError, match="non-finite"):
        with fresh_adapter(model, _cfg(lr=1e30, epochs=3)) as pm:
            train(pm, tok, UpdatePlan([Example(FACT)]), _cfg(lr=1e30, epochs=3))


# ----------------------------------------------------------------------------------------------- restoration


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))  # type(): no proxy lookups


def test_fifty_updates_restore_the_base_model_exactly_and_memory_stays_flat(tiny):
    model, tok = tiny
    names = [n for n, _ in model.named_modules()]
    params = [(n, id(p), p.requires_grad) for n, p in model.named_parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    logits = _logits(model, tok)
    cfg = _cfg(epochs=1, lr=5e-2, target_modules=["q_proj", "v_proj"])
    plan = UpdatePlan([Example(FACT)])
    counts = []
    for i in range(50):
        with fresh_adapter(model, cfg) as pm:
            train(pm, tok, plan, cfg)
            assert not torch.equal(_logits(pm, tok), logits)  # the update did change the model
        if i in (4, 49):
            counts.append(_live_tensors())
    assert [n for n, _ in model.named_modules()] == names
    assert [(n, id(p), p.requires_grad) for n, p in model.named_parameters()] == params  # same objects and flags
    now = model.state_dict()
    assert now.keys() == state.keys() and all(torch.equal(state[k], now[k]) for k in state)
    assert torch.equal(_logits(model, tok), logits)
    assert not model.training
    assert not hasattr(model, "peft_config")
    assert counts[1] <= counts[0], f"live tensors grew from {counts[0]} to {counts[1]} over 45 updates"


def test_full_updates_train_every_weight_and_restore_them_exactly(tiny):
    model, tok = tiny
    flags = [(n, id(p), p.requires_grad) for n, p in model.named_parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    logits = _logits(model, tok)
    cfg = _cfg(method="full", epochs=3, lr=1e-3)
    plan = UpdatePlan([Example(FACT)])
    counts = []
    for i in range(6):
        with fresh_update(model, cfg) as updated:
            assert updated is model and not hasattr(model, "peft_config")
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            report = train(updated, tok, plan, cfg)
            assert report.losses[-1] < report.losses[0]
            changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
            assert "model.embed_tokens.weight" in changed and any("mlp.down_proj" in n for n in changed)
        if i in (1, 5):
            counts.append(_live_tensors())
    assert [(n, id(p), p.requires_grad) for n, p in model.named_parameters()] == flags
    now = model.state_dict()
    assert all(torch.equal(state[k], now[k]) for k in state)
    assert torch.equal(_logits(model, tok), logits) and all(p.grad is None for p in model.parameters())
    assert counts[1] <= counts[0]


def test_the_base_model_stays_fully_trainable_after_an_update(tiny):
    """The generator is finetuned (ReST-EM M-step) after the same model served as the inner-loop learner."""
    model, tok = tiny
    assert all(p.requires_grad for p in model.parameters())
    with fresh_adapter(model, CFG) as pm:
        assert not any(p.requires_grad for n, p in pm.named_parameters() if "lora_" not in n)
        train(pm, tok, UpdatePlan([Example(FACT)]), CFG)
    assert all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------------------------- save / load / merge


def test_saved_adapter_and_merged_adapter_reproduce_the_adapted_model(tiny_model_dir, base, tmp_path):
    model, tok = base
    cfg = _cfg(epochs=4, lr=5e-2)
    base_logits = _logits(model, tok)
    with fresh_adapter(model, cfg) as pm:
        train(pm, tok, UpdatePlan([Example(FACT)] * 2), cfg)
        adapted = _logits(pm, tok)
        save_adapter(pm, tmp_path / "adapter")
    assert (adapted - base_logits).abs().max() > 1e-2  # the adapter matters, so the comparison below can fail
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}

    fresh, _ = models.load(str(tiny_model_dir))
    loaded = load_adapter(fresh, tmp_path / "adapter")
    assert not loaded.training
    torch.testing.assert_close(_logits(loaded, tok), adapted, rtol=1e-5, atol=1e-5)

    other, _ = models.load(str(tiny_model_dir))
    merged = merge_adapter(other, str(tmp_path / "adapter"))
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, tok), adapted, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_logits(model, tok), base_logits, rtol=0, atol=0)  # the shared base is untouched
