"""K candidate self-edits of one base model, trained and evaluated together in shared passes.

SEAL's cost is its reward: every candidate self-edit needs its own LoRA finetune and evaluation. Here
K independent LoRA adapters sit over one frozen base model. Every target linear layer is replaced, for
the duration of a `with batched_adapters(...)` block, by a `MultiLoraLinear` holding stacked
A [K, in, r] and B [K, r, out]; each batch row goes through the adapter of its candidate while the
base matmul is shared by all rows. On exit the original modules are put back (the very same objects)
and the adapters are freed, so memory stays flat over any number of rounds.

    with batched_adapters(model, [cfg_0, cfg_1, cfg_2]) as multi:
        reports = multi.train(tokenizer, [plan_0, plan_1, plan_2])
        answers = multi.generate(tokenizer, [prompts_0, prompts_1, prompts_2], max_new_tokens=48)
        loglik = multi.gold_loglik(tokenizer, [[(prompt, gold), ...], ...])
        multi.save_adapter(1, path)          # PEFT format, loads with seal.inner.lora.load_adapter

Equivalence with K separate runs of `seal.inner.lora` (`fresh_adapter` + `train`), which the tests
check to fp32 tolerance:

- initialisation: candidate k starts from exactly the adapter `fresh_adapter(model, cfg_k)` creates
  (peft's init: per target module in `named_modules` order, A kaiming-uniform and B zero, drawn after
  `torch.manual_seed(cfg_k.seed)`). The draws are replayed directly (peft's wrapping costs ~1 s a
  candidate on the 135M model, the draws ~0.1 s); the replay is checked against the real peft path
  once per process and model layout, and a mismatch (another peft version) falls back to peft itself.
- data order: candidate k shuffles its rows like `lora.train`: `torch.Generator().manual_seed(seed)`,
  one `randperm` per epoch, `batch_size` rows per step.
- loss: each step the sum over active candidates of that candidate's mean token loss, so the gradient
  of adapter k is its separate run's gradient.
- optimiser: AdamW with torch's exact update rule (the `_foreach` path of `torch.optim.AdamW`), one
  learning rate (set each step from the candidate's `lr_schedule`, as `lora.train`'s LambdaLR does)
  and one step count per candidate. A candidate whose plan is done (fewer epochs or
  fewer sequences) stops contributing rows and stops being updated: its moments do not drift.

Speed (see benchmarks/inner_loop.py): the rows of all candidates in one step are sorted by length
and cut into micro-batches that keep padding low (gradients accumulate; the result is the same sum;
the loss is one weighted cross-entropy per micro-batch, 1 / labelled tokens of the row's candidate
per token, rather than `token_loss` per candidate, whose logits slices cost a zero-filled copy of the
logits each in backward), and the answers to the evaluation questions are decoded for all K
candidates in one batched `generate` (decoding is memory-bound: K x the rows cost about one).
Per row, the LoRA term gathers its adapter (A[idx], B[idx]) and runs two `bmm`s; when every adapter
has the same number of rows (evaluation), the rows are viewed as [K, rows x tokens] and no gather is
needed. Both beat a Python loop over adapters on this CPU.

Limits: dropout must be 0 (the default; the batched path would otherwise need per-candidate dropout
streams that could not match separate runs anyway); only `nn.Linear` targets; all candidates share
rank, alpha and target modules (lr, epochs, seed, batch size, max length and weight decay may differ).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from seal.config import InnerConfig
from seal.domains.base import Score, UpdateError, UpdatePlan
from seal.inner.lora import IGNORE, TrainReport, collate, fresh_adapter, lora_config, lr_factor, prepare

# A micro-batch costs about this many padded tokens of work on top of its tokens (per-forward overhead
# and the lower matmul efficiency of small batches); used when cutting a step's rows into micro-batches.
MICROBATCH_OVERHEAD_TOKENS = 96
BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as in lora.train
EPS = 1e-8


# --------------------------------------------------------------------------------------------------
# Layers


class _Routing:
    """Which adapter each batch row uses; shared by every MultiLoraLinear of one model.

    `idx` [rows] holds the adapter of each row. When the rows are grouped by adapter with the same
    number of rows per adapter (the usual case in evaluation: every candidate answers the same
    questions), `groups` holds the adapters in row order and each layer runs two plain batched
    matmuls over a [groups, rows_per_group * tokens, in] view, without gathering weights per row.
    """

    def __init__(self) -> None:
        self.idx: torch.Tensor | None = None
        self.groups: torch.Tensor | None = None
        self.fixed: int | None = None  # every row uses this adapter, whatever the batch size
        self.all_groups = False  # groups == 0..K-1: the stacked weights are used as they are

    def set(self, adapters: Sequence[int] | torch.Tensor, device, k: int) -> None:
        idx = torch.as_tensor(adapters, dtype=torch.long).flatten()
        self.fixed, self.groups, self.all_groups = None, None, False
        if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < k):
            raise IndexError(f"adapter indices must lie in 0..{k - 1}")
        values = idx.tolist()
        runs = [values[0]] if values else []
        for a, b in zip(values, values[1:]):
            if a != b:
                runs.append(b)
        if values and len(set(runs)) == len(runs) and len(values) % len(runs) == 0:
            n = len(values) // len(runs)
            if all(values[i * n : (i + 1) * n] == [runs[i]] * n for i in range(len(runs))):
                self.groups = torch.tensor(runs, dtype=torch.long, device=device)
                self.all_groups = runs == list(range(k))
        self.idx = idx.to(device)

    def clear(self) -> None:
        self.idx = self.groups = self.fixed = None
        self.all_groups = False


class MultiLoraLinear(nn.Module):
    """A frozen linear layer plus K LoRA adapters; row b of the input goes through adapter idx[b].

    y = base(x) + scaling * (x @ A[k]) @ B[k]. A: [K, in, r], B: [K, r, out] (peft's lora_A.weight
    and lora_B.weight, transposed and stacked). They are views into one flat [K, P] buffer owned by
    `MultiAdapter`, which is what the optimiser updates.
    """

    def __init__(self, base: nn.Linear, A: torch.Tensor, B: torch.Tensor, scaling: float, routing: _Routing):
        super().__init__()
        self.base_layer = base
        self.lora_A = nn.Parameter(A)
        self.lora_B = nn.Parameter(B)
        self.scaling = scaling
        self.routing = routing
        self.in_features, self.out_features = base.in_features, base.out_features

    @property
    def weight(self) -> torch.Tensor:  # some model code reads proj.weight (dtype, device)
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        rt = self.routing
        shape = out.shape
        rows = shape[0] if x.dim() > 1 else 1
        if rt.fixed is not None:
            k = rt.fixed
            h = x.reshape(1, -1, self.in_features) @ self.lora_A[k : k + 1]
            return torch.baddbmm(out.reshape(1, -1, self.out_features), h, self.lora_B[k : k + 1],
                                 alpha=self.scaling).view(shape)
        if rt.idx is None:
            raise RuntimeError("no adapter chosen for the batch rows: use MultiAdapter.rows(...) around the forward")
        if rt.idx.numel() != rows:
            raise RuntimeError(f"the batch has {rows} rows but {rt.idx.numel()} adapters were assigned")
        if rt.groups is not None:
            g = rt.groups.numel()
            A = self.lora_A if rt.all_groups else self.lora_A[rt.groups]
            B = self.lora_B if rt.all_groups else self.lora_B[rt.groups]
            h = torch.bmm(x.reshape(g, -1, self.in_features), A)
            return torch.baddbmm(out.reshape(g, -1, self.out_features), h, B, alpha=self.scaling).view(shape)
        h = torch.bmm(x.reshape(rows, -1, self.in_features), self.lora_A[rt.idx])
        return torch.baddbmm(out.reshape(rows, -1, self.out_features), h, self.lora_B[rt.idx],
                             alpha=self.scaling).view(shape)


# --------------------------------------------------------------------------------------------------
# Initialisation: exactly what seal.inner.lora.fresh_adapter(model, cfg) starts from


def target_names(model: nn.Module, cfg: InnerConfig) -> list[str]:
    """Names of the modules peft's LoRA targets for `cfg`, in peft's (named_modules) order."""
    targets = list(cfg.target_modules)
    names = [n for n, _ in model.named_modules() if n and any(n == t or n.endswith("." + t) for t in targets)]
    if not names:
        raise UpdateError(f"no module of the model matches target_modules={targets}")
    for n in names:
        module = model.get_submodule(n)
        if type(module) is not nn.Linear:
            raise UpdateError(f"batched LoRA supports nn.Linear targets only; {n} is {type(module).__name__}")
    return names


def _peft_init(model: nn.Module, cfg: InnerConfig, names: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(lora_A.weight [r, in], lora_B.weight [out, r]) per target, through peft itself."""
    with fresh_adapter(model, cfg) as peft_model:
        layers = {n.removeprefix("base_model.model."): m for n, m in peft_model.named_modules()
                  if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})}
        return [(layers[n].lora_A["default"].weight.detach().clone(),
                 layers[n].lora_B["default"].weight.detach().clone()) for n in names]


