"""The interface every continual strategy implements, and the version state it acts on.

A version's weights are the base model, plus the adapters folded into it (`merged`, in order), plus
the adapters kept apart one per document (`routed`), among which a retriever picks per question. Every
strategy trains each new document's adapter on top of the folded weights; strategies differ only in
what that update trains on, where the adapter goes, and whether the kept-apart adapters are later
consolidated into one. The memory does the rest (self-edit, training, gate, atomic versions).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from seal.domains.base import Example, UpdatePlan


@dataclass
class State:
    merged: list[str] = field(default_factory=list)  # adapter ids folded into the weights, in order
    routed: list[dict] = field(default_factory=list)  # {"document": id, "adapter": id}, one per document
    documents: list[dict] = field(default_factory=list)  # {"id", "title"} of every document the version holds
    scales: dict[str, float] = field(default_factory=dict)  # merged adapter id -> the scale it is folded in at (else 1)

    @classmethod
    def of(cls, version: dict) -> State:
        return cls(list(version["merged"]), [dict(r) for r in version["routed"]], [dict(d) for d in version["documents"]],
                   dict(version.get("scales", {})))

    def folded(self) -> list[tuple[str, float]]:
        """(adapter id, scale) of every adapter folded into the weights, in order."""
        return [(a, self.scales.get(a, 1.0)) for a in self.merged]

    def scaled(self, adapter: str, scale: float) -> State:
        """This state with the merged `adapter` folded in at `scale`."""
        return dataclasses.replace(self, scales={**self.scales, adapter: scale})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def replay_sample(pool: list[Example], count: int, rng: random.Random) -> list[Example]:
    """`count` sequences drawn without replacement from `pool` (all of it when it is smaller)."""
    return list(pool) if count >= len(pool) else rng.sample(pool, count)


class Strategy:
    """Plain merging: train on the new document only, fold the adapter into the weights."""

    name = "merge"

    def __init__(self, replay_ratio: float = 0.0, consolidate_every: int = 0):
        self.replay_ratio = replay_ratio
        self.consolidate_every = consolidate_every

    def training_plan(self, plan: UpdatePlan, earlier: list[Example], rng: random.Random) -> UpdatePlan:
        """What the new document's update trains on, given the sequences of the documents already held."""
        return plan

    def place(self, state: State, adapter: str, document: dict) -> State:
        """The state after accepting `adapter` for `document`."""
        return State(state.merged + [adapter], state.routed, state.documents + [document], state.scales)

    def consolidation_due(self, state: State) -> bool:
        return False
