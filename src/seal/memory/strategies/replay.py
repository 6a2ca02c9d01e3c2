"""`replay`: like merge, but each update also trains on a sample of earlier documents' sequences (their
passages and self-edit items), `replay_ratio` of them per new sequence, so that old facts are rehearsed."""

from __future__ import annotations

import math
import random

from seal.domains.base import Example, UpdatePlan
from seal.memory.strategies.base import Strategy, replay_sample


class Replay(Strategy):
    name = "replay"

    def training_plan(self, plan: UpdatePlan, earlier: list[Example], rng: random.Random) -> UpdatePlan:
        extra = replay_sample(earlier, math.ceil(self.replay_ratio * len(plan.examples)), rng)
        return UpdatePlan(plan.examples + extra, plan.lr, plan.epochs, {**plan.notes, "replayed": len(extra)})
