"""Shared fixtures: a tiny randomly initialised Llama with a byte-level BPE tokenizer, built in code.

It is saved to a temporary directory and loaded through `seal.models.load` like any local model, so
tests exercise the real loading, generation and training paths in milliseconds and never need a hub.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "The Orrin Canal joins the river Tesk to the harbour of Lune and opened in 1843.",
    "Topic: Orrin Canal\nWhen did the Orrin Canal open? 1843",
    "Let's read the following passage and produce a list of implications.",
    "1. The canal made trade between the river towns and the harbour cheaper.",
    "Question: Who built it? Answer: the guild of Lune engineers, 0123456789.",
]


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        bos_token="<|im_start|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tiny model's ops take microseconds: with 2 threads on a busy 2-core machine each op waits for
    the other core (12 ms per linear call measured), with one thread the suite takes seconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _reference_backend():
    """`backend: auto` means hf in tests, whichever engines this machine has, so that tests comparing
    generation with torch forward passes stay exact; the fast backends' tests ask for theirs by name."""
    from seal import backends

    auto = backends.AUTO
    backends.AUTO = ("hf",)
    yield
    backends.AUTO = auto


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def scrambled_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model with larger random layer weights, so that its greedy answers are not empty and depend
    on the whole context (the plain tiny model mostly repeats its last input token)."""
    from seal import models

    model, tokenizer = models.load(str(tiny_model_dir))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.model.layers.named_parameters():
            if "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    path = tmp_path_factory.mktemp("scrambled")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny(tiny_model_dir):
    from seal import models

    return models.load(str(tiny_model_dir))


REAL_CACHE = os.environ.get("SEAL_CACHE", str(Path.home() / ".cache" / "seal"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Tests never touch the user's model cache unless they ask for it with `real_cache`."""
    monkeypatch.setenv("SEAL_CACHE", str(tmp_path / "seal-cache"))


@pytest.fixture
def real_cache(monkeypatch):
    """The user's cache, where the embedded default model is converted once and then reused."""
    monkeypatch.setenv("SEAL_CACHE", REAL_CACHE)
