"""The loss of one update step, computed without holding a whole batch's logits.

On Qwen2.5's 152k-word vocabulary the logits of one position take 0.6 MB in fp32. ReST-EM's M-step (batches of 4
self-edits of about 350 tokens, each after its passage) held about seven [positions, vocab] tensors at once: the
logits, a flattened copy, the log-softmax, their gradients and the base model's logits for the KL term; with the
KL it peaked near this machine's 23 GB (docs/results.md). Here the decoder's last hidden states are gathered at the
positions that predict a label (no prompt, no padding), and the LM head, the log-softmax and the KL run on chunks
of `LOSS_POSITIONS` of them, each recomputed in the backward pass (`checkpoint`), so one chunk's vocabulary-sized
tensors exist at a time. Written here because no library does it on a CPU (fused linear cross-entropy kernels
such as Liger's are Triton, GPU only).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.utils.checkpoint
from peft import PeftModel
from torch import nn

IGNORE = -100
LOSS_POSITIONS = 128  # positions whose [positions, vocab] logits, log-softmaxes and gradients exist at once


def linear_head(model: nn.Module) -> nn.Linear | None:
    """The LM head of a causal LM whose logits are that linear map of its decoder's last hidden state, else None
    (a head with logit scaling or soft-capping, or a model without a separate decoder)."""
    head = model.get_output_embeddings()
    plain = isinstance(head, nn.Linear) and model.base_model is not model and not any(
        getattr(model.config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    return head if plain else None


def states_at(model: nn.Module, batch: dict[str, torch.Tensor], rows: torch.Tensor,
              cols: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(states [n, d], head) at positions (rows[i], cols[i]) only: what the LM head reads there and the map to logits,
    so that the head and the softmax skip every other position. A model whose head is not `linear_head` gives its
    logits there and the identity."""
    causal = model.get_base_model() if isinstance(model, PeftModel) else model  # adapters are injected in place
    head = linear_head(causal)
    if head is None:
        return model(**batch, use_cache=False).logits[rows, cols], nn.Identity()
    return causal.base_model(**batch, use_cache=False).last_hidden_state[rows, cols], head


def labelled_states(model: nn.Module, batch: dict[str, torch.Tensor],
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(states [n, d], targets [n], head) at each position that predicts a label (`states_at`), with the label."""
    rows, cols = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)
    states, head = states_at(model, batch, rows, cols)
    return states, labels[rows, cols + 1], head


def update_loss(model: nn.Module, batch: dict[str, torch.Tensor], labels: torch.Tensor,
                kl_to_base: float = 0.0) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens, plus `kl_to_base` times the mean KL(base || trained)
    of the next-token distributions there, the base being `model` with its adapter switched off.

    Cloning a model's own samples sharpens it toward their common mode (ReST-EM's M-step doubled the words its
    self-edits copy from the passage, benchmarks/mstep_copy.py); the KL keeps the mass the base model spread
    elsewhere: at weight 1 the cloned generator's self-edits copied 19.2 % of their words against 36.9 % without
    it and 18.3 % before the M-step (docs/results.md)."""
    states, targets, head = labelled_states(model, batch, labels)
    base_states = None
    if kl_to_base:
        with torch.no_grad(), model.disable_adapter():
            base_states = labelled_states(model, batch, labels)[0]
    total = states.new_zeros((), dtype=torch.float32)
    for start in range(0, len(targets), LOSS_POSITIONS):
        chunk = slice(start, start + LOSS_POSITIONS)
        base = None if base_states is None else base_states[chunk]
        total = total + torch.utils.checkpoint.checkpoint(
            _chunk_loss, head, states[chunk], targets[chunk], base, kl_to_base, use_reentrant=False)
    return total / max(len(targets), 1)


def _chunk_loss(head, states: torch.Tensor, targets: torch.Tensor, base_states: torch.Tensor | None,
                kl_to_base: float) -> torch.Tensor:
    """Summed cross-entropy (and weighted KL from the base) of one chunk of positions."""
    trained = torch.log_softmax(head(states).float(), dim=-1)
    loss = nn.functional.nll_loss(trained, targets, reduction="sum")
    if base_states is not None:
        with torch.no_grad():
            base = torch.log_softmax(head(base_states).float(), dim=-1)
        loss = loss + kl_to_base * nn.functional.kl_div(trained, base, log_target=True, reduction="sum")
    return loss
