"""K LoRA candidates trained together must equal K separate runs of seal.inner.lora, on the tiny model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from seal.config import EvalConfig, InnerConfig
from seal.domains.base import Example, Score, UpdatePlan
from seal.domains.knowledge.data import Passage, Question
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.episode import adapt_and_evaluate
from seal.generation import chat_prompt, generate
from seal.inner.batched import adapt_and_evaluate_many, batched_adapters
from seal.inner.batched_train import MultiAdamW, plan_microbatches
from seal.inner.multi_lora import initial_adapter, target_names
from seal.inner.lora import IGNORE, UpdateError, collate, fresh_adapter, load_adapter, train

PASSAGE = Passage(
    "Orrin Canal",
    "The Orrin Canal joins the river Tesk to the harbour of Lune and opened in 1843.",
    (Question("When did the Orrin Canal open?", "1843"), Question("Who built it?", "the guild of Lune engineers")),
)
SELF_EDITS = [
    "1. The canal opened in 1843.\n2. It joins the river Tesk to the harbour of Lune.",
    "1. The guild of Lune engineers built the canal.\n2. Trade between the river towns and the harbour grew.\n"
    "3. The canal made trade cheaper.\n4. Tesk is a river.\n5. Lune has a harbour.",
    "- The Orrin Canal is in Lune.",
]


CFG = InnerConfig(rank=4, alpha=8, epochs=3, batch_size=2, lr=1e-3, weight_decay=0.01, max_length=64)


def _plans(domain: KnowledgeDomain) -> list[UpdatePlan]:
    plans = [domain.parse(PASSAGE, s) for s in SELF_EDITS]
    plans[1].lr = 3e-3  # its own learning rate, 6 sequences
    plans[2].epochs = 1  # finishes long before the others
    return plans


def _snapshot(model) -> dict:
    return {
        "modules": [(n, id(m)) for n, m in model.named_modules()],
        "params": {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
        "training": model.training,
    }


def _same_snapshot(a: dict, b: dict) -> bool:
    return (
        a["modules"] == b["modules"]
        and a["training"] == b["training"]
        and a["params"].keys() == b["params"].keys()
        and all(torch.equal(a["params"][n][0], b["params"][n][0]) and a["params"][n][1] == b["params"][n][1]
                for n in a["params"])
    )


def test_k_candidates_equal_k_separate_runs(tiny, tmp_path):
    """THE equivalence: weights, per-step losses and greedy answers of 3 different plans and lr schedules."""
    model, tokenizer = tiny
    domain = KnowledgeDomain(eval=EvalConfig(max_new_tokens=6))
    plans = _plans(domain)
    cfgs = [replace(CFG, seed=0, lr_schedule="cosine", warmup=0.2), replace(CFG, seed=7, lr_schedule="linear"),
            replace(CFG, seed=3)]
    alone = [adapt_and_evaluate(model, tokenizer, domain, PASSAGE, p, c, save_to=tmp_path / f"seq{k}")
             for k, (p, c) in enumerate(zip(plans, cfgs))]
    together = adapt_and_evaluate_many(model, tokenizer, domain, PASSAGE, plans, cfgs,
                                       save_to=[tmp_path / f"bat{k}" for k in range(3)])
    assert [o.report.steps for o in together] == [o.report.steps for o in alone] == [6, 9, 1]
    for k, (a, b) in enumerate(zip(alone, together)):
        assert (b.report.examples, b.report.epochs, b.report.lr, b.report.tokens) == (
            a.report.examples, a.report.epochs, a.report.lr, a.report.tokens)
        assert b.report.losses == pytest.approx(a.report.losses, abs=1e-5), k
        assert [d["prediction"] for d in b.score.details] == [d["prediction"] for d in a.score.details], k
        assert b.score.value == a.score.value
        wa = load_file(tmp_path / f"seq{k}" / "adapter_model.safetensors")
        wb = load_file(tmp_path / f"bat{k}" / "adapter_model.safetensors")
        assert wa.keys() == wb.keys()
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name], atol=1e-5, rtol=0, msg=f"{k} {name}")
    # the runs really differ from each other and moved away from the init
    first = load_file(tmp_path / "bat0" / "adapter_model.safetensors")
    second = load_file(tmp_path / "bat1" / "adapter_model.safetensors")
    assert all(v.abs().max() > 0 for n, v in first.items() if "lora_B" in n)
    assert any(not torch.allclose(first[n], second[n]) for n in first)


def test_initial_adapters_are_peft_init(tiny):
    model, _ = tiny
    names = target_names(model, CFG)
    for seed in (0, 5):
        cfg = replace(CFG, seed=seed)
        peft_init = initial_adapter(model, cfg, names, "peft")
        replayed = initial_adapter(model, cfg, names, "replay")
        for (a, b), (c, d) in zip(peft_init, replayed):
            assert torch.equal(a, c) and torch.equal(b, d)
    with batched_adapters(model, [replace(CFG, seed=5), replace(CFG, seed=0)]) as multi:
        state = multi.adapter_state(0)
    assert torch.equal(state[f"base_model.model.{names[0]}.lora_A.weight"], replayed[0][0])


def test_multi_adamw_equals_torch_adamw():
    torch.manual_seed(0)
    k, p = 3, 50
    lrs, wds = [1e-2, 3e-3, 1e-3], [0.1, 0.0, 0.01]
    init = torch.randn(k, p)
    flat = init.clone()
    opt = MultiAdamW(flat, lrs, wds)
    refs = [torch.nn.Parameter(init[i].clone()) for i in range(k)]
    ref_opts = [torch.optim.AdamW([refs[i]], lr=lrs[i], weight_decay=wds[i]) for i in range(k)]
    for step in range(6):
        active = [0, 1, 2] if step < 3 else [0, 2]  # candidate 1 finishes after 3 steps
        grads = torch.randn(k, p)
        opt.zero_grad()
        opt.grad.copy_(grads)
        opt.step(active)
        for i in active:
            refs[i].grad = grads[i].clone()
            ref_opts[i].step()
        if step == 2:
            frozen = (flat[1].clone(), opt.exp_avg[1].clone(), opt.exp_avg_sq[1].clone())
    for i in range(k):
        torch.testing.assert_close(flat[i], refs[i].detach(), atol=1e-6, rtol=1e-6)
        state = ref_opts[i].state[refs[i]]
        torch.testing.assert_close(opt.exp_avg[i], state["exp_avg"], atol=1e-7, rtol=1e-6)
        torch.testing.assert_close(opt.exp_avg_sq[i], state["exp_avg_sq"], atol=1e-7, rtol=1e-6)
    assert opt.steps == [6, 3, 6]
    assert all(torch.equal(a, b) for a, b in zip(frozen, (flat[1], opt.exp_avg[1], opt.exp_avg_sq[1])))


def test_base_model_restored_exactly(tiny):
    model, tokenizer = tiny
    model.train()  # a state to restore that differs from what training leaves
    next(model.parameters()).requires_grad_(False)
    before = _snapshot(model)
    plans = [UpdatePlan([Example("The Orrin Canal opened in 1843.")]), UpdatePlan([Example("Tesk is a river.")])]
    for round_ in range(3):
        with batched_adapters(model, [replace(CFG, seed=round_), replace(CFG, seed=9)]) as multi:
            multi.train(tokenizer, plans)
            multi.generate(tokenizer, [["Lune"], ["Tesk"]], max_new_tokens=2)
        assert _same_snapshot(before, _snapshot(model))
    with pytest.raises(RuntimeError), batched_adapters(model, [CFG]):
        raise RuntimeError("an error inside the block")
    assert _same_snapshot(before, _snapshot(model))


def test_saved_adapter_loads_and_gives_the_batched_logits(tiny, tmp_path):
    model, tokenizer = tiny
    plans = [UpdatePlan([Example("The Orrin Canal opened in 1843.")]),
             UpdatePlan([Example("The guild of Lune engineers built the Orrin Canal.")], lr=5e-3)]
    batch = collate([(ids, ids) for ids in tokenizer(["Who built the Orrin Canal?", "Lune"])["input_ids"]],
                    tokenizer.pad_token_id, model.device)
    batch.pop("labels")
    with batched_adapters(model, [replace(CFG, seed=1), replace(CFG, seed=2)]) as multi:
        multi.train(tokenizer, plans)
        multi.save_adapter(1, tmp_path / "cand1")
        mixed = multi.forward([1, 0], **batch).logits  # row 0 through candidate 1, row 1 through 0
        only = multi.forward([1, 1], **batch).logits
    with torch.no_grad():
        base = model(**batch).logits
        peft_model = load_adapter(model, tmp_path / "cand1")
        loaded = peft_model(**batch).logits
    peft_model.unload()
    torch.testing.assert_close(loaded, only, atol=1e-5, rtol=0)
    torch.testing.assert_close(loaded[0], mixed[0], atol=1e-5, rtol=0)
    assert not torch.allclose(loaded, base, atol=1e-4)
    assert not torch.allclose(mixed[1], only[1], atol=1e-4)


def test_gold_loglik_equals_sequential(tiny):
    model, tokenizer = tiny
    plans = [UpdatePlan([Example("The Orrin Canal opened in 1843.")], epochs=2),
             UpdatePlan([Example("The guild of Lune engineers built it."), Example("Tesk is a river.")])]
    cfgs = [replace(CFG, seed=4), replace(CFG, seed=6)]
    prompt = [chat_prompt(tokenizer, "When did the Orrin Canal open?"), chat_prompt(tokenizer, "Who built it?")]
    pairs = [[(prompt[0], "1843"), (prompt[1], "the guild")], [(prompt[1], "the guild of Lune engineers")]]
    expected = []
    for plan, cfg, items in zip(plans, cfgs, pairs):
        with fresh_adapter(model, cfg) as peft_model:
            train(peft_model, tokenizer, plan, cfg)
            row = []
            for p, a in items:
                pi = tokenizer(p, add_special_tokens=False)["input_ids"]
                ai = tokenizer(a, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    logp = torch.log_softmax(peft_model(input_ids=torch.tensor([pi + ai])).logits[0], -1)
                row.append(sum(logp[len(pi) - 1 + j, t].item() for j, t in enumerate(ai)))
            expected.append(row)
    with batched_adapters(model, cfgs) as multi:
        multi.train(tokenizer, plans)
        got = multi.gold_loglik(tokenizer, pairs)
    assert [len(r) for r in got] == [2, 1]
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, abs=1e-4)


def test_generate_with_uneven_prompt_lists_matches_each_candidate_alone(tiny):
    model, tokenizer = tiny
    plans = [UpdatePlan([Example("The Orrin Canal opened in 1843.")], lr=2e-2),
             UpdatePlan([Example("Tesk is a river of Lune.")], lr=2e-2), UpdatePlan([Example("1843")], lr=2e-2)]
    prompts = [["Orrin", "The canal"], ["Tesk"], ["Lune harbour", "When", "Who built"]]
    with batched_adapters(model, [replace(CFG, seed=s) for s in range(3)]) as multi:
        multi.train(tokenizer, plans)
        together = multi.generate(tokenizer, prompts, max_new_tokens=5)
        chunked = multi.generate(tokenizer, prompts, max_new_tokens=5, batch_size=2)
        alone = []
        for k, ps in enumerate(prompts):
            with multi.only(k) as single:
                alone.append([o[0] for o in generate(single, tokenizer, ps, max_new_tokens=5, batch_size=len(ps))])
    assert together == chunked == alone
    assert [len(a) for a in together] == [2, 1, 3]


def test_generic_domain_is_evaluated_candidate_by_candidate(tiny):
    """A domain without batched evaluation still gets batched training and its own evaluate per candidate."""
    model, tokenizer = tiny

    class Echo:
        name = "echo"

        def evaluate(self, model, tokenizer, context):
            out = generate(model, tokenizer, [context, context + " canal"], max_new_tokens=4, batch_size=2)
            return Score(0.5, [{"out": o[0]} for o in out])

    plans = [UpdatePlan([Example("The Orrin Canal opened in 1843.")]), UpdatePlan([Example("Tesk is a river.")])]
    cfgs = [replace(CFG, seed=1), replace(CFG, seed=2, lr=1e-2)]
    alone = [adapt_and_evaluate(model, tokenizer, Echo(), "Orrin", p, c) for p, c in zip(plans, cfgs)]
    together = adapt_and_evaluate_many(model, tokenizer, Echo(), "Orrin", plans, cfgs)
    assert [o.score.details for o in together] == [o.score.details for o in alone]


def test_invalid_setups_fail_clearly(tiny):
    model, tokenizer = tiny
    with pytest.raises(UpdateError, match="dropout"), batched_adapters(model, [replace(CFG, dropout=0.1)]):
        pass
    with pytest.raises(UpdateError, match="method lora"), batched_adapters(model, [replace(CFG, method="full")]):
        pass
    with pytest.raises(UpdateError, match="rank"), batched_adapters(model, [CFG, replace(CFG, rank=8)]):
        pass
    with pytest.raises(UpdateError, match="train_dtype"), batched_adapters(
            model, [CFG, replace(CFG, train_dtype="bfloat16")]):
        pass
    with batched_adapters(model, [CFG, CFG]) as multi:
        with pytest.raises(UpdateError, match="candidate 1"):
            multi.train(tokenizer, [UpdatePlan([Example("Lune")]), UpdatePlan([Example("x")], epochs=0)])
        with pytest.raises(ValueError):
            multi.train(tokenizer, [UpdatePlan([Example("Lune")])])
        with pytest.raises(RuntimeError, match="adapter"):
            multi.model(input_ids=torch.tensor([[1, 2]]))  # no rows assigned
        with pytest.raises(IndexError):
            multi.forward([2], input_ids=torch.tensor([[1, 2]]))


def test_microbatches_cover_rows_once_and_cut_padding():
    lengths = [176, 30, 28, 33, 176, 25, 40, 31]
    groups = plan_microbatches(lengths, overhead=16)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    padded = sum(len(g) * max(lengths[i] for i in g) for g in groups)
    assert padded < 1.2 * sum(lengths)
    assert plan_microbatches([10, 10, 10], overhead=1000) == [[0, 1, 2]]
    capped = plan_microbatches([100, 90, 90, 300, 20], overhead=1000, max_tokens=200)
    assert capped == [[3], [0, 1], [2, 4]]  # 300 alone (one row may exceed the cap), then <= 200 padded each


def test_long_training_of_uneven_candidates_stays_equal_to_training_alone(tiny):
    """A hundred-plus steps across epoch boundaries, with neighbours of other sizes finishing early: candidate
    0's per-step losses are those it has trained alone (the multi-passage bench's case)."""
    model, tokenizer = tiny
    words = "canal river harbour guild lune tesk opened trade engineers winter bridge north".split()

    def plan(n: int, seed: int) -> UpdatePlan:
        return UpdatePlan([Example(" ".join(words[(seed + i * j) % len(words)] for j in range(4 + 9 * (i % 3))))
                           for i in range(n)])

    plans = [plan(148, 0), plan(143, 1), plan(79, 2)]
    cfg = InnerConfig(rank=4, alpha=8, epochs=3, batch_size=4, lr=3e-3, max_length=64)

    def losses(chosen: list[UpdatePlan]) -> list[float]:
        with batched_adapters(model, [cfg] * len(chosen)) as multi:
            return multi.train(tokenizer, chosen)[0].losses

    together, alone = losses(plans), losses(plans[:1])
    assert len(together) == len(alone) == 111
    assert together == pytest.approx(alone, abs=1e-5)


def test_half_precision_base_trains_fp32_adapters_like_peft(tiny_model_dir):
    """A bf16 base (the GPU path's dtype) keeps its LoRA adapters in fp32, as peft does, and the batched
    loop still follows peft's run (to bf16 tolerance)."""
    from seal import models
    from seal.config import ModelConfig

    model, tokenizer = models.load(ModelConfig(name=str(tiny_model_dir), dtype="bfloat16"))
    domain = KnowledgeDomain(eval=EvalConfig(max_new_tokens=4))
    plans = _plans(domain)[:2]
    cfgs = [replace(CFG, seed=0), replace(CFG, seed=1)]
    alone = []
    for plan, cfg in zip(plans, cfgs):
        with fresh_adapter(model, cfg) as peft_model:
            alone.append(train(peft_model, tokenizer, plan, cfg).losses)
    with batched_adapters(model, cfgs) as multi:
        assert multi.flat.dtype == torch.float32 and model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
        together = [r.losses for r in multi.train(tokenizer, plans)]
        multi.generate(tokenizer, [["Lune"], ["Tesk"]], max_new_tokens=2)
    for a, b in zip(alone, together):
        assert b == pytest.approx(a, rel=2e-2)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())  # the base is left as it was