def _replayed_init(model: nn.Module, cfg: InnerConfig, names: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same draws as peft's LoRA init (nn.Linear A, nn.Linear B, kaiming A again, B zeros), replayed."""
    gen = torch.Generator().manual_seed(cfg.seed)
    out = []
    for n in names:
        base = model.get_submodule(n)
        a = torch.empty(cfg.rank, base.in_features)
        b = torch.empty(base.out_features, cfg.rank)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)  # nn.Linear(in, r) construction
        nn.init.kaiming_uniform_(b, a=math.sqrt(5), generator=gen)  # nn.Linear(r, out) construction
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)  # peft's reset_lora_parameters
        out.append((a.to(base.weight.device, base.weight.dtype),
                    torch.zeros_like(b, device=base.weight.device, dtype=base.weight.dtype)))
    return out


_REPLAY_CHECKED: dict[tuple, bool] = {}


def initial_adapter(model: nn.Module, cfg: InnerConfig, names: list[str], how: str = "auto"):
    """Candidate init equal to fresh_adapter's. how: 'peft' (always go through peft), 'replay', or
    'auto' (replay, verified against peft once per process and model layout; peft if they differ)."""
    if how == "peft":
        return _peft_init(model, cfg, names)
    if how == "replay":
        return _replayed_init(model, cfg, names)
    import peft

    layout = tuple((n, model.get_submodule(n).in_features, model.get_submodule(n).out_features) for n in names)
    key = (type(model).__qualname__, layout, cfg.rank, peft.__version__, torch.__version__)
    if key not in _REPLAY_CHECKED:
        reference = _peft_init(model, cfg, names)
        replay = _replayed_init(model, cfg, names)
        same = all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(reference, replay))
        if not same:
            warnings.warn("replayed LoRA init differs from peft's; using peft's (slower) path", stacklevel=2)
        _REPLAY_CHECKED[key] = same
        return reference
    return _replayed_init(model, cfg, names) if _REPLAY_CHECKED[key] else _peft_init(model, cfg, names)


