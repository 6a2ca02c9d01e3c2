"""The contract between a task domain and the generic machinery (inner loop, gate, ReST-EM).

A domain turns its contexts (a passage, an ARC task) into self-edit prompts, parses self-edits into
update plans made of plain training examples, and scores a model on a context. It knows nothing of
LoRA; the inner loop knows nothing of passages or grids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar


@dataclass(frozen=True)
class Example:
    """One training sequence. The loss covers `completion` only; `prompt` (if any) is context. With `chat`,
    `prompt` is a user turn that the trainer wraps in the model's chat template, and `completion` is the
    assistant's reply: the format the model is later asked in."""

    completion: str
    prompt: str = ""
    chat: bool = False
    # character spans of `completion` that are read but not learned: their tokens carry no loss (e.g. what a
    # rewarded self-edit copied from its passage, which cloned would teach the generator to copy)
    unlearned: tuple[tuple[int, int], ...] = ()


@dataclass
class UpdatePlan:
    """What a self-edit asks for: training examples and, optionally, its own hyperparameters."""

    examples: list[Example]
    lr: float | None = None
    epochs: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class SelfEditError(ValueError):
    """A self-edit that cannot become an update (malformed, out of range, over budget)."""


class UpdateError(RuntimeError):
    """An update that could not be trained (no trainable tokens, non-finite loss, nothing to clone, ...)."""


@dataclass
class Score:
    """How well a model does on a context: `value` in [0, 1], plus per-item details and any further
    named metrics (e.g. F1, recitation rate) for the record."""

    value: float
    details: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


Ctx = TypeVar("Ctx")


class Domain(Protocol[Ctx]):
    name: str

    def self_edit_prompt(self, context: Ctx) -> str:
        """The user-turn text that asks the generator for a self-edit of `context`."""

    def parse(self, context: Ctx, self_edit: str) -> UpdatePlan:
        """The update a self-edit describes; raises SelfEditError when it describes none."""

    def evaluate(self, model, tokenizer, context: Ctx) -> Score:
        """Score `model` on `context` (e.g. closed-book QA accuracy)."""