def test_labelled_logits_are_the_full_logits_at_those_positions(tiny):
    from seal.inner.batched_train import labelled_logits

    model, tokenizer = tiny
    batch = collate([([5, 6, 7, 8], [5, 6, 7, 8]), ([9, 10], [9, 10])], tokenizer.pad_token_id, model.device)
    batch.pop("labels")
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 0])
    with torch.no_grad():
        full = model(**batch, use_cache=False).logits[rows, cols]
        torch.testing.assert_close(labelled_logits(model, batch, rows, cols), full)
        model.config.logit_scale = 0.5  # a head that is more than a linear map: the full logits are taken
        try:
            torch.testing.assert_close(labelled_logits(model, batch, rows, cols), full)
        finally:
            del model.config.logit_scale


def test_packed_rows_keep_each_row_whole_and_apart():
    from seal.inner.packing import pack_rows

    rows = [(0, [1, 2, 3], [-100, 2, 3]), (1, [4, 5], [4, 5]), (0, [6, 7, 8, 9], [6, 7, 8, 9]), (0, [10] * 6, [10] * 6)]
    packed = pack_rows(rows, capacity=8)
    assert [p.candidate for p in packed] == [0, 0, 1]
    assert all(len(p.ids) <= 8 for p in packed)
    assert sorted(t for p in packed for t in p.ids) == sorted(t for _, ids, _ in rows for t in ids)
    first = packed[0]  # the longest row first, then the next that fits: [10]*6 alone, then 4-token + 3-token rows
    assert first.ids == [10] * 6 and first.positions == list(range(6))
    assert packed[1].ids == [6, 7, 8, 9, 1, 2, 3] and packed[1].positions == [0, 1, 2, 3, 0, 1, 2]
    # a row's last token predicts nothing: the next row is another sequence
    assert packed[1].targets == [7, 8, 9, IGNORE, 2, 3, IGNORE]
    assert len(pack_rows(rows, capacity=0)) == len(rows)


