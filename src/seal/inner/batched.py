"""K candidate self-edits of one base model, trained and evaluated together in shared passes.

SEAL's cost is its reward: every candidate self-edit needs its own LoRA finetune and evaluation. Here
K independent LoRA adapters sit over one frozen base model (`seal.inner.multi_lora`): for the duration
of a `with batched_adapters(...)` block every target linear layer is replaced by a layer holding all K
adapters; on exit the original modules are put back (the very same objects) and the adapters are
freed, so memory stays flat over any number of rounds.

    with batched_adapters(model, [cfg_0, cfg_1, cfg_2]) as multi:
        reports = multi.train(tokenizer, [plan_0, plan_1, plan_2])
        answers = multi.generate(tokenizer, [prompts_0, prompts_1, prompts_2], max_new_tokens=48)
        loglik = multi.gold_loglik(tokenizer, [[(prompt, gold), ...], ...])
        multi.save_adapter(1, path)          # PEFT format, loads with seal.inner.lora.load_adapter

The result equals K separate runs of `seal.inner.lora` (`fresh_adapter` + `train`) to fp32 tolerance,
which the tests check: the same initial adapters (`multi_lora`), data order, loss and AdamW updates
(`batched_train`); the evaluation batches all K candidates' answers (`batched_eval`).

Limits: dropout must be 0 (the default; the batched path would otherwise need per-candidate dropout
streams that could not match separate runs anyway); only `nn.Linear` targets; all candidates share
rank, alpha and target modules (lr, epochs, seed, batch size, max length and weight decay may differ).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from seal.config import InnerConfig
from seal.domains.base import UpdateError, UpdatePlan
from seal.inner.batched_eval import evaluator_for, generate_all, gold_loglik
from seal.inner.batched_train import TrainStats, train_candidates
from seal.inner.lora import TrainReport, fresh_update, lora_config, save_adapter, train
from seal.inner.multi_lora import MultiLoraLinear, Routing, adapter_dtype, initial_adapter, target_names


class MultiAdapter:
    """K LoRA adapters installed in `model`; made by `batched_adapters`, valid inside its block."""

    def __init__(self, model: nn.Module, cfgs: list[InnerConfig], names: list[str],
                 inits: list[list[tuple[torch.Tensor, torch.Tensor]]]):
        self.model, self.cfgs, self.names = model, cfgs, names
        self.k = len(cfgs)
        self.scaling = cfgs[0].alpha / cfgs[0].rank
        self.routing = Routing()
        self.stats = TrainStats()
        base = [model.get_submodule(n) for n in names]
        r = cfgs[0].rank
        sizes = [(m.in_features * r, r * m.out_features) for m in base]
        total = sum(a + b for a, b in sizes)
        ref = base[0].weight
        self.flat = torch.empty(self.k, total, device=ref.device, dtype=adapter_dtype(ref.dtype))
        self._slices: list[tuple[int, int, int]] = []  # (offset of A, offset of B, end) per target
        offset = 0
        self.layers: list[MultiLoraLinear] = []
        for name, module, (na, nb) in zip(names, base, sizes):
            a_view = self.flat[:, offset : offset + na].view(self.k, module.in_features, r)
            b_view = self.flat[:, offset + na : offset + na + nb].view(self.k, r, module.out_features)
            with torch.no_grad():
                for k, per_target in enumerate(inits):
                    a, b = per_target[len(self.layers)]
                    a_view[k].copy_(a.t())
                    b_view[k].copy_(b.t())
            self._slices.append((offset, offset + na, offset + na + nb))
            offset += na + nb
            self.layers.append(MultiLoraLinear(module, a_view, b_view, self.scaling, self.routing))
        self._originals = base

    # ---- installing and removing

    def _install(self) -> None:
        for name, layer in zip(self.names, self.layers):
            parent, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, child, layer)

    def _uninstall(self) -> None:
        for name, original in zip(self.names, self._originals):
            parent, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, child, original)
        self.routing.clear()
        self.layers, self.flat = [], None

    # ---- routing

    @contextlib.contextmanager
    def rows(self, adapters: Sequence[int] | torch.Tensor) -> Iterator[None]:
        """Inside the block, batch row b of every forward goes through adapter `adapters[b]`."""
        self.routing.set(adapters, self.flat.device, self.k)
        try:
            yield
        finally:
            self.routing.clear()

    @contextlib.contextmanager
    def only(self, k: int) -> Iterator[nn.Module]:
        """Inside the block the model behaves as candidate k alone, whatever the batch: for code that
        takes a plain model (e.g. `domain.evaluate`)."""
        self._check(k)
        self.routing.clear()
        self.routing.fixed = k
        try:
            yield self.model
        finally:
            self.routing.clear()

    def _check(self, k: int) -> None:
        if not 0 <= k < self.k:
            raise IndexError(f"candidate {k} out of range 0..{self.k - 1}")

    # ---- weights

    def adapter_state(self, k: int) -> dict[str, torch.Tensor]:
        """Candidate k's weights with peft's key names and shapes (lora_A [r, in], lora_B [out, r])."""
        self._check(k)
        state = {}
        for name, layer in zip(self.names, self.layers):
            state[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A[k].detach().t().contiguous().clone()
            state[f"base_model.model.{name}.lora_B.weight"] = layer.lora_B[k].detach().t().contiguous().clone()
        return state

    def save_adapter(self, k: int, path: str | Path) -> None:
        """Save candidate k in PEFT format (adapter_config.json + adapter_model.safetensors)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = lora_config(self.cfgs[k])
        config.base_model_name_or_path = getattr(self.model.config, "name_or_path", None)
        config.inference_mode = True
        config.save_pretrained(str(path))
        state = {key: t.cpu() for key, t in self.adapter_state(k).items()}
        save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})

    # ---- training and inference (seal.inner.batched_train, seal.inner.batched_eval)

    def train(self, tokenizer, plans: Sequence[UpdatePlan],
              on_step: Callable[[int, int, list[float | None]], None] | None = None) -> list[TrainReport]:
        """Train candidate k on plans[k], all together (see `batched_train.train_candidates`)."""
        return train_candidates(self, tokenizer, plans, on_step)

    @torch.no_grad()
    def forward(self, adapters: Sequence[int] | torch.Tensor, **inputs):
        """model(**inputs) with batch row b going through adapter adapters[b]."""
        with self.rows(adapters):
            return self.model(**inputs)

    def generate(self, tokenizer, prompts: Sequence[Sequence[str]], *, max_new_tokens: int,
                 batch_size: int | None = None) -> list[list[str]]:
        """Greedy completions of prompts[k] by candidate k (see `batched_eval.generate_all`)."""
        return generate_all(self, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)

    def gold_loglik(self, tokenizer, pairs: Sequence[Sequence[tuple[str, str]]], batch_size: int = 32) -> list[list[float]]:
        """log p(answer | prompt) per pair for candidate k on pairs[k] (see `batched_eval.gold_loglik`)."""
        return gold_loglik(self, tokenizer, pairs, batch_size)


