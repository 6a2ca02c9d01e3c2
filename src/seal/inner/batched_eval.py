"""Scoring K candidate adapters together: batched greedy decoding, gold-answer log-likelihoods, and
the per-domain choice of how to evaluate all candidates on one context.

Decoding is memory-bound, so K candidates answering the same questions in one batched `generate` cost
about as much as one: the answers to a passage's questions are decoded for all K candidates at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from seal.domains.base import Score
from seal.inner.lora import IGNORE, collate

if TYPE_CHECKING:
    from seal.inner.batched import MultiAdapter


def generate_all(multi: MultiAdapter, tokenizer, prompts: Sequence[Sequence[str]], *, max_new_tokens: int,
                 batch_size: int | None = None) -> list[list[str]]:
    """Greedy completions of prompts[k] by candidate k, in one batched pass (or in batches of
    `batch_size` rows); prompts are already formatted (seal.generation.chat_prompt)."""
    from seal.generation import generate

    if len(prompts) != multi.k:
        raise ValueError(f"{len(prompts)} prompt lists for {multi.k} candidates")
    jobs = [(k, p) for k, ps in enumerate(prompts) for p in ps]
    answers: list[str] = []
    size = batch_size or max(len(jobs), 1)
    multi.model.eval()
    for start in range(0, len(jobs), size):
        chunk = jobs[start : start + size]
        with multi.rows([k for k, _ in chunk]):
            outs = generate(multi.model, tokenizer, [p for _, p in chunk], max_new_tokens=max_new_tokens,
                            batch_size=len(chunk))
        answers += [o[0] for o in outs]
    result, i = [], 0
    for ps in prompts:
        result.append(answers[i : i + len(ps)])
        i += len(ps)
    return result


@torch.no_grad()
def gold_loglik(multi: MultiAdapter, tokenizer, pairs: Sequence[Sequence[tuple[str, str]]],
                batch_size: int = 32) -> list[list[float]]:
    """log p(answer | prompt) summed over the answer's tokens, per pair, for candidate k on pairs[k].

    A cheap score (one forward pass, no decoding): prompts are formatted text, answers are
    tokenised on their own and appended (no EOS), like `tokenize_examples` builds training rows.
    """
    if len(pairs) != multi.k:
        raise ValueError(f"{len(pairs)} pair lists for {multi.k} candidates")
    jobs = []
    for k, ps in enumerate(pairs):
        for prompt, answer in ps:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a = tokenizer(answer, add_special_tokens=False)["input_ids"]
            if not a:
                raise ValueError(f"empty answer for prompt {prompt[:60]!r}")
            jobs.append((k, p + a, [IGNORE] * len(p) + a))
    multi.model.eval()
    scores: list[float] = []
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        batch = collate([(ids, labels) for _, ids, labels in chunk], tokenizer.pad_token_id, multi.flat.device)
        labels = batch.pop("labels")
        logits = multi.forward([k for k, _, _ in chunk], **batch, use_cache=False).logits
        scores += sequence_logprobs(logits, labels).tolist()
    result, i = [], 0
    for ps in pairs:
        result.append(scores[i : i + len(ps)])
        i += len(ps)
    return result


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(label) over labelled positions, per row (next-token alignment, as token_loss)."""
    targets = labels[:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != IGNORE)).sum(-1)


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
