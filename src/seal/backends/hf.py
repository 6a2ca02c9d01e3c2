"""The reference backend: transformers' `generate` and forward passes on the torch model itself.

Prompts are left-padded and run in batches; every batch is seeded from the caller's seed, so the same seed
gives the same text on the same machine. Adapters need nothing here: the model's own modules apply them.
A streamed completion runs `generate` in a thread that feeds transformers' TextIteratorStreamer.
"""

from __future__ import annotations

import random
import threading
from typing import Iterator, Sequence

import torch
from transformers import StoppingCriteria, TextIteratorStreamer

from seal.backends.base import Slot, Text, check_fill_in, check_generate, encode_pairs


class HFBackend:
    name = "hf"

    def supports(self, model) -> str | None:
        return None

    def attach(self, model, **options) -> None:
        pass

    @torch.no_grad()
    def generate(self, model, tokenizer, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, num_samples: int = 1, batch_size: int = 8, seed: int = 0) -> list[list[str]]:
        check_generate(prompts, max_new_tokens, temperature, num_samples)
        sample = temperature > 0
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
                out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                     top_k=None, **kwargs)
                new_tokens = out[:, enc["input_ids"].shape[1] :]
                for (i, _), ids in zip(batch, new_tokens):
                    outputs[i].append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        finally:
            tokenizer.padding_side = padding_side
        return outputs

    def stream(self, model, tokenizer, prompt: str, *, max_new_tokens: int) -> Iterator[str]:
        """`generate` writes the tokens in a thread; the streamer hands their text over word by word. The caller
        that stops reading sets `stop`, which ends the generation at its next token; the thread is joined
        either way, so that nobody else runs the model while it still generates."""
        check_generate([prompt], max_new_tokens, 0.0, 1)
        enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop, failure = threading.Event(), []

        def run() -> None:
            try:
                model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, top_k=None,
                               pad_token_id=tokenizer.pad_token_id, streamer=streamer, stopping_criteria=[Stop(stop)])
            except BaseException as e:  # re-raised in the reader's thread below
                failure.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True, name="stream")
        thread.start()
        try:
            yield from streamer
        finally:
            stop.set()
            thread.join()
        if failure:
            raise failure[0]

    @torch.no_grad()
    def fill_in(self, model, tokenizer, prompts: list[str], template: list[Slot], *, temperature: float,
                num_samples: int = 1, seed: int = 0) -> list[list[str]]:
        """The prompt is encoded once per completion; choices are scored on top of the key/value cache and
        cropped off again, so a choice costs a forward pass over its own few tokens only."""
        check_fill_in(template, temperature, num_samples)
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
                for n, (fixed, choices) in enumerate(template):
                    text += fixed
                    if fixed and (choices or n + 1 < len(template)):  # the model reads every fixed text it goes on from
                        cache, last = advance(fixed, cache)
                    if not choices:
                        continue
                    scores, first = [], torch.log_softmax(last.float(), -1)
                    for choice in choices:
                        ids = encode(choice)
                        logprob = first[ids[0, 0]].item()
                        if ids.shape[1] > 1:
                            rest = model(ids[:, :-1], past_key_values=cache, use_cache=True).logits[0].float()
                            cache.crop(1 - ids.shape[1])  # a negative count removes that many tokens
                            logprob += torch.log_softmax(rest, -1).gather(1, ids[0, 1:, None]).sum().item()
                        scores.append(logprob)
                    pick = choose(scores, temperature, rng)
                    cache, last = advance(choices[pick], cache)
                    text += choices[pick]
                outputs[-1].append(text)
        return outputs

    @torch.no_grad()
    def loglik(self, model, tokenizer, pairs: Sequence[tuple[Text, Text]], *, batch_size: int = 32) -> list[float]:
        rows = [(p + a, len(p)) for p, a in encode_pairs(tokenizer, pairs)]
        scores: list[float] = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (row, _) in enumerate(chunk):
                ids[r, : len(row)], mask[r, : len(row)] = torch.tensor(row), 1
            logprobs = torch.log_softmax(model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                               use_cache=False).logits.float(), -1)
            for r, (row, cut) in enumerate(chunk):
                targets = torch.tensor(row[cut:], device=logprobs.device)
                scores.append(logprobs[r, cut - 1 : len(row) - 1].gather(1, targets[:, None]).sum().item())
        return scores

    @torch.no_grad()
    def next_token_logprobs(self, model, tokenizer, prompts: list[str], token_ids: Sequence[int]) -> list[list[float]]:
        """One prompt at a time, keeping the last position's logits only (batching prompts of unequal lengths
        would need padding, whose positions shift the logits slightly)."""
        scores = []
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
            logprobs = torch.log_softmax(model(ids, logits_to_keep=1).logits[0, -1].float(), -1)
            scores.append(logprobs[list(token_ids)].tolist())
        return scores


def choose(scores: list[float], temperature: float, rng: random.Random) -> int:
    """Index of the likeliest score at temperature 0, else one drawn from softmax(scores / temperature)."""
    if temperature == 0:
        return max(range(len(scores)), key=scores.__getitem__)
    weights = torch.softmax(torch.tensor(scores) / temperature, 0).tolist()
    return rng.choices(range(len(scores)), weights)[0]


class Stop(StoppingCriteria):
    """Ends a generation once `event` is set (the reader of a stream went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
