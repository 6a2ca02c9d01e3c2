"""Continual-learning strategies of a Memory, one module each, behind `strategies.base.Strategy`."""

from __future__ import annotations

from seal.memory.strategies.base import State, Strategy
from seal.memory.strategies.consolidate import Consolidate
from seal.memory.strategies.merge import Merge
from seal.memory.strategies.replay import Replay
from seal.memory.strategies.router import DocumentIndex, Router

_BY_NAME = {s.name: s for s in (Merge, Replay, Router, Consolidate)}


def get_strategy(name: str, replay_ratio: float, consolidate_every: int) -> Strategy:
    try:
        cls = _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(_BY_NAME)}") from None
    return cls(replay_ratio, consolidate_every)


__all__ = ["Consolidate", "DocumentIndex", "Merge", "Replay", "Router", "State", "Strategy", "get_strategy"]