def test_packing_is_used_only_where_the_model_keeps_packed_rows_apart(tiny):
    from seal.inner.packing import packing_supported

    model, _ = tiny
    assert packing_supported(model)

    class IgnoresPositions(torch.nn.Module):  # a model that reads neither positions nor packing
        def __init__(self):
            super().__init__()
            self.inner, self.config = model, model.config

        def forward(self, input_ids, position_ids=None, use_cache=False):
            return self.inner(input_ids=input_ids, use_cache=use_cache)

    assert not packing_supported(IgnoresPositions())


def test_packed_training_equals_padded_training_with_less_padding(tiny, monkeypatch):
    import seal.inner.batched_train as batched_train

    model, tokenizer = tiny
    domain = KnowledgeDomain(eval=EvalConfig(max_new_tokens=4))
    plans, cfgs = _plans(domain), [replace(CFG, seed=k) for k in range(3)]

    def run() -> tuple[list[list[float]], torch.Tensor, int]:
        with batched_adapters(model, cfgs) as multi:
            losses = [r.losses for r in multi.train(tokenizer, plans)]
            return losses, multi.flat.clone(), multi.stats.padded_tokens

    packed = run()
    monkeypatch.setattr(batched_train, "packing_supported", lambda model: False)
    padded = run()
    for a, b in zip(packed[0], padded[0]):
        assert a == pytest.approx(b, abs=1e-5)
    torch.testing.assert_close(packed[1], padded[1], atol=1e-5, rtol=0)
    assert packed[2] < padded[2]  # fewer padded tokens through the model


