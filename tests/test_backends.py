"""Backends: selection from the config, and the llama.cpp backend against the hf reference on the tiny model
(greedy text, filled-in templates, log-likelihoods; no adapter, a peft adapter, a different adapter per row)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from seal import backends, models
from seal.backends import to_gguf
from seal.config import InnerConfig, ModelConfig
from seal.generation import chat_prompt, fill_in, generate, loglik, next_token_logprobs, stream
from seal.inner.batched import batched_adapters
from seal.inner.lora import fresh_adapter

QUESTIONS = ["When did the Orrin Canal open?", "Who built it?", "Which river does it join?", "Where is Lune?",
             "What did the canal make cheaper?", "How long is it?"]
TEMPLATE = [("Colour:", (" red", " dark green", " blue")), (" size", ()), (" =", (" 1", " 22 7")), ("!", ())]
SMALL_LORA = InnerConfig(rank=4, alpha=8)


def _prompts(tok):
    return [chat_prompt(tok, q) for q in QUESTIONS]


def _perturbed(peft_model, seed: int) -> None:
    """Give a fresh adapter (B = 0) weights that change the answers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_auto_is_pinned_to_hf_in_tests_and_unknown_names_are_refused(tiny):
    model, _ = tiny
    assert backends.resolve("auto", model) == "hf"
    assert backends.for_model(model).name == "hf"
    with pytest.raises(backends.BackendError, match="unknown backend 'fast'"):
        backends.resolve("fast", model)


def test_a_backend_that_is_not_installed_is_a_clear_error(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda name: name == "hf")
    with pytest.raises(backends.BackendError, match="'llamacpp' is selected but not installed.*--with-llamacpp"):
        models.load(ModelConfig(name=str(tiny_model_dir), backend="llamacpp"))


def test_vllm_refuses_a_model_on_the_cpu(tiny):
    model, _ = tiny
    from seal.backends.vllm import VLLMBackend

    assert "CUDA" in VLLMBackend().supports(model)


def test_unsupported_architectures_are_named(tiny):
    model, _ = tiny
    model.config.model_type = "gpt2"
    try:
        assert "gpt2" in to_gguf.unsupported(model.config)
    finally:
        model.config.model_type = "llama"


def test_a_merge_through_peft_changes_the_signature(tiny):
    """peft merges an adapter through `.data`, which torch does not count as a write to the parameter: the
    backends' change check must see it all the same (llama.cpp went on answering from the unmerged file)."""
    model, _ = tiny
    before = to_gguf.signature(model)
    with fresh_adapter(model, SMALL_LORA) as adapted:
        _perturbed(adapted, 0)
        assert to_gguf.signature(model) == before  # an adapter beside the weights is not a change to them
        adapted.merge_adapter()
        assert to_gguf.signature(model) != before


def test_q_k_rows_go_from_halves_to_pairs_per_head():
    w = torch.arange(2 * 8, dtype=torch.float32).reshape(8, 2).numpy()  # 2 heads of 4 rows, 2 columns
    rows = to_gguf.to_pairs(w, heads=2)[:, 0].tolist()
    assert rows == [0, 4, 2, 6, 8, 12, 10, 14]  # head 0: rows 0,2 | 1,3 (halves) become adjacent pairs


def test_vllm_engine_asks_for_lora_at_a_rank_it_serves(tmp_path):
    from seal.backends.vllm import engine_args

    args = engine_args(tmp_path, max_lora_rank=4)
    assert args["enable_lora"] is True and args["max_lora_rank"] == 8 and args["model"] == str(tmp_path)
    assert engine_args(tmp_path, max_lora_rank=16)["max_lora_rank"] == 16
    with pytest.raises(ValueError, match="LoRA ranks"):
        engine_args(tmp_path, max_lora_rank=600)


def test_vllm_lora_requests_are_unique_per_adapter_and_load_in_peft(tiny, tmp_path):
    """One (name, id, PEFT directory) per distinct adapter, the same one again for the same weights; the
    directory holds the adapter peft (and so vLLM) loads back with the same effect."""
    from peft import PeftModel

    from seal.backends.adapters import per_row
    from seal.backends.vllm import LoraRegistry

    model, tok = tiny
    registry = LoraRegistry(tmp_path)
    prompt = _prompts(tok)[:2]
    with fresh_adapter(model, SMALL_LORA) as adapted:
        _perturbed(adapted, 0)
        (first,) = per_row(adapted, 1)
        name, lora_id, path = registry.request(first)
        assert registry.request(per_row(adapted, 1)[0]) == (name, lora_id, path)
        expected = generate(adapted, tok, prompt, max_new_tokens=8)
        _perturbed(adapted, 1)
        other = registry.request(per_row(adapted, 1)[0])
    assert other[0] != name and other[1] != lora_id and lora_id >= 1
    reloaded = PeftModel.from_pretrained(model, str(path)).eval()
    assert generate(reloaded, tok, prompt, max_new_tokens=8) == expected


# ---- llama.cpp against hf

