"""`consolidate`: new documents are held apart as routed adapters (fresh facts outside the weights); every
`consolidate_every` documents they are folded into one update trained on all their sequences plus a replay
sample of the documents consolidated before, gated on the quizzes of every document it covers."""

from __future__ import annotations

import math
import random

from seal.domains.base import Example, UpdatePlan
from seal.memory.strategies.base import State, replay_sample
from seal.memory.strategies.router import Router


class Consolidate(Router):
    name = "consolidate"

    def consolidation_due(self, state: State) -> bool:
        return len(state.routed) >= self.consolidate_every

    def consolidation_plan(self, fresh: list[Example], earlier: list[Example], rng: random.Random) -> UpdatePlan:
        """All sequences of the documents being consolidated, plus replayed sequences of older ones."""
        extra = replay_sample(earlier, math.ceil(self.replay_ratio * len(fresh)), rng)
        return UpdatePlan(fresh + extra, notes={"replayed": len(extra)})

    def fold(self, state: State, adapter: str) -> State:
        """The state once the routed adapters are replaced by one folded-in consolidated adapter."""
        return State(state.merged + [adapter], [], state.documents, state.scales)
