"""llama.cpp on the CPU through llama-cpp-python's low-level API: the fast backend.

One llama.cpp model per torch model, memory-mapped: a GGUF written from the current torch weights in
`weight_type` (f16 by default), or with `weight_type="embedded"` the embedded model's own GGUF file while
the torch weights are still the ones loaded from it (its safetensors cache is that file dequantised).
Measured on SmolLM2-135M, 40 closed-book questions, 48-token greedy answers identical to hf's: f32 38,
f16 37, q8_0 8, the embedded Q4_1 file 7 (llama.cpp quantises the activations to 8 bits for quantised
weights, which changes most long answers). On the 200 questions of benchmarks/generation.py, f32 gives 198
(99 %) without an adapter and 195 (97.5 %) with one, at 2.1x hf's batch-1 rate, and f16 decodes SmolLM2 about
twice as fast. On Qwen2.5-0.5B (the default model) f16 gives 199 (99.5 %) and 198 (99 %) at 21.3 tokens/s, f32
200 and 198 at 17.2. Hence f16 by default and `model.llamacpp_weights: f32` where parity matters more than speed.
Tried on Qwen and not offered (one thread, 100 questions): bf16 weights decode no faster than f16 on a CPU with
avx512_bf16 (26.9 vs 26.3 tokens/s) with 97 answers as hf's against 99, and an f16 model with a q8_0 output
head is slower (24.6) with 93: one thread's decoding is bound by more than the bytes of the weights.
Every LoRA adapter is written once as a GGUF LoRA, loaded next to the model and switched on per context
(`llama_set_adapters_lora`); rows of a call that use different adapters are decoded group by group. The
high-level `Llama` class is not used: with `lora_path` it turns mmap off and it cannot switch adapters per call.

Token ids come from the HF tokenizer and text is decoded by it, so prompts and answers are the same
tokens as with the hf backend; llama.cpp only computes logits. Choosing the next token is done here
(argmax, or temperature + top-p with a numpy generator seeded per completion from the caller's seed), as
is filling in a template (choices scored on top of the KV cache, then removed from it).
"""

from __future__ import annotations

import random
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from seal.backends import adapters as adapter_rows
from seal.backends import to_gguf
from seal.backends.base import BackendError, Slot, Text, check_fill_in, check_generate, encode_pairs, stop_ids
from seal.backends.hf import choose
from seal.backends.llamacpp_engine import Engine

PROMPTS_PER_BATCH = 8  # next_token_logprobs: prompts decoded together (its callers pass no batch size)
NUCLEUS_HEAD = 1024  # top-p sampling sorts these likeliest tokens first; the nucleus nearly always lies within


@dataclass
class _State:
    """What the backend keeps per torch model: the GGUF it came from, the engine of its current weights."""

    gguf: Path | None
    loaded: tuple
    weight_type: str
    engine: Engine | None = None
    signature: tuple | None = None
    files: tempfile.TemporaryDirectory = field(default_factory=lambda: tempfile.TemporaryDirectory(prefix="seal-gguf-"))
    written: int = 0

    def new_file(self, stem: str) -> Path:
        self.written += 1
        return Path(self.files.name) / f"{stem}-{self.written}.gguf"


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def _pick(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator | None) -> int:
    """The next token: argmax when greedy, else a draw at `temperature` from the smallest set of tokens whose
    probability reaches `top_p` (as transformers' temperature and top-p warpers do)."""
    if rng is None:
        return int(logits.argmax())
    probs = np.exp(_log_softmax(logits / temperature))
    order = _likeliest(probs) if top_p < 1 else None
    cumulative = None if order is None else np.cumsum(probs[order])
    if cumulative is None or cumulative[-1] < top_p:  # the nucleus reaches past the likeliest: sort everything
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
    keep = max(1, int(np.searchsorted(cumulative, top_p) + 1)) if top_p < 1 else len(order)
    kept = probs[order[:keep]] / probs[order[:keep]].sum()
    return int(order[rng.choice(keep, p=kept)])


