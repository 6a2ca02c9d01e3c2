"""Training K candidate adapters together: the multi-candidate AdamW, micro-batches, the step loop.

Equivalence with K separate runs of `seal.inner.lora.train`, which the tests check to fp32 tolerance:

- data order: candidate k shuffles its rows like `lora.train`: `torch.Generator().manual_seed(seed)`,
  one `randperm` per epoch, `batch_size` rows per step.
- loss: each step the sum over active candidates of that candidate's mean token loss, so the gradient
  of adapter k is its separate run's gradient.
- optimiser: AdamW with torch's exact update rule (the `_foreach` path of `torch.optim.AdamW`), one
  learning rate (set each step from the candidate's `lr_schedule`, as `lora.train`'s LambdaLR does)
  and one step count per candidate. A candidate whose plan is done (fewer epochs or
  fewer sequences) stops contributing rows and stops being updated: its moments do not drift.

Speed (see benchmarks/inner_loop.py): each candidate's rows of a step are packed into longer sequences
(`seal.inner.packing`), which are sorted by length and cut into micro-batches that keep padding low
(gradients accumulate; the result is the same sum; the
loss is one weighted cross-entropy per micro-batch, 1 / labelled tokens of the row's candidate per
token, rather than one cross-entropy per candidate over its slice of the logits, each of whose backward
would write a zero-filled copy of the whole logits).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

from seal.domains.base import UpdateError, UpdatePlan
from seal.inner.lora import TrainReport, lr_factor, prepare, train_precision
from seal.inner.loss import IGNORE, states_at
from seal.inner.packing import collate_packed, pack_rows, packing_supported

if TYPE_CHECKING:
    from seal.inner.batched import MultiAdapter

# A micro-batch costs about this many padded tokens of work on top of its tokens (per-forward overhead
# and the lower matmul efficiency of small batches); used when cutting a step's rows into micro-batches.
MICROBATCH_OVERHEAD_TOKENS = 96
# ... and is kept to at most this many padded tokens on the CPU: on the 2-core machine a forward + backward of Qwen-0.5B
# with its LoRA cost 29 ms a token at 128 tokens, 33 at 256-512 and 39 at 1,024 (activations that fall
# out of the caches make every elementwise op memory-bound), so K candidates batched into 600-token
# micro-batches trained slower per candidate than one alone.
MICROBATCH_TOKENS = 256
BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as in lora.train
EPS = 1e-8


class MultiAdamW:
    """AdamW over K stacked candidates: rows of `params` [K, P], each with its own lr and step count.

    The update is torch.optim.AdamW's (default betas and eps), in the order of its `_foreach`
    implementation; `step(active)` updates only the candidates in `active`: the others keep their
    parameters, moments and step counts.
    """

    def __init__(self, params: torch.Tensor, lrs: Sequence[float], weight_decays: Sequence[float],
                 betas: tuple[float, float] = BETAS, eps: float = EPS):
        self.params = params
        self.grad = torch.zeros_like(params)
        self.exp_avg = torch.zeros_like(params)
        self.exp_avg_sq = torch.zeros_like(params)
        self.lrs, self.wds = list(lrs), list(weight_decays)
        self.steps = [0] * params.shape[0]
        self.betas, self.eps = betas, eps

    @torch.no_grad()
    def step(self, active: Sequence[int]) -> None:
        active = list(active)
        if not active:
            return
        beta1, beta2 = self.betas
        for k in active:
            self.steps[k] += 1
        p = [self.params[k] for k in active]
        g = [self.grad[k] for k in active]
        m = [self.exp_avg[k] for k in active]
        v = [self.exp_avg_sq[k] for k in active]
        decay = [1 - self.lrs[k] * self.wds[k] for k in active]
        if any(d != 1 for d in decay):
            torch._foreach_mul_(p, decay)
        torch._foreach_lerp_(m, g, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, 1 - beta2)
        bias1 = [1 - beta1 ** self.steps[k] for k in active]
        bias2_sqrt = [(1 - beta2 ** self.steps[k]) ** 0.5 for k in active]
        step_size = [-(self.lrs[k] / b) for k, b in zip(active, bias1)]
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(p, m, denom, step_size)

    def zero_grad(self) -> None:
        self.grad.zero_()


def plan_microbatches(lengths: Sequence[int], overhead: int | None = None,
                      max_tokens: int | None = None) -> list[list[int]]:
    """Cut rows into micro-batches minimising padded tokens + `overhead` per micro-batch, each of at most
    `max_tokens` padded tokens (or a single row).

    Rows are sorted by length (longest first) and split into contiguous runs by dynamic programming;
    returns lists of row indices.
    """
    overhead = MICROBATCH_OVERHEAD_TOKENS if overhead is None else overhead
    max_tokens = MICROBATCH_TOKENS if max_tokens is None else max_tokens
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # rows i..j-1 in one micro-batch, padded to lengths[order[i]]
            padded = (j - i) * lengths[order[i]]
            if padded > max_tokens and j - i > 1:
                continue
            cost = best[i] + padded + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


@dataclass
class TrainStats:
    """What the training passes forwarded, for throughput figures (see benchmarks/inner_loop.py)."""

    microbatches: list[list[int]] = field(default_factory=list)  # row lengths of every micro-batch
    labelled: int = 0  # tokens carrying loss

    @property
    def tokens(self) -> int:
        return sum(sum(mb) for mb in self.microbatches)

    @property
    def padded_tokens(self) -> int:
        return sum(len(mb) * max(mb) for mb in self.microbatches)


def train_candidates(
    multi: MultiAdapter,
    tokenizer,
    plans: Sequence[UpdatePlan],
    on_step: Callable[[int, int, list[float | None]], None] | None = None,
) -> list[TrainReport]:
    """Train candidate k on plans[k] (AdamW; a plan may override lr and epochs), all together.

    `on_step(step, total_steps, losses)` gets one loss per candidate, None for finished ones.
    Every report's `seconds` is the wall time of the whole batched run.
    """
    if len(plans) != multi.k:
        raise ValueError(f"{len(plans)} plans for {multi.k} candidates")
    cands = []
    for k, (plan, cfg) in enumerate(zip(plans, multi.cfgs)):
        try:
            lr, epochs, rows = prepare(tokenizer, plan, cfg)
        except UpdateError as e:
            raise UpdateError(f"candidate {k}: {e}") from None
        per_epoch = math.ceil(len(rows) / cfg.batch_size)
        cands.append(dict(rows=rows, lr=lr, epochs=epochs, per_epoch=per_epoch, total=per_epoch * epochs,
                          gen=torch.Generator().manual_seed(cfg.seed), order=None, bs=cfg.batch_size))
    reports = [TrainReport(len(c["rows"]), 0, c["epochs"], c["lr"],
                           sum(len(ids) for ids, _ in c["rows"]) * c["epochs"], 0.0) for c in cands]
    # a fresh optimiser per call, like lora.train (a second call continues from the current weights)
    optimizer = MultiAdamW(multi.flat, [c["lr"] for c in cands], [cfg.weight_decay for cfg in multi.cfgs])
    grad = optimizer.grad  # each layer's .grad is a view of it: one zero_(), one AdamW pass
    for layer, (a0, b0, end) in zip(multi.layers, multi._slices):
        layer.lora_A.grad = grad[:, a0:b0].view(layer.lora_A.shape)
        layer.lora_B.grad = grad[:, b0:end].view(layer.lora_B.shape)
    total = max(c["total"] for c in cands)
    start = time.perf_counter()
    was_training = multi.model.training
    multi.model.train()
    with warnings.catch_warnings():
        # .grad are views of one [K, P] buffer (one AdamW pass for all layers); autograd adds into
        # them in place and warns that such strided grads break DDP's layout contract: harmless here.
        warnings.filterwarnings("ignore", message=".*gradient layout contract.*")
        try:
            _train_loop(multi, optimizer, tokenizer, cands, reports, total, on_step)
        finally:
            multi.model.train(was_training)
            for layer in multi.layers:
                layer.lora_A.grad = layer.lora_B.grad = None
            multi.optimizer = None  # moments and grads: 3 x K x P floats, not needed for inference
    seconds = time.perf_counter() - start
    for report in reports:
        report.seconds = seconds
    return reports

def _train_loop(multi: MultiAdapter, optimizer: MultiAdamW, tokenizer, cands, reports, total, on_step) -> None:
    pad_id, device = tokenizer.pad_token_id, multi.flat.device
    with multi.rows([0]):
        packing = packing_supported(multi.model)
    for step in range(total):
        active = [k for k, c in enumerate(cands) if step < c["total"]]
        batch_rows: list[tuple[int, list[int], list[int]]] = []
        for k in active:
            c = cands[k]
            b = step % c["per_epoch"]
            if b == 0:
                c["order"] = torch.randperm(len(c["rows"]), generator=c["gen"]).tolist()
            batch_rows += [(k, *c["rows"][i]) for i in c["order"][b * c["bs"] : (b + 1) * c["bs"]]]
        losses = _train_step(multi, optimizer, batch_rows, active, pad_id, device, packing)
        for k in active:
            if not math.isfinite(losses[k]):
                raise UpdateError(f"candidate {k}: non-finite training loss at step {reports[k].steps}")
            optimizer.lrs[k] = cands[k]["lr"] * lr_factor(multi.cfgs[k], step, cands[k]["total"])
        optimizer.step(active)
        for k in active:
            reports[k].steps += 1
            reports[k].losses.append(losses[k])
        if on_step:
            on_step(step + 1, total, [losses[k] if k in active else None for k in range(multi.k)])


def _train_step(multi: MultiAdapter, optimizer: MultiAdamW, batch_rows, active, pad_id, device,
                packing: bool) -> dict[int, float]:
    """Forward/backward of one step: sum over candidates of their mean token loss."""
    optimizer.zero_grad()
    labelled = {k: 0 for k in active}
    for k, _, labels in batch_rows:
        labelled[k] += sum(1 for label in labels[1:] if label != IGNORE)
    sums = {k: 0.0 for k in active}
    packed = pack_rows(batch_rows, MICROBATCH_TOKENS if packing else 0)  # a packed row fills a CPU micro-batch
    # the cap is a CPU figure; elsewhere a micro-batch takes as many rows as padding allows, as before
    max_tokens = MICROBATCH_TOKENS if device.type == "cpu" else math.inf
    for group in plan_microbatches([len(p.ids) for p in packed], max_tokens=max_tokens):
        mb = sorted((packed[i] for i in group), key=lambda p: p.candidate)  # a candidate's rows side by side
        inputs, targets = collate_packed(mb, pad_id, device)
        adapters = [p.candidate for p in mb]
        multi.stats.microbatches.append([len(p.ids) for p in mb])
        # One weighted cross-entropy over the micro-batch's labelled tokens (weight 1 / labelled tokens of
        # the row's candidate): the sum of every candidate's mean token loss, with no per-candidate logits
        # slices (each of whose backward would write a zero-filled copy of the whole logits).
        rows, cols = (targets != IGNORE).nonzero(as_tuple=True)
        with multi.rows(adapters), train_precision(multi.cfgs[0], device):
            logits = labelled_logits(multi.model, inputs, rows, cols)
        token_losses = nn.functional.cross_entropy(logits.float(), targets[rows, cols], reduction="none")
        weights = torch.tensor([1.0 / labelled[k] for k in adapters], device=device)
        row_losses = torch.zeros(len(mb), device=device).index_add(0, rows, token_losses) * weights
        loss = row_losses.sum()
        for k, value in zip(adapters, row_losses.tolist()):
            sums[k] += value
        multi.stats.labelled += len(rows)
        loss.backward()
    return sums


def labelled_logits(model: nn.Module, inputs: dict, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The logits at positions (rows[i], cols[i]) only, [n, vocab] (`states_at`): the LM head (a fifth of SmolLM2's
    FLOPs) and the softmax then skip padding and unlabelled prompts (most of an ARC row)."""
    states, head = states_at(model, inputs, rows, cols)
    return head(states)

