"""Scoring K candidate adapters together: batched greedy decoding, gold-answer log-likelihoods (both
through `seal.generation`, each batch row routed to its candidate), and the per-domain choice of how to
evaluate all candidates on one context.

Decoding is memory-bound, so K candidates answering the same questions in one batched `generate` cost
about as much as one: the answers to a passage's questions are decoded for all K candidates at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from seal.domains.base import Score

if TYPE_CHECKING:
    from seal.inner.batched import MultiAdapter


def generate_all(multi: MultiAdapter, tokenizer, prompts: Sequence[Sequence[str]], *, max_new_tokens: int,
                 batch_size: int | None = None) -> list[list[str]]:
    """Greedy completions of prompts[k] by candidate k, in one batched pass (or in batches of
    `batch_size` rows); prompts are already formatted (seal.generation.chat_prompt)."""
    from seal.generation import generate

    def run(chunk: list[str]) -> list[str]:
        return [o[0] for o in generate(multi.model, tokenizer, chunk, max_new_tokens=max_new_tokens,
                                       batch_size=len(chunk))]

    return _per_candidate(multi, prompts, batch_size, run)


def gold_loglik(multi: MultiAdapter, tokenizer, pairs: Sequence[Sequence[tuple[str, str]]],
                batch_size: int = 32) -> list[list[float]]:
    """log p(answer | prompt) summed over the answer's tokens, per pair, for candidate k on pairs[k]
    (`seal.generation.loglik`, each row through its candidate): a cheap score, one forward pass, no decoding."""
    from seal.generation import loglik

    return _per_candidate(multi, pairs, batch_size,
                          lambda chunk: loglik(multi.model, tokenizer, chunk, batch_size=len(chunk)))


def _per_candidate(multi: MultiAdapter, items: Sequence[Sequence[Any]], batch_size: int | None,
                   run: Callable[[list[Any]], list[Any]]) -> list[list[Any]]:
    """run(chunk) over items[k] for every candidate k, rows of all candidates together in chunks of
    `batch_size` (all in one without), each row routed to its candidate; the results per candidate."""
    if len(items) != multi.k:
        raise ValueError(f"{len(items)} lists of inputs for {multi.k} candidates")
    jobs = [(k, item) for k, per_candidate in enumerate(items) for item in per_candidate]
    results: list[Any] = []
    size = batch_size or max(len(jobs), 1)
    multi.model.eval()
    for start in range(0, len(jobs), size):
        chunk = jobs[start : start + size]
        with torch.no_grad(), multi.rows([k for k, _ in chunk]):
            results += run([item for _, item in chunk])
    grouped, i = [], 0
    for per_candidate in items:
        grouped.append(results[i : i + len(per_candidate)])
        i += len(per_candidate)
    return grouped


def knowledge_evaluate_many(domain, multi: MultiAdapter, tokenizer, passage) -> list[Score]:
    """KnowledgeDomain.evaluate for all K candidates at once: the same closed-book prompts and greedy
    decoding (domain.eval.max_new_tokens), one batched generate over K x questions, graded by
    `domain.score`."""
    from seal.domains.knowledge.prompts import answer_prompt
    from seal.generation import chat_prompt

    if not passage.questions:
        raise ValueError(f"passage {passage.title!r} has no questions to evaluate on")
    prompts = [chat_prompt(tokenizer, answer_prompt(passage.title, q.question)) for q in passage.questions]
    answers = generate_all(multi, tokenizer, [prompts] * multi.k, max_new_tokens=domain.eval.max_new_tokens)
    return [domain.score(passage, per_candidate) for per_candidate in answers]


def evaluator_for(domain) -> Callable[[MultiAdapter, Any, Any], list[Score]]:
    """How to score all K candidates on a context: the domain's own `evaluate_many(multi, tokenizer,
    context)` if it has one, the batched knowledge evaluation for KnowledgeDomain, else
    `domain.evaluate` once per candidate (training is still batched)."""
    if hasattr(domain, "evaluate_many"):
        return domain.evaluate_many
    from seal.domains.knowledge.domain import KnowledgeDomain

    if isinstance(domain, KnowledgeDomain):
        return lambda multi, tokenizer, context: knowledge_evaluate_many(domain, multi, tokenizer, context)

    def one_by_one(multi: MultiAdapter, tokenizer, context) -> list[Score]:
        scores = []
        for k in range(multi.k):
            with multi.only(k) as model:
                scores.append(domain.evaluate(model, tokenizer, context))
        return scores

    return one_by_one