@pytest.fixture(scope="module")
def pair(scrambled_model_dir):
    """The scrambled tiny model loaded twice: through hf, and through llama.cpp with f32 weights."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/setup.sh --with-llamacpp)")
    ref = models.load(ModelConfig(name=str(scrambled_model_dir), backend="hf"))
    fast, tok = models.load(ModelConfig(name=str(scrambled_model_dir), backend="llamacpp", llamacpp_weights="f32"))
    return ref[0], fast, tok


def _agree(a: list[list[str]], b: list[list[str]]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


def test_greedy_answers_match_hf_without_an_adapter(pair):
    ref, fast, tok = pair
    assert backends.for_model(fast).name == "llamacpp"
    expected = generate(ref, tok, _prompts(tok), max_new_tokens=12)
    assert all(x[0] for x in expected)
    for batch in (1, 4):
        assert _agree(generate(fast, tok, _prompts(tok), max_new_tokens=12, batch_size=batch), expected) >= 0.95


def test_greedy_answers_match_hf_with_a_peft_adapter(pair):
    ref, fast, tok = pair
    plain = generate(fast, tok, _prompts(tok), max_new_tokens=8)
    with fresh_adapter(ref, SMALL_LORA) as a, fresh_adapter(fast, SMALL_LORA) as b:
        _perturbed(a, 0)
        _perturbed(b, 0)
        expected = generate(a, tok, _prompts(tok), max_new_tokens=8)
        adapted = generate(b, tok, _prompts(tok), max_new_tokens=8)
        pairs = [(p, e[0]) for p, e in zip(_prompts(tok), expected) if e[0]]
        assert loglik(b, tok, pairs) == pytest.approx(loglik(a, tok, pairs), abs=5e-3)  # the same function
    assert _agree(expected, plain) < 0.5  # the adapter matters
    # The random tiny model's logits are nearly flat: one prompt meets a top-2 gap of 5e-5 at its third
    # token, which hf itself breaks differently in a batch and alone; the real model's parity is measured
    # by benchmarks/generation.py.
    assert _agree(adapted, expected) >= 5 / 6
    assert generate(fast, tok, _prompts(tok), max_new_tokens=8) == plain  # and is gone after its block


def test_a_stream_is_the_greedy_answer_token_by_token(pair):
    _, fast, tok = pair
    expected = generate(fast, tok, _prompts(tok), max_new_tokens=12)
    streamed = [list(stream(fast, tok, p, max_new_tokens=12)) for p in _prompts(tok)]
    assert ["".join(s) for s in streamed] == [e[0] for e in expected]
    assert sum(len(s) for s in streamed) > 2 * len(streamed)  # several pieces per answer
    with fresh_adapter(fast, SMALL_LORA) as b:
        _perturbed(b, 0)
        assert ["".join(stream(b, tok, p, max_new_tokens=8)) for p in _prompts(tok)] == \
            [e[0] for e in generate(b, tok, _prompts(tok), max_new_tokens=8)]


def test_adapters_on_different_modules_are_told_apart(pair):
    """k_proj and v_proj have the same shape: the same seed gives the same A and B on either, yet they are
    different adapters (a cache keyed by weights alone would serve the first one twice)."""
    ref, fast, tok = pair
    pairs = [(p, " 1843 and the river Tesk") for p in _prompts(tok)[:2]]
    for module in ("k_proj", "v_proj"):
        cfg = dataclasses.replace(SMALL_LORA, target_modules=[module])
        with fresh_adapter(ref, cfg) as a, fresh_adapter(fast, cfg) as b:
            _perturbed(a, 0)
            _perturbed(b, 0)
            assert loglik(b, tok, pairs) == pytest.approx(loglik(a, tok, pairs), abs=5e-3)


def test_each_row_goes_through_its_own_adapter(pair):
    """Inside batched_adapters, candidate k's rows answer as candidate k does alone (on both backends)."""
    ref, fast, tok = pair
    cfgs = [dataclasses.replace(SMALL_LORA, seed=s) for s in (1, 2)]
    results = []
    for model in (ref, fast):
        with batched_adapters(model, cfgs) as multi:
            for layer in multi.layers:
                with torch.no_grad():
                    layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=torch.Generator().manual_seed(3)))
            together = multi.generate(tok, [_prompts(tok)[:3], _prompts(tok)[3:]], max_new_tokens=10)
            alone = []
            for k, chunk in enumerate((_prompts(tok)[:3], _prompts(tok)[3:])):
                with multi.only(k) as m:
                    alone.append([o[0] for o in generate(m, tok, chunk, max_new_tokens=10)])
        assert together == alone
        results.append(together)
    assert _agree([[a] for a in sum(results[1], [])], [[a] for a in sum(results[0], [])]) >= 0.95


