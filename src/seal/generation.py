"""Text generation: chat formatting, batched sampling and greedy decoding.

One function serves both uses in SEAL: sampling self-edits (temperature, top-p, several samples per
prompt) and answering questions (greedy). Prompts are left-padded and run in batches; every batch is
seeded from the caller's seed, so the same seed gives the same text on the same machine.
"""

from __future__ import annotations

import random

import torch


def chat_prompt(tokenizer, user: str) -> str:
    """The text a model sees for one user turn: its chat template when it has one, the raw text otherwise."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    return user


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    batch_size: int = 8,
    seed: int = 0,
) -> list[list[str]]:
    """Complete every prompt `num_samples` times; returns one list of completions per prompt.

    Prompts are already formatted (see `chat_prompt`). `temperature == 0` means greedy decoding.
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    sample = temperature > 0
    if not sample and num_samples != 1:
        raise ValueError("greedy decoding gives one completion per prompt; use temperature > 0 for several")
    jobs = [(i, p) for i, p in enumerate(prompts) for _ in range(num_samples)]
    outputs: list[list[str]] = [[] for _ in prompts]
    batch_seeds = random.Random(seed)  # not seed + offset, with which seed s + 8 replays the 2nd batch of seed s
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            enc = tokenizer([p for _, p in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(model.device)
            torch.manual_seed(batch_seeds.getrandbits(63))
            kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p) if sample else dict(do_sample=False)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                top_k=None,
                **kwargs,
            )
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            for (i, _), ids in zip(batch, new_tokens):
                outputs[i].append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    finally:
        tokenizer.padding_side = padding_side
    return outputs
