"""ARC self-edits: the JSON config a model writes to set up its own test-time training.

``parse_self_edit`` turns messy model text into an ``ArcSelfEdit`` or a
``Rejection`` carrying a readable reason. No text makes it raise (each way
text can fail is handled by name) and it never retries: a rejected self-edit
is an ordinary outcome (it earns no reward), and the reason is logged for
whoever reads the run. A bug in the parser is a traceback, not a rejection.

Accepted text: the first JSON object in the text (code fences and prose around
it are ignored), flat or nested one level deep (SEAL writes
``{"data_generation": {...}, "training": {...}}``), with keys matched after
lower-casing and mapping spaces / dashes to underscores, and common aliases
(``lr``, ``epochs``, ``basic_augmentations``...). Unknown keys are ignored.
Values are checked strictly: flags must be JSON booleans, the learning rate a
number, the epoch count an integer.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Literal

from seal.domains.arc.augment import AUGMENTATION_GROUPS

Strategy = Literal["all", "output"]


@dataclass(frozen=True)
class ArcSelfEdit:
    """Which augmentation groups to generate, which tokens carry the loss, and the optimiser settings."""

    use_basic_augmentations: bool
    use_size_augmentations: bool
    use_chain_augmentations: bool
    use_repeat_augmentations: bool
    strategy: Strategy
    learning_rate: float
    num_train_epochs: int

    @property
    def augmentation_groups(self) -> tuple[str, ...]:
        """Enabled groups by name, in ``augment.AUGMENTATION_GROUPS`` order (for ``augment_task``)."""
        return tuple(g for g in AUGMENTATION_GROUPS if getattr(self, f"use_{g}_augmentations"))


@dataclass(frozen=True)
class Rejection:
    """Why a self-edit cannot be run."""

    reason: str


@dataclass(frozen=True)
class SelfEditLimits:
    """Bounds on what a self-edit may ask for; ``max_steps`` is the optimiser-step budget per task."""

    min_learning_rate: float = 1e-6
    max_learning_rate: float = 1e-2
    min_epochs: int = 1
    max_epochs: int = 10
    max_steps: int = 1000
    batch_size: int = 1


DEFAULT_LIMITS = SelfEditLimits()

_FLAGS = tuple(f"use_{g}_augmentations" for g in AUGMENTATION_GROUPS)
_FIELDS = (*_FLAGS, "strategy", "learning_rate", "num_train_epochs")
_ALIASES = {
    **{alias: f"use_{g}_augmentations" for g in AUGMENTATION_GROUPS for alias in (
        f"use_{g}_augmentations", f"use_{g}_augmentation", f"{g}_augmentations", f"{g}_augmentation",
        f"use_{g}", g,
    )},
    **{alias: "strategy" for alias in ("strategy", "training_strategy", "train_strategy")},
    **{alias: "learning_rate" for alias in ("learning_rate", "lr", "learningrate")},
    **{alias: "num_train_epochs" for alias in (
        "num_train_epochs", "num_epochs", "epochs", "train_epochs", "n_epochs",
    )},
}
_STRATEGIES: dict[str, Strategy] = {
    **{s: "all" for s in ("all", "all_tokens", "train_using_all_tokens")},
    **{s: "output" for s in (
        "output", "outputs", "output_tokens", "output_only", "train_using_output_tokens",
    )},
}
_CANONICAL_STRATEGY = {"all": "train_using_all_tokens", "output": "train_using_output_tokens"}


def _normalise_key(key: str) -> str:
    return key.strip().lower().replace("-", "_").replace(" ", "_")


class _Undecodable(Exception):
    """JSON that the decoder cannot hold (not merely malformed): the self-edit is rejected with this reason."""


def _malformed(error: json.JSONDecodeError) -> Rejection:
    return Rejection(f"malformed JSON: {error.msg} at character {error.pos}")


def _first_json_object(text: str) -> tuple[dict | None, json.JSONDecodeError | None]:
    """The first ``{...}`` in ``text`` that decodes to a JSON object, and the decode error enclosing it.

    Of the earlier ``{`` that failed to decode, the error reported is the one
    that got furthest, and only if it got past the returned object's start
    (the object then sits inside a broken one). With no object, it is the
    furthest error, most likely the model's attempt at the config.
    """
    decoder = json.JSONDecoder()
    furthest = None
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            furthest = exc if furthest is None or exc.pos > furthest.pos else furthest
        except (ValueError, RecursionError) as exc:  # an integer past Python's digit limit; nesting past the stack
            raise _Undecodable(f"undecodable JSON at character {start}: {type(exc).__name__}") from exc
        else:
            if isinstance(value, dict):
                return value, furthest if furthest is not None and furthest.pos > start else None
        start = text.find("{", start + 1)
    return None, furthest


def _collect_fields(obj: dict) -> dict | Rejection:
    """Map the object's keys (and those of nested objects, one level down) onto field names."""
    items = []
    for key, value in obj.items():
        if isinstance(value, dict):
            items.extend(value.items())
        else:
            items.append((key, value))
    fields: dict = {}
    for key, value in items:
        name = _ALIASES.get(_normalise_key(str(key)))
        if name is None:
            continue
        if name in fields and fields[name] != value:
            return Rejection(f"conflicting values for {name}: {fields[name]!r} and {value!r}")
        fields[name] = value
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        return Rejection(f"missing keys: {', '.join(missing)}")
    return fields


def _validate(fields: dict, limits: SelfEditLimits) -> ArcSelfEdit | Rejection:
    for flag in _FLAGS:
        if not isinstance(fields[flag], bool):
            return Rejection(f"{flag} must be true or false, got {fields[flag]!r}")
    raw_strategy = fields["strategy"]
    strategy = _STRATEGIES.get(_normalise_key(raw_strategy)) if isinstance(raw_strategy, str) else None
    if strategy is None:
        return Rejection(f"strategy must be one of {sorted(_STRATEGIES)}, got {raw_strategy!r}")
    lr = fields["learning_rate"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or isinstance(lr, float) and not math.isfinite(lr):
        return Rejection(f"learning_rate must be a finite number, got {lr!r}")
    if not -1e308 < lr < 1e308:  # an integer too large for a float (compared exactly, without converting)
        return Rejection(f"learning_rate is a {len(str(abs(lr)))}-digit integer, far outside the allowed range")
    if not limits.min_learning_rate <= lr <= limits.max_learning_rate:
        return Rejection(
            f"learning_rate {lr:g} is outside [{limits.min_learning_rate:g}, {limits.max_learning_rate:g}]"
        )
    epochs = fields["num_train_epochs"]
    if isinstance(epochs, float) and epochs.is_integer():
        epochs = int(epochs)
    if isinstance(epochs, bool) or not isinstance(epochs, int):
        return Rejection(f"num_train_epochs must be an integer, got {epochs!r}")
    if not limits.min_epochs <= epochs <= limits.max_epochs:
        return Rejection(f"num_train_epochs {epochs} is outside [{limits.min_epochs}, {limits.max_epochs}]")
    return ArcSelfEdit(*(fields[f] for f in _FLAGS), strategy, float(lr), epochs)


def parse_self_edit(text: str, limits: SelfEditLimits = DEFAULT_LIMITS) -> ArcSelfEdit | Rejection:
    """Read a self-edit from model text; a ``Rejection`` (never an exception) if it is unusable.

    Checks types and the learning-rate and epoch ranges of ``limits``; the
    step budget depends on how many examples the edit generates, so it is
    checked separately by ``check_budget``.
    """
    try:
        obj, error = _first_json_object(text)
    except _Undecodable as exc:
        return Rejection(str(exc))
    if obj is None:
        return Rejection("no JSON object found in the text") if error is None else _malformed(error)
    fields = _collect_fields(obj)
    result = fields if isinstance(fields, Rejection) else _validate(fields, limits)
    # An object nested in a broken one decodes on its own; the broken outer JSON is the real fault.
    return _malformed(error) if isinstance(result, Rejection) and error is not None else result


def estimate_steps(edit: ArcSelfEdit, n_examples: int, batch_size: int = 1) -> int:
    """Optimiser steps to train ``num_train_epochs`` epochs over ``n_examples`` examples."""
    return math.ceil(n_examples / batch_size) * edit.num_train_epochs


def check_budget(
    edit: ArcSelfEdit, n_examples: int, limits: SelfEditLimits = DEFAULT_LIMITS
) -> ArcSelfEdit | Rejection:
    """``edit`` if training on ``n_examples`` fits in ``limits.max_steps``, else a Rejection stating the cost."""
    steps = estimate_steps(edit, n_examples, limits.batch_size)
    if steps > limits.max_steps:
        return Rejection(
            f"too expensive: {edit.num_train_epochs} epochs x {n_examples} examples "
            f"(batch {limits.batch_size}) = {steps} steps > budget of {limits.max_steps}"
        )
    return edit


def render_self_edit(edit: ArcSelfEdit) -> str:
    """Canonical JSON for ``edit`` in SEAL's nested layout, a behaviour-cloning target that parses back to it."""
    fields = asdict(edit)
    return json.dumps(
        {
            "data_generation": {flag: fields[flag] for flag in _FLAGS},
            "training": {
                "strategy": _CANONICAL_STRATEGY[edit.strategy],
                "learning_rate": edit.learning_rate,
                "num_train_epochs": edit.num_train_epochs,
            },
        }
    )


LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # the choices of a filled-in self-edit


def self_edit_template(limits: SelfEditLimits = DEFAULT_LIMITS) -> list[tuple[str, tuple[str, ...]]]:
    """The flat JSON self-edit of the prompt's example as fixed text and choices (see `generation.fill_in`):
    each flag true or false, either strategy, a learning rate of ``LEARNING_RATES`` within the limits, any
    epoch count within them. Every filling parses; one may still be over the step budget."""
    rates = [r for r in LEARNING_RATES if limits.min_learning_rate <= r <= limits.max_learning_rate]
    return [
        *((("{" if n == 0 else ", ") + f'"{flag}":', (" true", " false")) for n, flag in enumerate(_FLAGS)),
        (', "strategy":', tuple(f' "{name}"' for name in _CANONICAL_STRATEGY.values())),
        (', "learning_rate":', tuple(f" {json.dumps(r)}" for r in rates)),
        (', "num_train_epochs":', tuple(f" {n}" for n in range(limits.min_epochs, limits.max_epochs + 1))),
        ("}", ()),
    ]
