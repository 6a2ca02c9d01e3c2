"""Which LoRA adapter each batch row goes through, read from the torch model as callers hold it.

Engines other than torch itself cannot run the model's modules, so they need the adapters as data: none,
the active adapter of a peft-wrapped model, or, inside `seal.inner.batched.batched_adapters`, the
candidate each row is routed to. An `Adapter` has a `key` that changes whenever its weights do (a hash of
their bytes: adapters come and go at recycled addresses), so an engine can cache what it builds from it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Adapter:
    key: tuple
    scaling: float
    layers: Callable[[], dict[str, tuple[torch.Tensor, torch.Tensor]]]  # HF module -> (A [r, in], B [out, r])


def _digest(layers) -> str:
    """A hash of (module name, A, B) over the adapted modules: equal weights on other modules differ."""
    h = hashlib.blake2b(digest_size=16)
    for name, a, b in layers:
        h.update(name.encode())
        for t in (a, b):
            h.update(t.detach().float().cpu().contiguous().numpy().data)
    return h.hexdigest()


def _module_name(name: str) -> str:
    return name.removeprefix("base_model.model.")


def _peft(model) -> Adapter | None:
    found = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, torch.nn.ModuleDict) or getattr(module, "merged", False):
            continue
        if getattr(module, "disable_adapters", False):
            continue
        active = [a for a in module.active_adapters if a in lora_a]
        if len(active) > 1:
            raise NotImplementedError("more than one active peft adapter per module")
        if active:
            found.append((_module_name(name), module, active[0]))
    if not found:
        return None
    scalings = {m.scaling[a] for _, m, a in found}
    if len(scalings) != 1:
        raise NotImplementedError("peft adapters with a different scaling per module")
    weights = [(n, m.lora_A[a].weight, m.lora_B[a].weight) for n, m, a in found]
    scaling = scalings.pop()
    key = ("lora", scaling, _digest(weights))
    return Adapter(key, scaling, lambda: {n: (a, b) for n, a, b in weights})


def per_row(model, rows: int) -> list[Adapter | None]:
    """The adapter of each of `rows` batch rows (None: the bare model)."""
    multi = [(n, m) for n, m in model.named_modules() if hasattr(m, "routing") and hasattr(m, "lora_A")]
    if not multi:
        return [_peft(model)] * rows
    routing = multi[0][1].routing
    if routing.fixed is not None:
        choice = [routing.fixed] * rows
    elif routing.idx is not None and routing.idx.numel() == rows:
        choice = routing.idx.tolist()
    else:
        raise RuntimeError("no adapter chosen for the batch rows: use MultiAdapter.rows(...) around the call")

    def candidate(k: int) -> Adapter:
        layers = lambda: {n: (m.lora_A[k].t(), m.lora_B[k].t()) for n, m in multi}  # noqa: E731
        scaling = multi[0][1].scaling
        return Adapter(("lora", scaling, _digest((n, m.lora_A[k], m.lora_B[k]) for n, m in multi)), scaling, layers)

    made = {k: candidate(k) for k in set(choice)}
    return [made[k] for k in choice]