def test_train_adapter_saves_the_adapter_peft_trains(tiny, tmp_path):
    from seal.inner.batched import train_adapter

    model, tokenizer = tiny
    before = _snapshot(model)
    plan = _plans(KnowledgeDomain())[1]
    steps = []
    report = train_adapter(model, tokenizer, plan, CFG, tmp_path / "batched", on_step=lambda s, t, loss: steps.append((s, t)))
    with fresh_adapter(model, CFG) as peft_model:
        alone = train(peft_model, tokenizer, plan, CFG)
        peft_model.save_pretrained(tmp_path / "peft")
    assert report.losses == pytest.approx(alone.losses, abs=1e-5) and steps[-1] == (report.steps, report.steps)
    ours, theirs = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("batched", "peft"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=0)
    assert _same_snapshot(before, _snapshot(model))
    # dropout, which the batched loop cannot replay, goes through peft's loop and is saved alike
    train_adapter(model, tokenizer, plan, replace(CFG, dropout=0.1), tmp_path / "dropout")
    assert load_file(tmp_path / "dropout" / "adapter_model.safetensors").keys() == theirs.keys()


def test_adapters_on_the_top_layer_only_train_like_peft_and_never_reach_the_layers_below(tiny, tmp_path):
    """`inner.target_modules` may name one layer's modules (peft matches name suffixes): the FLOP cut of training
    only the top layers. Batched training equals peft's on those names, saves nothing else, and backpropagates
    into no layer below them."""
    model, tokenizer = tiny
    top = len(model.model.layers) - 1
    cfg = replace(CFG, target_modules=[f"layers.{top}.self_attn.q_proj", f"layers.{top}.mlp.down_proj"])
    domain = KnowledgeDomain(eval=EvalConfig(max_new_tokens=6))
    plan = _plans(domain)[0]
    alone = adapt_and_evaluate(model, tokenizer, domain, PASSAGE, plan, cfg, save_to=tmp_path / "seq")
    reached = []
    hook = model.model.layers[0].register_full_backward_hook(lambda *_: reached.append(True))
    try:
        together = adapt_and_evaluate_many(model, tokenizer, domain, PASSAGE, [plan], [cfg],
                                           save_to=[tmp_path / "bat"])[0]
    finally:
        hook.remove()
    assert not reached
    assert together.report.losses == pytest.approx(alone.report.losses, abs=1e-5)
    wa, wb = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("seq", "bat"))
    assert wa.keys() == wb.keys() and {n.split(".lora_")[0].split("layers.")[1] for n in wb} == {
        f"{top}.self_attn.q_proj", f"{top}.mlp.down_proj"}
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=1e-5, rtol=0, msg=name)


