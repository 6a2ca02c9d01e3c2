"""vLLM on a GPU: batched generation with a LoRA adapter per request.

vLLM loads weights from a directory, so the torch model's current weights are saved once per change of
its base weights (`to_gguf.signature`) and an engine is built on them with `enable_lora`. Each distinct
adapter (by the hash of its weights, `adapters.Adapter.key`) is saved in PEFT format and served through
its own `LoRARequest` with a unique name and id, so the rows of one call can each use a different adapter.
Filling in a template and (next-token) log-likelihoods need cache surgery vLLM does not expose, and its
offline engine hands a completion over whole: these and streamed completions run on the torch model itself
(the hf backend), which sits on the same GPU.

Only the configuration is tested on machines without a GPU (`engine_args`, `LoraRegistry`).
"""

from __future__ import annotations

import json
import random
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from seal.backends import adapters as adapter_rows
from seal.backends import to_gguf
from seal.backends.base import Slot, Text, check_generate
from seal.backends.hf import HFBackend

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's LoRA kernels are built for


def engine_args(model_dir: Path, max_lora_rank: int, max_loras: int = 8, gpu_memory_utilization: float = 0.5,
                seed: int = 0) -> dict:
    """Arguments of `vllm.LLM` for a model directory whose adapters go up to `max_lora_rank`. The GPU is
    shared with the torch model that trains the adapters, hence a fraction of its memory only."""
    rank = next((r for r in LORA_RANKS if r >= max_lora_rank), None)
    if rank is None:
        raise ValueError(f"vLLM serves LoRA ranks up to {LORA_RANKS[-1]}, not {max_lora_rank}")
    return dict(model=str(model_dir), tokenizer=str(model_dir), enable_lora=True, max_lora_rank=rank,
                max_loras=max_loras, gpu_memory_utilization=gpu_memory_utilization, seed=seed, dtype="auto")


@dataclass
class LoraRegistry:
    """One PEFT directory and one unique (name, id) per distinct adapter, for `vllm.lora.request.LoRARequest`."""

    root: Path
    known: dict[tuple, tuple[str, int, Path]] = field(default_factory=dict)

    def request(self, adapter: adapter_rows.Adapter) -> tuple[str, int, Path]:
        if adapter.key not in self.known:
            lora_id = len(self.known) + 1  # vLLM reserves 0 for "no adapter"
            path = self.root / f"lora-{lora_id}"
            save_peft(adapter, path)
            self.known[adapter.key] = (f"seal-{lora_id}", lora_id, path)
        return self.known[adapter.key]


def save_peft(adapter: adapter_rows.Adapter, path: Path) -> None:
    """An adapter in PEFT's format (adapter_config.json + adapter_model.safetensors), which vLLM reads."""
    from safetensors.torch import save_file

    layers = adapter.layers()
    rank = next(iter(layers.values()))[0].shape[0]
    path.mkdir(parents=True, exist_ok=True)
    state = {}
    for module, (a, b) in layers.items():
        state[f"base_model.model.{module}.lora_A.weight"] = a.detach().float().cpu().contiguous()
        state[f"base_model.model.{module}.lora_B.weight"] = b.detach().float().cpu().contiguous()
    save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": adapter.scaling * rank,
              "lora_dropout": 0.0, "bias": "none", "target_modules": sorted({m.rsplit(".", 1)[-1] for m in layers})}
    (path / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")


def save_base(model, tokenizer, directory: Path) -> None:
    """The model's base weights (never an adapter wrapped around them) as a plain HF model directory."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    weights = {n: p.detach().cpu().contiguous() for n, p in to_gguf.base_parameters(model).items()}
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


@dataclass
class _State:
    options: dict
    files: tempfile.TemporaryDirectory = field(default_factory=lambda: tempfile.TemporaryDirectory(prefix="seal-vllm-"))
    llm: object = None
    signature: tuple | None = None
    loras: LoraRegistry | None = None
    saved: int = 0


class VLLMBackend:
    name = "vllm"

    def __init__(self):
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._fallback = HFBackend()

    def supports(self, model) -> str | None:
        device = getattr(model, "device", torch.device("cpu"))
        return None if device.type == "cuda" else "vLLM needs the model on a CUDA device (model.device: cuda)"

    def attach(self, model, max_lora_rank: int = 64, **options) -> None:
        options.pop("gguf", None), options.pop("weight_type", None)  # llama.cpp's
        self._states[model] = _State(dict(max_lora_rank=max_lora_rank, **options))

    def _engine(self, model, tokenizer):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        state = self._states.get(base) or _State({"max_lora_rank": 64})
        self._states[base] = state
        signature = to_gguf.signature(model)
        if state.llm is None or signature != state.signature:
            from vllm import LLM

            state.saved += 1
            directory = Path(state.files.name) / f"model-{state.saved}"
            save_base(model, tokenizer, directory)
            state.llm = None  # the old engine's memory goes before the new one is built
            state.llm = LLM(**engine_args(directory, **state.options))
            state.signature = signature
            state.loras = LoraRegistry(Path(state.files.name))
        return state

    def generate(self, model, tokenizer, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, num_samples: int = 1, batch_size: int = 8, seed: int = 0) -> list[list[str]]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        check_generate(prompts, max_new_tokens, temperature, num_samples)
        state = self._engine(model, tokenizer)
        rows = adapter_rows.per_row(model, len(prompts))
        seeds = random.Random(seed)
        jobs = [(i, p) for i, p in enumerate(prompts) for _ in range(num_samples)]
        params = [SamplingParams(max_tokens=max_new_tokens, temperature=max(temperature, 0.0), top_p=top_p,
                                 seed=seeds.getrandbits(63) if temperature > 0 else None) for _ in jobs]
        requests = [None if rows[i] is None else LoRARequest(*state.loras.request(rows[i])) for i, _ in jobs]
        inputs = [{"prompt_token_ids": tokenizer(p, add_special_tokens=False)["input_ids"]} for _, p in jobs]
        results = state.llm.generate(inputs, params, lora_request=requests, use_tqdm=False)
        outputs: list[list[str]] = [[] for _ in prompts]
        for (i, _), result in zip(jobs, results):
            outputs[i].append(tokenizer.decode(result.outputs[0].token_ids, skip_special_tokens=True).strip())
        return outputs

    def stream(self, model, tokenizer, prompt: str, *, max_new_tokens: int) -> Iterator[str]:
        return self._fallback.stream(model, tokenizer, prompt, max_new_tokens=max_new_tokens)

    def fill_in(self, model, tokenizer, prompts: list[str], template: list[Slot], *, temperature: float,
                num_samples: int = 1, seed: int = 0) -> list[list[str]]:
        return self._fallback.fill_in(model, tokenizer, prompts, template, temperature=temperature,
                                      num_samples=num_samples, seed=seed)

    def loglik(self, model, tokenizer, pairs: Sequence[tuple[Text, Text]], *, batch_size: int = 32) -> list[float]:
        return self._fallback.loglik(model, tokenizer, pairs, batch_size=batch_size)

    def next_token_logprobs(self, model, tokenizer, prompts: list[str], token_ids: Sequence[int]) -> list[list[float]]:
        return self._fallback.next_token_logprobs(model, tokenizer, prompts, token_ids)
