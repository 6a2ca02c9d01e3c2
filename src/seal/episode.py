"""One self-edit episode, generic over domains: update a fresh adapter with a plan, score, clean up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from seal.config import InnerConfig
from seal.domains.base import Domain, Score, UpdatePlan
from seal.inner.lora import TrainReport, fresh_adapter, save_adapter, train


@dataclass
class Outcome:
    score: Score
    report: TrainReport


def adapt_and_evaluate(
    model,
    tokenizer,
    domain: Domain,
    context: Any,
    plan: UpdatePlan,
    cfg: InnerConfig,
    save_to: Path | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> Outcome:
    """Train a fresh LoRA on `plan`, score the adapted model on `context`, optionally save the adapter.

    The adapter is removed before returning, whatever happens: the base model is left as it was.
    """
    with fresh_adapter(model, cfg) as peft_model:
        report = train(peft_model, tokenizer, plan, cfg, on_step=on_step)
        score = domain.evaluate(peft_model, tokenizer, context)
        if save_to is not None:
            save_adapter(peft_model, save_to)
    return Outcome(score, report)