def test_bf16_autocast_trains_fp32_weights_in_bf16_matmuls_like_peft(tiny):
    """`train_dtype=bfloat16` runs the frozen fp32 base's matmuls in bf16 (autocast) on both training paths,
    which follow each other and the fp32 run to bf16 tolerance, and leaves every weight fp32 and untouched."""
    model, tokenizer = tiny
    domain = KnowledgeDomain(eval=EvalConfig(max_new_tokens=4))
    plans = _plans(domain)[:2]
    seen = []
    q_proj = model.model.layers[0].self_attn.q_proj
    hook = q_proj.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    before = _snapshot(model)
    runs = {}
    try:
        for dtype in ("float32", "bfloat16"):
            cfgs = [replace(CFG, seed=0, train_dtype=dtype), replace(CFG, seed=1, train_dtype=dtype)]
            alone = []
            for plan, cfg in zip(plans, cfgs):
                with fresh_adapter(model, cfg) as peft_model:
                    alone.append(train(peft_model, tokenizer, plan, cfg).losses)
            with batched_adapters(model, cfgs) as multi:
                together = [r.losses for r in multi.train(tokenizer, plans)]
            runs[dtype] = (alone, together)
            assert set(seen) == {getattr(torch, dtype)}, dtype
            seen.clear()
    finally:
        hook.remove()
    assert _same_snapshot(before, _snapshot(model))
    (fp32, _), (alone, together) = runs["float32"], runs["bfloat16"]
    for a, b, c in zip(fp32, alone, together):
        assert b == pytest.approx(a, rel=2e-2) and c == pytest.approx(b, rel=2e-2)
    assert any(x != y for a, b in zip(fp32, alone) for x, y in zip(a, b))  # bf16 sums differ from fp32 ones


def test_auto_train_dtype_is_bf16_only_where_bf16_matmuls_are_fast(monkeypatch):
    from seal import models
    from seal.inner.lora import train_precision

    cpu = torch.device("cpu")

    def autocast_on(cfg) -> bool:
        with train_precision(cfg, cpu):
            return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16

    monkeypatch.setattr(models, "cpu_has_amx", lambda: True)
    assert autocast_on(replace(CFG, train_dtype="auto")) and autocast_on(replace(CFG, train_dtype="bfloat16"))
    assert not autocast_on(replace(CFG, train_dtype="float32"))
    monkeypatch.setattr(models, "cpu_has_amx", lambda: False)
    assert not autocast_on(replace(CFG, train_dtype="auto")) and autocast_on(replace(CFG, train_dtype="bfloat16"))
    assert not torch.is_autocast_enabled("cpu")
