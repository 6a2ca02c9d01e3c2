"""The generation interface every backend implements, and the argument checks they share.

A backend runs one torch model `as it is`: with no adapter, with the one peft LoRA wrapped around it, or
inside `seal.inner.batched.batched_adapters` with a different adapter per batch row. Prompts are formatted
text (`seal.generation.chat_prompt`); every backend tokenises with the model's own HF tokenizer, so the
same prompt is the same token ids on every engine.
"""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence

from seal.models import ModelError

Slot = tuple[str, tuple[str, ...]]  # fixed text, then the choices for the value that follows it (none: ())
Text = str | Sequence[int]  # formatted text, or token ids already (a text cut where tokenising would not cut it)


class BackendError(ModelError):
    """A backend that is not installed or cannot run the model it was given (the CLI exits 2)."""


class Backend(Protocol):
    name: str

    def supports(self, model) -> str | None:
        """None when this backend can run `model`, else the reason it cannot."""

    def attach(self, model, **options) -> None:
        """Prepare for `model` (called once, when the model is loaded with this backend)."""

    def generate(self, model, tokenizer, prompts: list[str], *, max_new_tokens: int, temperature: float,
                 top_p: float, num_samples: int, batch_size: int, seed: int) -> list[list[str]]:
        """`num_samples` completions per prompt; greedy at temperature 0, else sampled (temperature, top-p)."""

    def stream(self, model, tokenizer, prompt: str, *, max_new_tokens: int) -> Iterator[str]:
        """The greedy completion of one prompt in pieces, each yielded as soon as the engine has written it
        (a chat answer sent to a client while it is generated). Leaving the loop early stops the generation."""

    def fill_in(self, model, tokenizer, prompts: list[str], template: list[Slot], *, temperature: float,
                num_samples: int, seed: int) -> list[list[str]]:
        """Completions along `template`: fixed texts verbatim, each value one of its choices, drawn with a
        softmax at `temperature` over the model's log-probability of each choice (the likeliest at 0)."""

    def loglik(self, model, tokenizer, pairs: Sequence[tuple[Text, Text]], *, batch_size: int) -> list[float]:
        """log p(answer | prompt) summed over the answer's tokens (tokenised on its own, no EOS), per pair."""

    def next_token_logprobs(self, model, tokenizer, prompts: list[str], token_ids: Sequence[int]) -> list[list[float]]:
        """log p(token | prompt) of each of `token_ids` as the token that follows the prompt, per prompt: a
        whole distribution's worth of answers (a verdict word, say) from one pass over the prompt."""


def check_generate(prompts: list[str], max_new_tokens: int, temperature: float, num_samples: int) -> None:
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if temperature <= 0 and num_samples != 1:
        raise ValueError("greedy decoding gives one completion per prompt; use temperature > 0 for several")


def check_fill_in(template: list[Slot], temperature: float, num_samples: int) -> None:
    if temperature == 0 and num_samples != 1:
        raise ValueError("greedy filling gives one completion per prompt; use temperature > 0 for several")
    if any(len(choices) == 1 or "" in choices for _, choices in template):
        raise ValueError("a template slot needs no choice or at least two non-empty ones")


def encode_pairs(tokenizer, pairs: Sequence[tuple[Text, Text]]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) per pair, each text tokenised on its own, as training rows are built."""
    encode = lambda text: (tokenizer(text, add_special_tokens=False)["input_ids"] if isinstance(text, str)  # noqa: E731
                           else list(text))
    encoded = []
    for prompt, answer in pairs:
        p, a = encode(prompt), encode(answer)
        if not p or not a:
            raise ValueError(f"empty prompt or answer in the pair {(prompt[:60], answer[:60])!r}")
        encoded.append((p, a))
    return encoded


def stop_ids(model, tokenizer) -> set[int]:
    """Token ids that end a completion: the model's generation config's EOS ids, else the tokenizer's."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
