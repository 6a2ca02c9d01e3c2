"""Few-shot ARC as a domain: task -> JSON self-edit -> augmented TTT examples -> augmented inference.

The self-edit chooses augmentation groups, the loss strategy, learning rate and epochs; `parse` turns it
into an `UpdatePlan` whose examples are deterministic for the config's seed, or raises `SelfEditError`
with the parser's reason (malformed, out of range, over the step budget). It never retries: an unusable
self-edit is an ordinary outcome that earns no reward.

CPU limits (defaults, all in `ArcConfig`): at most `max_examples` = 16 training examples per self-edit,
each at most `max_tokens` = 1024 tokens (longer ones, e.g. upscaled copies of large grids, are
dropped), and a budget of `max_steps` = 48 optimiser steps. With batch size 1 that is e.g. 16 examples
x 3 epochs. On the 2-core CPU a step over a 3x3-6x6 task (~150-400 tokens) takes ~1-3 s on
smollm2-135m and ~3-8 s on qwen2.5-coder-0.5b, so one task's test-time training takes 1-2.5 minutes on
the first and 3-6 on the second; answering (8 views) adds under a minute.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from seal.domains.arc.augment import augment_task, cap
from seal.domains.arc.grids import Grid, GridFormat, grid_to_text
from seal.domains.arc.inference import VIEWS, augmented_inference
from seal.domains.arc.prompts import answer_prompt, read_answer, self_edit_prompt, training_examples
from seal.domains.arc.selfedit import (ArcSelfEdit, Rejection, SelfEditLimits, check_budget, parse_self_edit,
                                       self_edit_template)
from seal.domains.arc.tasks import ArcTask
from seal.domains.base import Score, SelfEditError, UpdatePlan
from seal.generation import chat_prompt, generate


@dataclass
class ArcConfig:
    """How ARC self-edits become training data and how tasks are answered."""

    max_examples: int = 16  # TTT examples per self-edit (a seeded random subset of the augmented tasks)
    max_steps: int = 48  # optimiser-step budget per self-edit; costlier self-edits are rejected
    min_learning_rate: float = 1e-6
    max_learning_rate: float = 1e-2
    max_epochs: int = 10
    leave_out: list[int] = field(default_factory=lambda: [1])  # leave-k-out tasks made from the demonstrations
    colour_permutations: int = 0  # recoloured copies of every augmented task
    views: list[str] = field(default_factory=lambda: list(VIEWS))  # geometric views voted over at inference
    attempts: int = 2
    batch_size: int = 8  # inference batch
    cell_sep: str = ""  # grid text: digits per row joined by this ("" is the most compact)
    seed: int = 0


@dataclass
class ArcDomain:
    """`tokenizer` is the learner's (its chat template masks the TTT examples); `max_tokens` and
    `batch_size` are the inner loop's `max_length` and `batch_size`, so that no example is truncated
    and the step budget counts the steps the inner loop will take."""

    tokenizer: object
    cfg: ArcConfig = field(default_factory=ArcConfig)
    max_tokens: int = 1024
    batch_size: int = 1
    name: str = "arc"

    def __post_init__(self):
        unknown = sorted(set(self.cfg.views) - set(VIEWS))
        if unknown or not self.cfg.views:
            raise ValueError(f"unknown or no inference views {unknown}; choose from {', '.join(VIEWS)}")
        self.fmt = GridFormat(cell_sep=self.cfg.cell_sep)
        self.limits = SelfEditLimits(min_learning_rate=self.cfg.min_learning_rate,
                                     max_learning_rate=self.cfg.max_learning_rate, max_epochs=self.cfg.max_epochs,
                                     max_steps=self.cfg.max_steps, batch_size=self.batch_size)
        self.self_edit_template = self_edit_template(self.limits)  # for structured sampling

    def self_edit_prompt(self, task: ArcTask) -> str:
        return self_edit_prompt(task, self.limits, self.fmt)

    def parse(self, task: ArcTask, self_edit: str) -> UpdatePlan:
        edit = parse_self_edit(self_edit, self.limits)
        if isinstance(edit, Rejection):
            raise SelfEditError(edit.reason)
        return self.plan(task, edit)

    def plan(self, task: ArcTask, edit: ArcSelfEdit) -> UpdatePlan:
        """The training examples and hyperparameters of `edit`; SelfEditError if over budget or empty."""
        tasks = augment_task(task, edit.augmentation_groups, self.cfg.seed, leave_out=self.cfg.leave_out,
                             colour_permutations=self.cfg.colour_permutations)
        examples = [ex for ex in training_examples(self.tokenizer, tasks, edit.strategy, self.fmt)
                    if self._length(ex) <= self.max_tokens]
        examples = cap(examples, self.cfg.max_examples, random.Random(self.cfg.seed))
        if not examples:
            raise SelfEditError(f"no training example of task {task.id} fits in {self.max_tokens} tokens")
        checked = check_budget(edit, len(examples), self.limits)
        if isinstance(checked, Rejection):
            raise SelfEditError(checked.reason)
        return UpdatePlan(examples, lr=edit.learning_rate, epochs=edit.num_train_epochs,
                          notes={"groups": list(edit.augmentation_groups), "strategy": edit.strategy})

    def _length(self, example) -> int:
        """Tokens of an example as the inner loop will see them (prompt + completion + EOS)."""
        return len(self.tokenizer(example.prompt + example.completion, add_special_tokens=False)["input_ids"]) + 1

    def evaluate(self, model, tokenizer, task: ArcTask) -> Score:
        """Augmented inference with greedy answers: 1.0 when every test output is among the attempts."""
        budget = self._answer_tokens(tokenizer, task)

        def answer(jobs: list[tuple[ArcTask, int]]) -> list[Grid | None]:
            prompts = [chat_prompt(tokenizer, answer_prompt(view, i, self.fmt)) for view, i in jobs]
            replies = generate(model, tokenizer, prompts, max_new_tokens=budget, batch_size=self.cfg.batch_size)
            return [read_answer(r[0], self.fmt) for r in replies]

        return augmented_inference(task, self.cfg.views, answer, self.cfg.attempts)

    def _answer_tokens(self, tokenizer, task: ArcTask) -> int:
        """Room for a square grid as large as the task's largest visible grid (its test outputs unseen)."""
        grids = [g for ex in task.train for g in (ex.input, ex.output)] + list(task.test_inputs)
        side = max(max(len(g), len(g[0])) for g in grids)
        widest = tuple(tuple((r + c) % 10 for c in range(side)) for r in range(side))
        return len(tokenizer(grid_to_text(widest, self.fmt), add_special_tokens=False)["input_ids"]) + 8