def _likeliest(probs: np.ndarray) -> np.ndarray | None:
    """The indices of the NUCLEUS_HEAD likeliest tokens (and every token tied with the last), most likely first,
    ties by index: the start of the full stable sort's order, found without sorting a 150k-token vocabulary for
    every sampled token (that sort took 16 s of a 280 s memory learn on the default model). None for a small
    vocabulary."""
    if len(probs) <= NUCLEUS_HEAD:
        return None
    threshold = np.partition(probs, -NUCLEUS_HEAD)[-NUCLEUS_HEAD]
    head = np.flatnonzero(probs >= threshold)  # ascending indices, so a stable sort keeps ties in index order
    return head[np.argsort(-probs[head], kind="stable")]


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self):
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def supports(self, model) -> str | None:
        config = getattr(model, "config", None)
        if config is None:
            return "it is not a transformers model"
        if getattr(model, "device", torch.device("cpu")).type != "cpu":
            return "the model is not on the CPU"
        return to_gguf.unsupported(config)

    def attach(self, model, gguf: Path | None = None, weight_type: str = "f16", **_) -> None:
        if weight_type not in (*to_gguf.WEIGHT_TYPES, "embedded"):
            raise BackendError(f"unknown llama.cpp weight type {weight_type!r}; choose from "
                               f"{(*to_gguf.WEIGHT_TYPES, 'embedded')}")
        gguf = gguf if weight_type == "embedded" else None
        known = self._states.get(model)
        if known is None or (known.gguf, known.weight_type) != (gguf, weight_type):
            self._states[model] = _State(gguf, to_gguf.signature(model), weight_type)

    def _state(self, model) -> _State:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if base not in self._states:
            self.attach(base)
        return self._states[base]

    def engine(self, model) -> Engine:
        """The engine for the model's current base weights (rebuilt after any of them changed)."""
        state = self._state(model)
        signature = to_gguf.signature(model)
        if state.engine is None or signature != state.signature:
            if state.engine is not None:
                state.engine.close()
                state.engine = None
            if state.gguf is not None and signature == state.loaded:
                path = state.gguf  # the file the torch weights were converted from: the same weights
            else:
                weights = "f16" if state.weight_type == "embedded" else state.weight_type
                path = to_gguf.write_model(model, state.new_file("model"), weights)
            state.engine, state.signature = Engine(path, model.config.vocab_size), signature
        return state.engine

    def _lora_file(self, model, adapter) -> Path:
        return to_gguf.write_lora(model.config, adapter.layers(), adapter.scaling, self._state(model).new_file("lora"))

    def _groups(self, model, n: int) -> list[tuple[object, list[int]]]:
        """Row indices grouped by the adapter they go through, in order of first appearance."""
        groups: dict[object, tuple[object, list[int]]] = {}
        for i, adapter in enumerate(adapter_rows.per_row(model, n)):
            groups.setdefault(None if adapter is None else adapter.key, (adapter, []))[1].append(i)
        return list(groups.values())

    @torch.no_grad()
    def generate(self, model, tokenizer, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, num_samples: int = 1, batch_size: int = 8, seed: int = 0) -> list[list[str]]:
        check_generate(prompts, max_new_tokens, temperature, num_samples)
        engine, stops = self.engine(model), stop_ids(model, tokenizer)
        seeds = random.Random(seed)
        jobs = [(i, tokenizer(p, add_special_tokens=False)["input_ids"],
                 np.random.default_rng(seeds.getrandbits(63)) if temperature > 0 else None)
                for i, p in enumerate(prompts) for _ in range(num_samples)]
        texts: list[str] = [""] * len(jobs)
        for adapter, rows in self._groups(model, len(prompts)):
            mine = [j for j, job in enumerate(jobs) if job[0] in set(rows)]
            for start in range(0, len(mine), batch_size):
                chunk = mine[start : start + batch_size]
                engine.reserve(max(len(jobs[j][1]) for j in chunk) + max_new_tokens, len(chunk))
                engine.use(adapter, lambda a: self._lora_file(model, a))
                for j, ids in zip(chunk, self._decode_many(engine, [jobs[j] for j in chunk], max_new_tokens,
                                                           temperature, top_p, stops)):
                    texts[j] = tokenizer.decode(ids, skip_special_tokens=True).strip()
        outputs: list[list[str]] = [[] for _ in prompts]
        for (i, _, _), text in zip(jobs, texts):
            outputs[i].append(text)
        return outputs

    @torch.no_grad()
    def stream(self, model, tokenizer, prompt: str, *, max_new_tokens: int) -> Iterator[str]:
        """Greedy decoding of one sequence, token by token; each token's text is yielded once the tokenizer can
        spell it (a character split over several byte tokens waits for its last byte)."""
        check_generate([prompt], max_new_tokens, 0.0, 1)
        engine, stops = self.engine(model), stop_ids(model, tokenizer)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        [(adapter, _)] = self._groups(model, 1)
        engine.reserve(len(ids) + max_new_tokens, 1)
        engine.use(adapter, lambda a: self._lora_file(model, a))
        logits = engine.decode([(t, pos, 0, pos == len(ids) - 1) for pos, t in enumerate(ids)])[0]
        new, shown = [], ""
        while (token := _pick(logits, 0.0, 1.0, None)) not in stops:
            new.append(token)
            text = tokenizer.decode(new, skip_special_tokens=True)
            if not text.endswith("\ufffd"):
                yield text[len(shown):]
                shown = text
            if len(new) == max_new_tokens:
                break
            logits = engine.decode([(token, len(ids) + len(new) - 1, 0, True)])[0]
        if rest := tokenizer.decode(new, skip_special_tokens=True)[len(shown):]:
            yield rest  # a character cut short by the end of the answer, spelt as `generate` spells it

    @staticmethod
    def _decode_many(engine: Engine, jobs, max_new_tokens: int, temperature: float, top_p: float,
                     stops: set[int]) -> list[list[int]]:
        """New tokens of each job, all jobs decoded together as sequences 0..n-1 of one batch per step."""
        entries = [(t, pos, s, pos == len(ids) - 1) for s, (_, ids, _) in enumerate(jobs) for pos, t in enumerate(ids)]
        logits = engine.decode(entries)
        new: list[list[int]] = [[] for _ in jobs]
        active = list(range(len(jobs)))
        while active:
            step = []
            for s, row in zip(active, logits):
                token = _pick(row, temperature, top_p, jobs[s][2])
                if token in stops:
                    continue
                new[s].append(token)
                if len(new[s]) < max_new_tokens:
                    step.append(s)
            active = step
            if active:
                logits = engine.decode([(new[s][-1], len(jobs[s][1]) + len(new[s]) - 1, s, True) for s in active])
        return new

    @torch.no_grad()
    def fill_in(self, model, tokenizer, prompts: list[str], template: list[Slot], *, temperature: float,
                num_samples: int = 1, seed: int = 0) -> list[list[str]]:
        check_fill_in(template, temperature, num_samples)
        engine, rng = self.engine(model), random.Random(seed)
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        pieces = [encode(p) for p in prompts]
        room = max(map(len, pieces), default=0) + sum(len(encode(f)) + max((len(encode(c)) for c in cs), default=0)
                                                      for f, cs in template)
        outputs: list[list[str]] = [[] for _ in prompts]
        for adapter, rows in self._groups(model, len(prompts)):
            for i in rows:
                for _ in range(num_samples):
                    engine.reserve(room, 1)
                    engine.use(adapter, lambda a: self._lora_file(model, a))
                    outputs[i].append(self._fill_one(engine, encode, pieces[i], template, temperature, rng))
        return outputs

    @staticmethod
    def _fill_one(engine: Engine, encode, prompt_ids: list[int], template: list[Slot], temperature: float,
                  rng: random.Random) -> str:
        pos = 0

        def advance(ids: list[int]) -> np.ndarray:
            nonlocal pos
            (last,) = engine.decode([(t, pos + n, 0, n == len(ids) - 1) for n, t in enumerate(ids)])
            pos += len(ids)
            return last

        last, text = advance(prompt_ids), ""
        for n, (fixed, choices) in enumerate(template):
            text += fixed
            if fixed and (choices or n + 1 < len(template)):
                last = advance(encode(fixed))
            if not choices:
                continue
            first, scores = _log_softmax(last), []
            for choice in choices:
                ids = encode(choice)
                logprob = float(first[ids[0]])
                if len(ids) > 1:
                    rows = engine.decode([(t, pos + k, 0, True) for k, t in enumerate(ids[:-1])])
                    engine.forget(0, pos)
                    logprob += sum(float(_log_softmax(r)[t]) for r, t in zip(rows, ids[1:]))
                scores.append(logprob)
            pick = choose(scores, temperature, rng)
            last = advance(encode(choices[pick]))
            text += choices[pick]
        return text

    @torch.no_grad()
    def loglik(self, model, tokenizer, pairs: Sequence[tuple[Text, Text]], *, batch_size: int = 32) -> list[float]:
        engine, encoded = self.engine(model), encode_pairs(tokenizer, pairs)
        scores = [0.0] * len(encoded)
        for adapter, rows in self._groups(model, len(encoded)):
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                engine.reserve(max(len(p) + len(a) for p, a in (encoded[r] for r in chunk)), len(chunk))
                engine.use(adapter, lambda a: self._lora_file(model, a))
                entries = [(t, pos, s, pos >= len(p) - 1 and pos < len(p) + len(a) - 1)
                           for s, (p, a) in enumerate(encoded[r] for r in chunk) for pos, t in enumerate(p + a)]
                logits = iter(engine.decode(entries))
                for r in chunk:
                    scores[r] = sum(float(_log_softmax(next(logits))[t]) for t in encoded[r][1])
        return scores

    @torch.no_grad()
    def next_token_logprobs(self, model, tokenizer, prompts: list[str], token_ids: Sequence[int]) -> list[list[float]]:
        """PROMPTS_PER_BATCH prompts at a time, as the sequences of one batch, with logits at their last token only."""
        engine = self.engine(model)
        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        scores: list[list[float]] = [[] for _ in prompts]
        for adapter, rows in self._groups(model, len(prompts)):
            for start in range(0, len(rows), PROMPTS_PER_BATCH):
                chunk = rows[start : start + PROMPTS_PER_BATCH]
                engine.reserve(max(len(encoded[r]) for r in chunk), len(chunk))
                engine.use(adapter, lambda a: self._lora_file(model, a))
                entries = [(t, pos, s, pos == len(ids) - 1)
                           for s, ids in enumerate(encoded[r] for r in chunk) for pos, t in enumerate(ids)]
                for r, logits in zip(chunk, engine.decode(entries)):
                    logprobs = _log_softmax(logits)
                    scores[r] = [float(logprobs[t]) for t in token_ids]
        return scores
