"""The layers of K LoRA adapters over one frozen base, and their initialisation.

Every target linear layer is replaced, while the adapters are installed, by a `MultiLoraLinear` holding
stacked A [K, in, r] and B [K, r, out]; each batch row goes through the adapter of its candidate while
the base matmul is shared by all rows. Per row, the LoRA term gathers its adapter (A[idx], B[idx]) and
runs two `bmm`s; when every adapter has the same number of rows (evaluation), the rows are viewed as
[K, rows x tokens] and no gather is needed. Both beat a Python loop over adapters on this CPU.

Initialisation: candidate k starts from exactly the adapter `fresh_adapter(model, cfg_k)` creates
(peft's init: per target module in `named_modules` order, A kaiming-uniform and B zero, drawn after
`torch.manual_seed(cfg_k.seed)`). The draws are replayed directly (peft's wrapping costs ~1 s a
candidate on the 135M model, the draws ~0.1 s); the replay is checked against the real peft path once
per process and model layout, and a mismatch (another peft version) falls back to peft itself.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
from torch import nn

from seal.config import InnerConfig
from seal.domains.base import UpdateError
from seal.inner.lora import fresh_adapter


class Routing:
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

    def __init__(self, base: nn.Linear, A: torch.Tensor, B: torch.Tensor, scaling: float, routing: Routing):
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
        if x.dtype == self.lora_A.dtype:
            return self._add_lora(x, out)
        # a half-precision base with fp32 adapters (as peft keeps them): the adapters see fp32 inputs
        delta = self._add_lora(x.to(self.lora_A.dtype), torch.zeros_like(out, dtype=self.lora_A.dtype))
        return out + delta.to(out.dtype)

    def _add_lora(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out + scaling * (x @ A[k]) @ B[k], row by row as the routing says."""
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


def adapter_dtype(base: torch.dtype) -> torch.dtype:
    """The adapters' dtype over a base of dtype `base`: float32 over half precision (bf16 / fp16 bases
    train their LoRA in fp32, as peft's `autocast_adapter_dtype` does), the base's own otherwise."""
    return torch.float32 if base in (torch.bfloat16, torch.float16) else base


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
        dtype = adapter_dtype(base.weight.dtype)
        out.append((a.to(base.weight.device, dtype), torch.zeros_like(b, device=base.weight.device, dtype=dtype)))
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
