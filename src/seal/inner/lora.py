"""The inner loop: train one fresh LoRA adapter on an update plan, use it, then remove it.

Each update injects a new adapter into the base model and unloads it afterwards, so the base model is
restored exactly and memory stays flat over hundreds of updates (the reference code re-wrapped the
same model with `get_peft_model` on every request and padded every sequence to 2,048 tokens with the
padding inside the loss; here batches are padded to their longest row and padding carries no loss).
`fresh_update` also offers full finetuning (`method: full`): every weight trained, then restored from a copy.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from seal.config import ConfigError, InnerConfig
from seal.domains.base import Example, UpdateError, UpdatePlan
from seal.generation import chat_prompt
from seal.inner.loss import IGNORE, update_loss
from seal.models import bf16_is_fast


@dataclass
class TrainReport:
    """What one inner-loop update did, for the run record."""

    examples: int
    steps: int
    epochs: int
    lr: float
    tokens: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def tokenize_examples(tokenizer, examples: list[Example], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example: prompt tokens are labelled IGNORE, completions end with EOS; a chat
    example's prompt is its user turn in the tokenizer's chat template. A completion token that overlaps one of the
    example's `unlearned` spans is labelled IGNORE too."""
    rows = []
    for ex in examples:
        text = chat_prompt(tokenizer, ex.prompt) if ex.chat else ex.prompt
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        completion, learned = _completion_tokens(tokenizer, ex)
        ids = (prompt + completion)[:max_length]
        labels = ([IGNORE] * len(prompt) + [t if keep else IGNORE for t, keep in zip(completion, learned)])[:max_length]
        if all(label == IGNORE for label in labels):
            continue  # the prompt alone filled max_length: nothing left to learn from this row
        rows.append((ids, labels))
    return rows


def _completion_tokens(tokenizer, ex: Example) -> tuple[list[int], list[bool]]:
    """A completion's token ids, EOS appended, and per token whether it is learned (outside `ex.unlearned`)."""
    if not ex.unlearned:
        ids = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
        return ids + [tokenizer.eos_token_id], [True] * (len(ids) + 1)
    if not tokenizer.is_fast:
        raise UpdateError("unlearned spans need a fast tokenizer (its offsets map tokens to characters)")
    encoded = tokenizer(ex.completion, add_special_tokens=False, return_offsets_mapping=True)
    learned = [not any(start < span_end and span_start < end for span_start, span_end in ex.unlearned)
               for start, end in encoded["offset_mapping"]]
    return encoded["input_ids"] + [tokenizer.eos_token_id], learned + [True]


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest row; padding is masked out of attention and loss."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "labels": labels.to(device), "attention_mask": attention.to(device)}


def check_target_modules(model, cfg: InnerConfig) -> None:
    """Raise ConfigError unless each of `inner.target_modules` names modules of `model` (PEFT matches a name
    or the end of a dotted path), so that a typo fails before the baseline, not at the first update."""
    if cfg.method != "lora":
        return
    if not cfg.target_modules:
        raise ConfigError("inner.target_modules is empty; name at least one module, e.g. q_proj,v_proj")
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in cfg.target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"inner.target_modules: {model.config.name_or_path} has no module named "
                          f"{', '.join(map(repr, missing))}; its linear layers are {', '.join(linear)}")


def lora_config(cfg: InnerConfig) -> LoraConfig:
    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def lr_factor(cfg: InnerConfig, step: int, total: int) -> float:
    """Multiplier of the update's lr at 0-based `step` of `total` (cfg.lr_schedule after cfg.warmup).

    Written here rather than taken from transformers' schedulers because the batched trainer needs one
    multiplier per candidate inside a single optimizer, which a LambdaLR per optimizer cannot give; the
    decays match transformers' linear and cosine ones, and warmup starts above 0 so no step is wasted."""
    warmup = math.ceil(cfg.warmup * total)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(total - warmup, 1)
    if cfg.lr_schedule == "linear":
        return 1.0 - progress
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise UpdateError(f"unknown lr_schedule {cfg.lr_schedule!r}")