def batchable(cfg: InnerConfig) -> bool:
    """Whether updates of `cfg` can go through this batched loop (LoRA without dropout); the others run
    one at a time through seal.inner.lora."""
    return cfg.method == "lora" and cfg.dropout == 0


@contextlib.contextmanager
def batched_adapters(model: nn.Module, cfgs: Sequence[InnerConfig], init: str = "auto") -> Iterator[MultiAdapter]:
    """Install K fresh LoRA adapters (candidate k as `fresh_adapter(model, cfgs[k])` would make it);
    on exit put back the original modules, requires_grad flags and train/eval mode."""
    cfgs = list(cfgs)
    if not cfgs:
        raise ValueError("batched_adapters needs at least one config")
    first = cfgs[0]
    for k, cfg in enumerate(cfgs):
        if not batchable(cfg):
            raise UpdateError(f"candidate {k}: batched updates need method lora and dropout 0 (got "
                              f"{cfg.method}, {cfg.dropout}); use seal.inner.lora for the others")
        shared = ("rank", "alpha", "target_modules", "train_dtype")
        if any(getattr(cfg, name) != getattr(first, name) for name in shared):
            raise UpdateError(f"candidate {k}: {', '.join(shared)} must be the same for all candidates")
    grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    names = target_names(model, first)
    try:
        inits = [initial_adapter(model, cfg, names, init) for cfg in cfgs]
    finally:
        _restore_grad_flags(model, grad_flags)  # peft's wrapping froze the base
    with installed_adapters(model, cfgs, inits) as multi:
        del inits
        yield multi