def test_fill_in_and_loglik_match_hf(pair):
    ref, fast, tok = pair
    prompts = ["Describe the box.", "x"]
    assert fill_in(fast, tok, prompts, TEMPLATE, temperature=0) == fill_in(ref, tok, prompts, TEMPLATE, temperature=0)
    sampled = fill_in(fast, tok, prompts, TEMPLATE, temperature=5.0, num_samples=4, seed=3)
    assert sampled == fill_in(fast, tok, prompts, TEMPLATE, temperature=5.0, num_samples=4, seed=3)
    pairs = [(p, " 1843") for p in _prompts(tok)[:3]] + [("Orrin", " Canal joins the river Tesk")]
    assert loglik(fast, tok, pairs, batch_size=2) == pytest.approx(loglik(ref, tok, pairs), abs=1e-3)
    tokens = [3, 40, 200]
    prompts = _prompts(tok) + ["Orrin"] * 4  # more prompts than llama.cpp decodes together
    for a, b in zip(next_token_logprobs(fast, tok, prompts, tokens), next_token_logprobs(ref, tok, prompts, tokens)):
        assert a == pytest.approx(b, abs=1e-3)


def test_sampling_is_seeded(pair):
    _, fast, tok = pair
    kw = dict(max_new_tokens=8, temperature=1.0, top_p=0.9, num_samples=3, batch_size=2)
    a = generate(fast, tok, _prompts(tok)[:2], seed=7, **kw)
    assert a == generate(fast, tok, _prompts(tok)[:2], seed=7, **kw)
    assert a != generate(fast, tok, _prompts(tok)[:2], seed=8, **kw)
    assert len(set(a[0])) > 1


def test_changed_base_weights_are_picked_up(pair):
    """A trained base (e.g. a ReST-EM generator after its M-step) is written anew before the next call."""
    ref, fast, tok = pair
    before = generate(fast, tok, _prompts(tok), max_new_tokens=8)
    saved = {n: p.detach().clone() for n, p in fast.named_parameters()}
    try:
        with torch.no_grad():
            for p in fast.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.3)
        changed = generate(fast, tok, _prompts(tok), max_new_tokens=8)
        assert changed != before
    finally:
        with torch.no_grad():
            for n, p in fast.named_parameters():
                p.copy_(saved[n])
    assert generate(fast, tok, _prompts(tok), max_new_tokens=8) == before


def test_an_adapter_merged_by_peft_is_answered_from(pair):
    """peft's merge writes through `.data`; the next call must still decode the merged weights, as hf does."""
    ref, fast, tok = pair
    before = generate(fast, tok, _prompts(tok), max_new_tokens=8)
    saved = [{n: p.detach().clone() for n, p in m.named_parameters()} for m in (ref, fast)]
    try:
        expected = []
        for model in (ref, fast):
            with fresh_adapter(model, SMALL_LORA) as adapted:
                _perturbed(adapted, 0)
                adapted.merge_adapter()
            expected.append(generate(model, tok, _prompts(tok), max_new_tokens=8))
        assert expected[1] != before
        assert _agree(expected[1], expected[0]) >= 5 / 6  # the near-tie of the adapter test above
    finally:
        with torch.no_grad():
            for model, weights in zip((ref, fast), saved):
                for n, p in model.named_parameters():
                    p.copy_(weights[n])
    assert generate(fast, tok, _prompts(tok), max_new_tokens=8) == before


def test_q8_0_weights_answer_as_hf_does(scrambled_model_dir):
    """q8_0 weights stay in llama.cpp's plain mmapped CPU buffer: on a CPU with AMX, its extra buffer type
    (weights copied and repacked for AMX) crashed the first decode of a q8_0 model with a segfault."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (scripts/setup.sh --with-llamacpp)")
    ref, tok = models.load(ModelConfig(name=str(scrambled_model_dir), backend="hf"))
    fast, _ = models.load(ModelConfig(name=str(scrambled_model_dir), backend="llamacpp", llamacpp_weights="q8_0"))
    expected = generate(ref, tok, _prompts(tok), max_new_tokens=6)
    assert _agree(generate(fast, tok, _prompts(tok), max_new_tokens=6), expected) >= 0.5


@pytest.mark.parametrize("top_p", [0.9, 0.999, 1.0])
def test_top_p_draws_are_the_full_sorts_draws(top_p):
    """The sampler sorts only the likeliest tokens when the nucleus lies within them, else the whole vocabulary:
    either way each draw is the token a stable sort of every probability gives, ties included."""
    from seal.backends.llamacpp import _log_softmax, _pick

    def by_full_sort(logits, temperature, rng):
        probs = np.exp(_log_softmax(logits / temperature))
        order = np.argsort(-probs, kind="stable")
        keep = max(1, int(np.searchsorted(np.cumsum(probs[order]), top_p) + 1)) if top_p < 1 else len(order)
        return int(order[rng.choice(keep, p=probs[order[:keep]] / probs[order[:keep]].sum())])

    rng = np.random.default_rng(0)
    for trial in range(30):
        logits = rng.normal(0, 3 if trial % 2 else 0.3, 20000).astype(np.float32)  # peaked, then flat (wide nucleus)
        # a tie of many tokens at the top, some trials more of them than the sampler sorts first
        logits[rng.choice(20000, 1500 if trial % 3 == 0 else 300, replace=False)] = logits.max()
        temperature = 0.7 + trial / 30
        fast, slow = np.random.default_rng(trial), np.random.default_rng(trial)
        assert [_pick(logits, temperature, top_p, fast) for _ in range(5)] == \
               [by_full_sort(logits, temperature, slow) for _ in range(5)]