def prepare(tokenizer, plan: UpdatePlan, cfg: InnerConfig) -> tuple[float, int, list[tuple[list[int], list[int]]]]:
    """(lr, epochs, tokenized rows) of an update; the plan may override lr and epochs. Raises UpdateError."""
    lr = plan.lr if plan.lr is not None else cfg.lr
    epochs = plan.epochs if plan.epochs is not None else cfg.epochs
    if epochs < 1 or not lr > 0:
        raise UpdateError(f"invalid update hyperparameters: lr={lr}, epochs={epochs}")
    rows = tokenize_examples(tokenizer, plan.examples, cfg.max_length)
    if not rows:
        raise UpdateError("the update plan has no trainable tokens")
    return lr, epochs, rows


def train_precision(cfg: InnerConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to bfloat16 around an update's passes where `cfg.train_dtype` asks for it (`auto`: where bf16
    matmuls are fast): the frozen weights stay as loaded (fp32 on a CPU) and are cast per matmul, the adapters
    and their optimizer stay fp32. With AMX, K = 4 updates of Qwen trained 1.58x faster (docs/results.md)."""
    wanted = cfg.train_dtype == "bfloat16" or (cfg.train_dtype == "auto" and bf16_is_fast(device))
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=wanted)


def train(
    model: PeftModel,
    tokenizer,
    plan: UpdatePlan,
    cfg: InnerConfig,
    on_step: Callable[[int, int, float], None] | None = None,
    kl_to_base: float = 0.0,
) -> TrainReport:
    """Train the active adapter of `model` on `plan` with AdamW; the plan may override lr and epochs.
    `kl_to_base` > 0 adds that multiple of the KL from the base model, the adapter switched off (`update_loss`)."""
    lr, epochs, rows = prepare(tokenizer, plan, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    batches_per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = batches_per_epoch * epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, total))
    report = TrainReport(len(rows), 0, epochs, lr, sum(len(ids) for ids, _ in rows) * epochs, 0.0)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(rows), generator=generator).tolist()
        for b in range(batches_per_epoch):
            batch = collate([rows[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]],
                            tokenizer.pad_token_id, model.device)
            labels = batch.pop("labels")
            with train_precision(cfg, model.device):
                loss = update_loss(model, batch, labels, kl_to_base)
            if not torch.isfinite(loss):
                raise UpdateError(f"non-finite training loss at step {report.steps}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            report.steps += 1
            report.losses.append(loss.item())
            if on_step:
                on_step(report.steps, total, report.losses[-1])
    model.eval()
    report.seconds = time.perf_counter() - start
    return report


@contextlib.contextmanager
def fresh_adapter(model, cfg: InnerConfig) -> Iterator[PeftModel]:
    """Inject a new, seeded LoRA adapter into `model`; on exit remove it and restore the base model."""
    requires_grad = [p.requires_grad for p in model.parameters()]
    training = model.training
    torch.manual_seed(cfg.seed)
    peft_model = get_peft_model(model, lora_config(cfg))  # freezes every base parameter
    try:
        yield peft_model
    finally:
        peft_model.unload()  # replaces every LoRA layer by its original module; adapter memory is freed
        for p, flag in zip(model.parameters(), requires_grad):  # so the base stays trainable (e.g. ReST-EM SFT)
            p.requires_grad_(flag)
        model.train(training)


@contextlib.contextmanager
def full_weights(model) -> Iterator:
    """Make every weight of `model` trainable; on exit restore the weights, flags and mode it had."""
    saved = {name: p.detach().clone() for name, p in model.named_parameters()}
    requires_grad = [p.requires_grad for p in model.parameters()]
    training = model.training
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(saved.pop(name))
                p.grad = None
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
        model.train(training)


def fresh_update(model, cfg: InnerConfig):
    """The model to train for one update, as a context manager: a fresh adapter (cfg.method lora) or the
    model's own weights (full); either way the base model is exactly restored on exit."""
    if cfg.method == "full":
        torch.manual_seed(cfg.seed)
        return full_weights(model)
    return fresh_adapter(model, cfg)


def save_adapter(peft_model: PeftModel, path: Path) -> None:
    """Save the active adapter in PEFT format (adapter_config.json + adapter_model.safetensors)."""
    peft_model.save_pretrained(path)


def load_adapter(model, path: str | Path) -> PeftModel:
    """Wrap `model` with a saved PEFT adapter for inference."""
    return PeftModel.from_pretrained(model, str(path)).eval()


def merge_adapter(model, path: str | Path):
    """Fold a saved adapter into the base weights (a permanent, non-removable update)."""
    return load_adapter(model, path).merge_and_unload()
