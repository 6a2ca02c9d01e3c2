"""Text generation for every caller: chat formatting, sampling and greedy decoding, filling in a template,
log-likelihoods and next-token log-probabilities, each run by the backend the model was loaded with (`seal.backends`).

`generate` serves both uses in SEAL: sampling self-edits (temperature, top-p, several samples per prompt)
and answering questions (greedy). `fill_in` samples self-edits whose format is fixed, value by value, for
models too small to write it reliably. `stream` hands a greedy completion over piece by piece as it is
generated (a served chat answer). The same seed gives the same text on the same machine and backend.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from seal import backends
from seal.backends.base import Slot, Text
from seal.domains.base import Example, SelfEditError

__all__ = ["Slot", "Text", "chat_prompt", "fill_in", "generate", "loglik", "next_token_logprobs", "sample_self_edits",
           "self_edit_examples", "stream"]


def chat_prompt(tokenizer, user: str) -> str:
    """The text a model sees for one user turn: its chat template when it has one, the raw text otherwise."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    return user


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, num_samples: int = 1, batch_size: int = 8, seed: int = 0) -> list[list[str]]:
    """Complete every prompt `num_samples` times; returns one list of completions per prompt.

    Prompts are already formatted (see `chat_prompt`). `temperature == 0` means greedy decoding.
    """
    return backends.for_model(model).generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
        num_samples=num_samples, batch_size=batch_size, seed=seed)


def stream(model, tokenizer, prompt: str, *, max_new_tokens: int) -> Iterator[str]:
    """The greedy completion of one formatted prompt, in pieces as they are generated; joined, the pieces are
    `generate`'s completion of it. Like `generate`, the completion is stripped: leading whitespace is dropped
    and whitespace is held back until text follows it."""
    held, started = "", False
    pieces = backends.for_model(model).stream(model, tokenizer, prompt, max_new_tokens=max_new_tokens)
    with contextlib.closing(pieces):  # a reader that stops early stops the backend's generation at once
        for piece in pieces:
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            text = piece.rstrip()
            if text:
                yield held + text
                held = piece[len(text):]
            else:
                held += piece


def fill_in(model, tokenizer, prompts: list[str], template: list[Slot], *, temperature: float,
            num_samples: int = 1, seed: int = 0) -> list[list[str]]:
    """Complete every prompt `num_samples` times along `template`: its fixed texts verbatim, each value one of
    its choices, drawn with the model's probability of that choice's text (a softmax at `temperature` over
    the choices; the likeliest at 0). The model makes every choice, but even a small one cannot break the
    format, as free generation of a self-edit often does. Deterministic for `seed`."""
    return backends.for_model(model).fill_in(model, tokenizer, prompts, template, temperature=temperature,
                                             num_samples=num_samples, seed=seed)


def loglik(model, tokenizer, pairs: Sequence[tuple[Text, Text]], *, batch_size: int = 32) -> list[float]:
    """log p(answer | prompt) per (prompt, answer) pair, summed over the answer's tokens (no EOS). Each side
    is a text (tokenised on its own) or token ids (e.g. a text's first token and the rest, for a perplexity)."""
    return backends.for_model(model).loglik(model, tokenizer, pairs, batch_size=batch_size)


def next_token_logprobs(model, tokenizer, prompts: list[str], token_ids: Sequence[int]) -> list[list[float]]:
    """log p(token | prompt) for each of `token_ids` as the next token, per prompt (e.g. a judge's "yes"
    and "no" tokens after its question), from one pass over each prompt."""
    return backends.for_model(model).next_token_logprobs(model, tokenizer, prompts, token_ids)


# Between the samples that make up one self-edit (`sampling.pieces`): a blank line longer than any a sample keeps.
PIECE_SEPARATOR = "\n\n\n"


def sample_self_edits(model, tokenizer, domain, contexts: list, sampling, num_samples: int, seed: int) -> list[list[str]]:
    """`num_samples` self-edits of each context from `model`, each made of `sampling.pieces` samples joined by
    `PIECE_SEPARATOR` (several short lists teach more than one long one; see config.knowledge_sampling)."""
    samples = _sample(model, tokenizer, domain, contexts, sampling, num_samples * sampling.pieces, seed)
    return [join_pieces(texts, sampling.pieces) for texts in samples]


def join_pieces(texts: list[str], pieces: int) -> list[str]:
    """Consecutive runs of `pieces` samples, each joined into one self-edit by `PIECE_SEPARATOR`."""
    if pieces == 1:
        return texts
    return [PIECE_SEPARATOR.join(_tight(t) for t in texts[n:n + pieces]) for n in range(0, len(texts), pieces)]


def _tight(text: str) -> str:
    """`text` with no run of blank lines as long as `PIECE_SEPARATOR`, so that the self-edit splits back into it."""
    while PIECE_SEPARATOR in text:
        text = text.replace(PIECE_SEPARATOR, "\n\n")
    return text.strip("\n")


def _sample(model, tokenizer, domain, contexts: list, sampling, num_samples: int, seed: int) -> list[list[str]]:
    """`num_samples` samples of each context, written freely or, with `sampling.structured`, in the domain's
    structure: written by the domain's own `write_self_edits` (a scaffold of small prompts), or filled into its
    `self_edit_template`."""
    if sampling.structured and hasattr(domain, "write_self_edits"):
        return domain.write_self_edits(model, tokenizer, contexts, sampling, num_samples, seed)
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


def self_edit_examples(tokenizer, domain, context, self_edit: str, sampling) -> list[Example]:
    """How to teach a generator to write `self_edit` again (ReST-EM's M-step): the prompts that
    `sample_self_edits` wrote it from, under the same `sampling`, each with its completion. A self-edit written
    in one piece is one example per piece (`sampling.pieces`: each was sampled alone); one written by the domain's
    scaffold is one example per scaffold prompt."""
    if sampling.structured and hasattr(domain, "scaffold_examples"):
        return domain.scaffold_examples(tokenizer, context, self_edit)
    prompt = chat_prompt(tokenizer, domain.self_edit_prompt(context))
    # what of a piece to teach, where the domain does not teach all of it
    clone = getattr(domain, "cloned_example", lambda context, piece, prompt: Example(piece, prompt=prompt))
    return [clone(context, piece, prompt) for piece in self_edit.split(PIECE_SEPARATOR) if _usable(domain, context, piece)]


def _usable(domain, context, piece: str) -> bool:
    """Whether a piece of a rewarded self-edit describes an update of its own: a piece that says nothing (only
    "there are no implications") rode along with the pieces that earned the reward, and cloned it teaches the
    generator to write nothing."""
    try:
        domain.parse(context, piece)
    except SelfEditError:
        return False
    return True
