"""Text generation: chat formatting, batched sampling and greedy decoding.

`generate` serves both uses in SEAL: sampling self-edits (temperature, top-p, several samples per
prompt) and answering questions (greedy). Prompts are left-padded and run in batches; every batch is
seeded from the caller's seed, so the same seed gives the same text on the same machine. `fill_in`
samples self-edits whose format is fixed, value by value, for models too small to write it reliably.
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


Slot = tuple[str, tuple[str, ...]]  # fixed text, then the choices for the value that follows it (none: ())


@torch.no_grad()
def fill_in(model, tokenizer, prompts: list[str], template: list[Slot], *, temperature: float,
            num_samples: int = 1, seed: int = 0) -> list[list[str]]:
    """Complete every prompt `num_samples` times along `template`: its fixed texts verbatim, each value one of
    its choices, drawn with the model's probability of that choice's text (a softmax at `temperature` over
    the choices; the likeliest at 0). The model makes every choice, but even a small one cannot break the
    format, as free generation of a self-edit often does. Deterministic for `seed`.

    The prompt is encoded once per completion; choices are scored on top of the key/value cache and cropped
    off again, so a choice costs a forward pass over its own few tokens only.
    """
    if temperature == 0 and num_samples != 1:
        raise ValueError("greedy filling gives one completion per prompt; use temperature > 0 for several")
    if any(len(choices) == 1 or "" in choices for _, choices in template):
        raise ValueError("a template slot needs no choice or at least two non-empty ones")
    rng = random.Random(seed)
    encode = lambda text: tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)  # noqa: E731

    def advance(text: str, cache):
        """Feed `text` after `cache`: the grown cache and the logits of the token that comes next."""
        step = model(encode(text), past_key_values=cache, use_cache=True, logits_to_keep=1)
        return step.past_key_values, step.logits[0, -1]

    outputs: list[list[str]] = []
    for prompt in prompts:
        outputs.append([])
        for _ in range(num_samples):
            cache, last = advance(prompt, None)
            text = ""
            for fixed, choices in template:
                text += fixed
                if not choices:
                    continue
                if fixed:
                    cache, last = advance(fixed, cache)
                scores, first = [], torch.log_softmax(last.float(), -1)
                for choice in choices:
                    ids = encode(choice)
                    logprob = first[ids[0, 0]].item()
                    if ids.shape[1] > 1:
                        rest = model(ids[:, :-1], past_key_values=cache, use_cache=True).logits[0].float()
                        cache.crop(1 - ids.shape[1])  # a negative count removes that many tokens
                        logprob += torch.log_softmax(rest, -1).gather(1, ids[0, 1:, None]).sum().item()
                    scores.append(logprob)
                if temperature == 0:
                    pick = max(range(len(choices)), key=scores.__getitem__)
                else:
                    weights = torch.softmax(torch.tensor(scores) / temperature, 0).tolist()
                    pick = rng.choices(range(len(choices)), weights)[0]
                cache, last = advance(choices[pick], cache)
                text += choices[pick]
            outputs[-1].append(text)
    return outputs


def sample_self_edits(model, tokenizer, domain, contexts: list, sampling, num_samples: int, seed: int) -> list[list[str]]:
    """`num_samples` self-edits of each context from `model`, written freely or, with `sampling.structured`,
    filled into the domain's `self_edit_template`."""
    prompts = [chat_prompt(tokenizer, domain.self_edit_prompt(c)) for c in contexts]
    if not sampling.structured:
        return generate(model, tokenizer, prompts, max_new_tokens=sampling.max_new_tokens,
                        temperature=sampling.temperature, top_p=sampling.top_p, num_samples=num_samples,
                        batch_size=sampling.batch_size, seed=seed)
    template = getattr(domain, "self_edit_template", None)
    if template is None:
        raise ValueError(f"the {domain.name} domain has no self-edit template; set sampling.structured=false")
    return fill_in(model, tokenizer, prompts, template, temperature=sampling.temperature, num_samples=num_samples,
                   seed=seed)
