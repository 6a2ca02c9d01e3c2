"""`merge`, the reference (SEAL's continual experiment): each accepted adapter is folded into the weights."""

from seal.memory.strategies.base import Strategy


class Merge(Strategy):
    name = "merge"
