"""Packing a training step's rows into fewer, longer sequences, so that micro-batches carry no padding.

A micro-batch of rows of different lengths pads every row to the longest: on the benchmark passage at
K = 4 that was a fifth more tokens through every linear layer (benchmarks/inner_loop.py). Instead the
rows of one candidate are concatenated into sequences of up to a capacity (the CPU micro-batch size,
`batched_train.MICROBATCH_TOKENS`), with position ids
restarting at 0 at each row and no attention mask: transformers reads such position ids as packed
sequences and keeps each row's attention inside the row (`masking_utils.find_packed_sequence_indices`).
The padding left between packed sequences of a micro-batch gets positions of its own, so it is one more
sequence nobody attends to. What packing costs is attention over the packed length rather than each
row's, small next to the linear layers at a few hundred tokens; a row longer than the capacity stays
alone. A model that does not honour packed position ids (checked once per class, attention
implementation and dtype, by comparing a packed forward with separate ones) is trained on padded rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from seal.inner.loss import IGNORE

@dataclass
class PackedRow:
    """Rows of one candidate, concatenated; targets[i] is the label of the token after position i
    within its own row (IGNORE at each row's end)."""

    candidate: int
    ids: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)

    def add(self, ids: list[int], labels: list[int]) -> None:
        self.ids += ids
        self.targets += labels[1:] + [IGNORE]
        self.positions += range(len(ids))


def pack_rows(rows: Sequence[tuple[int, list[int], list[int]]], capacity: int) -> list[PackedRow]:
    """(candidate, ids, labels) rows -> packed rows, each of one candidate (first-fit decreasing into bins
    of `capacity` tokens; capacity 0: every row a packed row of its own)."""
    packed: list[PackedRow] = []
    for k in sorted({k for k, _, _ in rows}):
        bins: list[PackedRow] = []
        for ids, labels in sorted(((i, lab) for c, i, lab in rows if c == k), key=lambda r: -len(r[0])):
            target = next((b for b in bins if len(b.ids) + len(ids) <= capacity), None)
            if target is None:
                target = PackedRow(k)
                bins.append(target)
            target.add(ids, labels)
        packed += bins
    return packed


def collate_packed(rows: Sequence[PackedRow], pad_id: int, device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The model inputs (input_ids, position_ids; no attention mask) and the targets [rows, width]."""
    width = max(len(r.ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.empty((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.ids)
        input_ids[i, :n] = torch.tensor(r.ids)
        targets[i, :n] = torch.tensor(r.targets)
        positions[i, :n] = torch.tensor(r.positions)
        positions[i, n:] = torch.arange(width - n)  # the padding: a sequence of its own
    return {"input_ids": input_ids.to(device), "position_ids": positions.to(device)}, targets.to(device)


_SUPPORTED: dict[tuple, bool] = {}


@torch.no_grad()
def packing_supported(model: nn.Module) -> bool:
    """Whether a forward over packed rows gives each row the logits it gets alone (once per model class,
    attention implementation and dtype). Call it where the model can run a plain forward."""
    key = (type(model).__qualname__, getattr(model.config, "_attn_implementation", None),
           next(model.parameters()).dtype)
    if key not in _SUPPORTED:
        device = next(model.parameters()).device
        first, second = [1, 2, 3], [4, 5]
        alone = torch.cat([model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0]
                           for ids in (first, second)])
        packed = model(input_ids=torch.tensor([first + second], device=device),
                       position_ids=torch.tensor([[0, 1, 2, 0, 1]], device=device), use_cache=False).logits[0]
        _SUPPORTED[key] = torch.allclose(packed.float(), alone.float(), rtol=1e-3, atol=1e-3)
    return _SUPPORTED[key]