@contextlib.contextmanager
def installed_adapters(model: nn.Module, cfgs: Sequence[InnerConfig],
                       weights: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> Iterator[MultiAdapter]:
    """Install K given adapters: weights[k] holds (lora_A.weight [r, in], lora_B.weight [out, r]) per target
    module in `target_names` order (peft's layout, e.g. read from saved adapters). On exit put back the
    original modules, requires_grad flags and train/eval mode."""
    grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    multi = MultiAdapter(model, list(cfgs), target_names(model, cfgs[0]), weights)
    del weights  # copied into the adapters' own buffer
    for p in model.parameters():
        p.requires_grad_(False)
    multi._install()
    try:
        yield multi
    finally:
        multi._uninstall()
        _restore_grad_flags(model, grad_flags)
        model.train(was_training)


def _restore_grad_flags(model: nn.Module, flags: dict[str, bool]) -> None:
    for n, p in model.named_parameters():
        if n in flags:
            p.requires_grad_(flags[n])


def adapt_and_evaluate_many(
    model,
    tokenizer,
    domain,
    context: Any,
    plans: Sequence[UpdatePlan],
    cfgs: Sequence[InnerConfig],
    save_to: Sequence[Path | None] | None = None,
    on_step: Callable[[int, int, list[float | None]], None] | None = None,
) -> list:
    """`seal.episode.adapt_and_evaluate` for K plans of one context at once: train K fresh adapters
    together, score them (batched where the domain allows, see `evaluator_for`), optionally save
    candidate k to save_to[k]; the adapters are removed before returning, whatever happens."""
    from seal.episode import Outcome

    with batched_adapters(model, cfgs) as multi:
        reports = multi.train(tokenizer, plans, on_step=on_step)
        scores = evaluator_for(domain)(multi, tokenizer, context)
        for k, path in enumerate(save_to or []):
            if path is not None:
                multi.save_adapter(k, path)
    return [Outcome(score, report) for score, report in zip(scores, reports)]


def train_adapter(model, tokenizer, plan: UpdatePlan, cfg: InnerConfig, save_to: Path,
                  on_step: Callable[[int, int, float], None] | None = None) -> TrainReport:
    """Train one fresh LoRA adapter on `plan` and save it (PEFT format), leaving the model as it was.

    Through this batched loop with K = 1 where it can run (`batchable`): the adapter peft's loop would
    train, to fp32 tolerance, from packed rows (on Qwen, one thread: 75 s against peft's 180 s on the
    benchmark passage); through `seal.inner.lora` otherwise.
    """
    if not batchable(cfg):
        with fresh_update(model, cfg) as updated:
            report = train(updated, tokenizer, plan, cfg, on_step=on_step)
            save_adapter(updated, save_to)
        return report
    with batched_adapters(model, [cfg]) as multi:
        [report] = multi.train(tokenizer, [plan], on_step=on_step and (
            lambda step, total, losses: on_step(step, total, losses[0])))
        multi.save_adapter(0, save_to)
    return report