# --------------------------------------------------------------------------------------------------
# Optimiser


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


# --------------------------------------------------------------------------------------------------
# Micro-batches


def plan_microbatches(lengths: Sequence[int], overhead: int | None = None) -> list[list[int]]:
    """Cut rows into micro-batches minimising padded tokens + `overhead` per micro-batch.

    Rows are sorted by length (longest first) and split into contiguous runs by dynamic programming;
    returns lists of row indices.
    """
    overhead = MICROBATCH_OVERHEAD_TOKENS if overhead is None else overhead
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # rows i..j-1 in one micro-batch, padded to lengths[order[i]]
            cost = best[i] + (j - i) * lengths[order[i]] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


# --------------------------------------------------------------------------------------------------
# The K-adapter model


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


class MultiAdapter:
    """K LoRA adapters installed in `model`; made by `batched_adapters`, valid inside its block."""

    def __init__(self, model: nn.Module, cfgs: list[InnerConfig], names: list[str],
                 inits: list[list[tuple[torch.Tensor, torch.Tensor]]]):
        self.model, self.cfgs, self.names = model, cfgs, names
        self.k = len(cfgs)
        self.scaling = cfgs[0].alpha / cfgs[0].rank
        self.routing = _Routing()
        self.stats = TrainStats()
        base = [model.get_submodule(n) for n in names]
        r = cfgs[0].rank
        sizes = [(m.in_features * r, r * m.out_features) for m in base]
        total = sum(a + b for a, b in sizes)
        ref = base[0].weight
        self.flat = torch.empty(self.k, total, device=ref.device, dtype=ref.dtype)
        self.optimizer: MultiAdamW | None = None
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
        self.layers, self.flat, self.optimizer = [], None, None

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

    # ---- training

    def train(
        self,
        tokenizer,
        plans: Sequence[UpdatePlan],
        on_step: Callable[[int, int, list[float | None]], None] | None = None,
    ) -> list[TrainReport]:
        """Train candidate k on plans[k] (AdamW; a plan may override lr and epochs), all together.

        `on_step(step, total_steps, losses)` gets one loss per candidate, None for finished ones.
        Every report's `seconds` is the wall time of the whole batched run.
        """
        if len(plans) != self.k:
            raise ValueError(f"{len(plans)} plans for {self.k} candidates")
        cands = []
        for k, (plan, cfg) in enumerate(zip(plans, self.cfgs)):
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
        self.optimizer = MultiAdamW(self.flat, [c["lr"] for c in cands], [cfg.weight_decay for cfg in self.cfgs])
        grad = self.optimizer.grad  # each layer's .grad is a view of it: one zero_(), one AdamW pass
        for layer, (a0, b0, end) in zip(self.layers, self._slices):
            layer.lora_A.grad = grad[:, a0:b0].view(layer.lora_A.shape)
            layer.lora_B.grad = grad[:, b0:end].view(layer.lora_B.shape)
        total = max(c["total"] for c in cands)
        start = time.perf_counter()
        was_training = self.model.training
        self.model.train()
        with warnings.catch_warnings():
            # .grad are views of one [K, P] buffer (one AdamW pass for all layers); autograd adds into
            # them in place and warns that such strided grads break DDP's layout contract: harmless here.
            warnings.filterwarnings("ignore", message=".*gradient layout contract.*")
            try:
                self._train_loop(tokenizer, cands, reports, total, on_step)
            finally:
                self.model.train(was_training)
                for layer in self.layers:
                    layer.lora_A.grad = layer.lora_B.grad = None
                self.optimizer = None  # moments and grads: 3 x K x P floats, not needed for inference
        seconds = time.perf_counter() - start
        for report in reports:
            report.seconds = seconds
        return reports

    def _train_loop(self, tokenizer, cands, reports, total, on_step) -> None:
        pad_id, device = tokenizer.pad_token_id, self.flat.device
        for step in range(total):
            active = [k for k, c in enumerate(cands) if step < c["total"]]
            batch_rows: list[tuple[int, list[int], list[int]]] = []
            for k in active:
                c = cands[k]
                b = step % c["per_epoch"]
                if b == 0:
                    c["order"] = torch.randperm(len(c["rows"]), generator=c["gen"]).tolist()
                batch_rows += [(k, *c["rows"][i]) for i in c["order"][b * c["bs"] : (b + 1) * c["bs"]]]
            losses = self._train_step(batch_rows, active, pad_id, device)
            for k in active:
                if not math.isfinite(losses[k]):
                    raise UpdateError(f"candidate {k}: non-finite training loss at step {reports[k].steps}")
                self.optimizer.lrs[k] = cands[k]["lr"] * lr_factor(self.cfgs[k], step, cands[k]["total"])
            self.optimizer.step(active)
            for k in active:
                reports[k].steps += 1
                reports[k].losses.append(losses[k])
            if on_step:
                on_step(step + 1, total, [losses[k] if k in active else None for k in range(self.k)])

    def _train_step(self, batch_rows, active, pad_id, device) -> dict[int, float]:
        """Forward/backward of one step: sum over candidates of their mean token loss."""
        self.optimizer.zero_grad()
        labelled = {k: 0 for k in active}
        for k, _, labels in batch_rows:
            labelled[k] += sum(1 for label in labels[1:] if label != IGNORE)
        sums = {k: 0.0 for k in active}
        for group in plan_microbatches([len(ids) for _, ids, _ in batch_rows]):
            group = sorted(group, key=lambda i: batch_rows[i][0])  # rows of a candidate side by side
            mb = [batch_rows[i] for i in group]
            batch = collate([(ids, labels) for _, ids, labels in mb], pad_id, device)
            labels = batch.pop("labels")
            adapters = [k for k, _, _ in mb]
            self.stats.microbatches.append([len(ids) for _, ids, _ in mb])
            with self.rows(adapters):
                logits = self.model(**batch, use_cache=False).logits
            # token_loss per candidate would slice the logits once per candidate, and every slice's
            # backward writes a zero-filled copy of the whole logits; one weighted cross-entropy over
            # the micro-batch, labels shifted instead of logits, is the same sum without copies.
            targets = torch.full_like(labels, IGNORE)
            targets[:, :-1] = labels[:, 1:]
            token_losses = nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="none"
            ).view(labels.shape)
            weights = torch.tensor([1.0 / labelled[k] for k in adapters], device=device)
            row_losses = token_losses.sum(1) * weights  # candidate k: sum of its mean-token-loss shares
            loss = row_losses.sum()
            for k, value in zip(adapters, row_losses.tolist()):
                sums[k] += value
            self.stats.labelled += int((targets != IGNORE).sum())
            loss.backward()
        return sums

    # ---- inference

    @torch.no_grad()
    def forward(self, adapters: Sequence[int] | torch.Tensor, **inputs):
        """model(**inputs) with batch row b going through adapter adapters[b]."""
        with self.rows(adapters):
            return self.model(**inputs)

    def generate(self, tokenizer, prompts: Sequence[Sequence[str]], *, max_new_tokens: int,
                 batch_size: int | None = None) -> list[list[str]]:
        """Greedy completions of prompts[k] by candidate k, in one batched pass (or in batches of
        `batch_size` rows); prompts are already formatted (seal.generation.chat_prompt)."""
        from seal.generation import generate

        if len(prompts) != self.k:
            raise ValueError(f"{len(prompts)} prompt lists for {self.k} candidates")
        jobs = [(k, p) for k, ps in enumerate(prompts) for p in ps]
        answers: list[str] = []
        size = batch_size or max(len(jobs), 1)
        self.model.eval()
        for start in range(0, len(jobs), size):
            chunk = jobs[start : start + size]
            with self.rows([k for k, _ in chunk]):
                outs = generate(self.model, tokenizer, [p for _, p in chunk], max_new_tokens=max_new_tokens,
                                batch_size=len(chunk))
            answers += [o[0] for o in outs]
        result, i = [], 0
        for ps in prompts:
            result.append(answers[i : i + len(ps)])
            i += len(ps)
        return result

    @torch.no_grad()
    def gold_loglik(self, tokenizer, pairs: Sequence[Sequence[tuple[str, str]]],
                    batch_size: int = 32) -> list[list[float]]:
        """log p(answer | prompt) summed over the answer's tokens, per pair, for candidate k on pairs[k].

        A cheap score (one forward pass, no decoding): prompts are formatted text, answers are
        tokenised on their own and appended (no EOS), like `tokenize_examples` builds training rows.
        """
        if len(pairs) != self.k:
            raise ValueError(f"{len(pairs)} pair lists for {self.k} candidates")
        jobs = []
        for k, ps in enumerate(pairs):
            for prompt, answer in ps:
                p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
                a = tokenizer(answer, add_special_tokens=False)["input_ids"]
                if not a:
                    raise ValueError(f"empty answer for prompt {prompt[:60]!r}")
                jobs.append((k, p + a, [IGNORE] * len(p) + a))
        self.model.eval()
        scores: list[float] = []
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            batch = collate([(ids, labels) for _, ids, labels in chunk], tokenizer.pad_token_id, self.flat.device)
            labels = batch.pop("labels")
            logits = self.forward([k for k, _, _ in chunk], **batch, use_cache=False).logits
            scores += sequence_logprobs(logits, labels).tolist()
        result, i = [], 0
        for ps in pairs:
            result.append(scores[i : i + len(ps)])
            i += len(ps)
        return result


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(label) over labelled positions, per row (next-token alignment, as token_loss)."""
    targets = labels[:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != IGNORE)).sum(-1)


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
        if (cfg.rank, cfg.alpha, list(cfg.target_modules)) != (first.rank, first.alpha, list(first.target_modules)):
            raise UpdateError(f"candidate {k}: rank, alpha and target_modules must be the same for all candidates")
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


# --------------------------------------------------------------------------------------------------
# Episodes: K plans of one context, trained and scored together


def knowledge_evaluate_many(domain, multi: MultiAdapter, tokenizer, passage) -> list[Score]:
    """KnowledgeDomain.evaluate for all K candidates at once: the same closed-book prompts and greedy
    decoding (domain.eval.max_new_tokens), one batched generate over K x questions, graded by
    `domain.score`."""
    from seal.domains.knowledge.prompts import answer_prompt
    from seal.generation import chat_prompt

    if not passage.questions:
        raise ValueError(f"passage {passage.title!r} has no questions to evaluate on")
    prompts = [chat_prompt(tokenizer, answer_prompt(passage.title, q.question)) for q in passage.questions]
    answers = multi.generate(tokenizer, [prompts] * multi.k, max_new_tokens=domain.eval.max_new_tokens)
    return [domain.score(passage, per_candidate) for per_candidate in answers]


def evaluator_for(domain) -> Callable[[MultiAdapter, Any, Any], list[Score]]:
    """How to score all K candidates on a context: the domain's own `evaluate_many(multi, tokenizer,
    context)` if it has one, the batched knowledge evaluation for KnowledgeDomain, else
    `domain.evaluate` once per candidate (training is still batched)."""
    if hasattr(domain, "evaluate_many"):
        return domain.evaluate_many
    from seal.domains.knowledge.domain import KnowledgeDomain

    if isinstance(domain, KnowledgeDomain):
        return lambda multi, tokenizer, context: knowledge_evaluate_many(domain, multi, tokenizer, context)

    def one_by_one(multi: MultiAdapter, tokenizer, context) -> list[Score]:
        scores = []
        for k in range(multi.k):
            with multi.only(k) as model:
                scores.append(domain.evaluate(model, tokenizer, context))
        return scores

    return one_by_one


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
