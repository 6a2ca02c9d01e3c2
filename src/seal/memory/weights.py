"""A version's weights: saved adapters folded into the base model, or kept apart and routed per question.

Folding is written by hand (W += scaling * B @ A per target layer) rather than through peft's
`merge_and_unload`, which wraps the whole model once per adapter (~1 s each on the 135M model): a
version that folds in fifty documents is then loaded in well under a second on top of the base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file

from seal.config import InnerConfig
from seal.generation import generate, loglik, stream
from seal.inner.batched import installed_adapters, target_names

Pairs = list[tuple[torch.Tensor, torch.Tensor]]  # (lora_A.weight [r, in], lora_B.weight [out, r]) per target


def read_adapter(model, cfg: InnerConfig, path: str | Path) -> tuple[float, Pairs]:
    """(scaling, per-target weights in `target_names` order) of a saved PEFT adapter; refuses one whose shape
    does not fit `cfg` (another rank, alpha or set of target modules)."""
    path = Path(path)
    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    if (config["r"], config["lora_alpha"]) != (cfg.rank, cfg.alpha):
        raise ValueError(f"adapter {path} has rank {config['r']} / alpha {config['lora_alpha']}, "
                         f"the memory uses {cfg.rank} / {cfg.alpha}")
    state = load_file(str(path / "adapter_model.safetensors"))
    ref = next(model.parameters())
    pairs = []
    for name in target_names(model, cfg):
        key = f"base_model.model.{name}"
        try:
            a, b = state[f"{key}.lora_A.weight"], state[f"{key}.lora_B.weight"]
        except KeyError:
            raise ValueError(f"adapter {path} has no weights for {name}") from None
        pairs.append((a.to(ref.device, ref.dtype), b.to(ref.device, ref.dtype)))
    return config["lora_alpha"] / config["r"], pairs


@torch.no_grad()
def fold_in(model, cfg: InnerConfig, path: str | Path, scale: float = 1.0) -> None:
    """Add `scale` times a saved adapter's update to the model's weights for good (the `merge` strategy's step)."""
    scaling, pairs = read_adapter(model, cfg, path)
    for name, (a, b) in zip(target_names(model, cfg), pairs):
        model.get_submodule(name).weight.addmm_(b, a, alpha=scaling * scale)


def zero_adapter(pairs: Pairs) -> Pairs:
    """An adapter that changes nothing, for the rows that the router sends to no document."""
    return [(torch.zeros_like(a), torch.zeros_like(b)) for a, b in pairs]


def routed_generate(model, tokenizer, cfg: InnerConfig, adapters: list[Pairs], prompts: list[str],
                    route: list[int | None], *, max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers where prompt i goes through adapters[route[i]] (None: no adapter), in shared batches:
    rows of different adapters share each forward pass (seal.inner.batched's mixed-adapter layers)."""
    if not any(r is not None for r in route):
        return [o[0] for o in generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)]
    return _routed(model, cfg, adapters, prompts, route, lambda multi, per_slot: multi.generate(
        tokenizer, per_slot, max_new_tokens=max_new_tokens, batch_size=batch_size))


def routed_loglik(model, tokenizer, cfg: InnerConfig, adapters: list[Pairs], pairs: list[tuple[str, str]],
                  route: list[int | None]) -> list[float]:
    """log p(answer | prompt) summed over the answer's tokens, pair i through adapters[route[i]] (None: none)."""
    if not any(r is not None for r in route):
        return loglik(model, tokenizer, pairs)
    return _routed(model, cfg, adapters, pairs, route, lambda multi, per_slot: multi.gold_loglik(tokenizer, per_slot))


def _routed(model, cfg: InnerConfig, adapters: list[Pairs], rows: list, route: list[int | None], run) -> list:
    """run(multi, rows per slot) with the adapters `route` uses installed (and a zero one for the rows routed to
    none), each row through its adapter; the results in the rows' order."""
    used = sorted({r for r in route if r is not None})  # only the adapters this batch needs are installed
    slot = {r: k for k, r in enumerate(used)}
    weights = [adapters[r] for r in used] + [zero_adapter(adapters[used[0]])]
    per_slot: list[list[int]] = [[] for _ in weights]
    for i, r in enumerate(route):
        per_slot[len(used) if r is None else slot[r]].append(i)
    with installed_adapters(model, [cfg] * len(weights), weights) as multi:
        outs = run(multi, [[rows[i] for i in slot_rows] for slot_rows in per_slot])
    results = [None] * len(rows)
    for slot_rows, values in zip(per_slot, outs):
        for i, value in zip(slot_rows, values):
            results[i] = value
    return results


def routed_stream(model, tokenizer, cfg: InnerConfig, adapter: Pairs | None, prompt: str, *,
                  max_new_tokens: int) -> Iterator[str]:
    """`routed_generate` of one prompt through `adapter` (None: no adapter), in pieces as they are generated."""
    if adapter is None:
        yield from stream(model, tokenizer, prompt, max_new_tokens=max_new_tokens)
        return
    with installed_adapters(model, [cfg], [adapter]) as multi, multi.only(0) as routed:
        yield from stream(routed, tokenizer, prompt, max_new_tokens=max_new_tokens)
