"""Typed configuration: dataclasses with defaults, YAML files, dotted command-line overrides.

Every run saves the fully resolved config next to its results, so a run can be repeated exactly.
Unknown keys and values of the wrong type are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def bounded(default: Any, **bounds: float) -> Any:
    """A field whose loaded values must lie within `bounds` (ge / gt / le / lt), checked by `from_dict`."""
    return field(default=default, metadata={"bounds": bounds})


_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}


@dataclass
class ModelConfig:
    """Which model to load: an embedded registry name, a Hugging Face id, or a local directory."""

    # the default model (seal.models.DEFAULT_MODEL). Qwen2.5-0.5B learns what it writes about a document,
    # SmolLM2-135M much less: with the default self-edit, four fictional documents went from 0 to 66.7 %
    # closed-book on Qwen and to 20.8 % on SmolLM2 (benchmarks/learn_fictional.py), and the service's story
    # passes on Qwen only (benchmarks/serve_story.py).
    name: str = "qwen2.5-coder-0.5b-instruct"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # auto: bfloat16 on a CUDA device or a CPU with AMX, fp32 elsewhere (models.pick_dtype)
    # the engine that generates (seal.backends): auto = llamacpp when installed and the model is on the CPU, else hf
    backend: Literal["auto", "hf", "llamacpp", "vllm"] = "auto"
    # llamacpp's weights: written from the torch model in this type, or the embedded model's own GGUF file
    # (faster, but its quantised matmuls change most greedy answers; see seal/backends/llamacpp.py)
    llamacpp_weights: Literal["f16", "f32", "q8_0", "embedded"] = "f16"


@dataclass
class SamplingConfig:
    """How self-edits are sampled from the generator. `structured`: fill in the domain's self-edit template
    choice by choice (`generation.fill_in`) instead of free generation; top_p and max_new_tokens then
    do not apply. `answers`: who answers the questions of a structured self-QA (see
    KnowledgeDomain.write_self_edits): the scaffold, the model open book, or the model open book where it
    agrees with the scaffold."""

    structured: bool = False
    answers: Literal["scaffold", "open-book", "checked"] = "scaffold"
    temperature: float = bounded(1.0, ge=0)
    top_p: float = bounded(0.95, gt=0, le=1)
    max_new_tokens: int = bounded(320, ge=1)
    num_samples: int = bounded(1, ge=1)
    pieces: int = bounded(1, ge=1)  # samples joined into one self-edit (trained together in one update)
    batch_size: int = bounded(8, ge=1)

    def __post_init__(self):
        if self.answers != "scaffold" and not self.structured:
            raise ConfigError(f"sampling.answers={self.answers} needs sampling.structured=true (it decides who "
                              "answers the questions of a structured self-QA)")


# The self-edit the knowledge commands (learn, demo, bench knowledge, train, memory) write by default: three lists
# of implications sampled freely, trained together in one update (with the passage, at inner.lr 3e-4). On
# Qwen2.5-0.5B, SQuAD evaluation passages 18-39 (docs/results.md, "Where it stands"), it beat the passage under
# the same update by +18.2 points (38.4 vs 20.2 %, paired 95 % interval +8.8 to +27.5, n=22) and matched the
# passage at its own best lr (1e-3: 40.0 %) with a third of its recitation; one list alone gained +6.8 (not
# significant). Question-answer items (the self-qa prompt) train as chat turns with the loss on the answer.
KNOWLEDGE_PROMPT = "implications"
KNOWLEDGE_QA_FORMAT = "chat"
# Items that copy a 10-word run of the document are trained too (KnowledgeDomain.drop_copied; docs/results.md).
KNOWLEDGE_DROP_COPIED = False


def knowledge_sampling() -> SamplingConfig:
    return SamplingConfig(temperature=1.0, pieces=3)


@dataclass
class InnerConfig:
    """The inner loop: one fresh LoRA adapter trained on one update plan, then deleted.

    The paper's r32 / lr 1e-3 / 10 epochs were tuned for a 7B model with padding inside the loss. Ours
    come from `benchmarks/sweep_inner.py` on the default model, Qwen2.5-Coder-0.5B (5 tuning passages
    outside the evaluation set, 17 questions, rank 16, batch 4, lr 1e-3 / 3e-3 x 3 / 6 / 10 epochs): lr 1e-3
    with 6 epochs put passage + own self-edit first (28.3 %; passage alone 41.7 %); at lr 3e-3 with 10
    epochs its own self-edits scored 5.0 %. That sweep graded whole generations, which credits recitation; under
    the answer protocol lr 1e-3 makes the passage alone recite (46 % of answers on evaluation passages 18-39), and
    at lr 3e-4 the default self-edit (three implication lists) beats the passage (see `knowledge_sampling`), so
    3e-4 is the default. SmolLM2-135M's sweep chose lr 3e-3 with 10 epochs, and rank 16 over 8 and 32: the
    shipped config `smollm2-135m-instruct` (`seal/configs/`).
    """

    # lora: a fresh adapter per update | full: every weight trained, then restored from a copy (the
    # multi-passage setting's continued pretraining; needs a much smaller lr of its own; no adapter is saved)
    method: Literal["lora", "full"] = "lora"
    rank: int = bounded(16, ge=1)
    alpha: int = bounded(32, ge=1)
    dropout: float = bounded(0.0, ge=0, lt=1)
    # module names, or one layer's (`layers.12.mlp.down_proj`: names match as suffixes, as in peft); adapters on
    # the top layers only leave the layers below out of the backward pass (fewer FLOPs; measured in docs/results.md)
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    lr: float = bounded(3e-4, gt=0)
    # lr over an update's steps: constant, or linear / cosine decay to 0 after `warmup` (a fraction of the
    # steps rising linearly from 0). Decay keeps long updates (the multi-passage setting) from drifting.
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup: float = bounded(0.0, ge=0, lt=1)
    epochs: int = bounded(6, ge=1)
    batch_size: int = bounded(4, ge=1)
    max_length: int = bounded(384, ge=2)
    max_sequences: int = bounded(64, ge=1)
    weight_decay: float = bounded(0.0, ge=0)
    seed: int = 0
    parallel: int = bounded(4, ge=1)  # candidate updates trained and scored together (seal.inner.batched)
    # the matmuls of an update's forward and backward passes: float32, or bfloat16 under torch autocast (the weights
    # stay as loaded, so the self-edits sampled and the answers generated do not change); auto: bfloat16 on a CPU
    # with AMX or a CUDA device with bf16, float32 elsewhere (seal.inner.lora.train_precision; docs/results.md)
    train_dtype: Literal["auto", "float32", "bfloat16"] = "float32"


@dataclass
class EvalConfig:
    """Closed-book question answering after (or without) an update. Only an answer's first sentence (at
    most 24 words) is graded, so 32 new tokens hold it."""

    max_new_tokens: int = bounded(32, ge=1)
    batch_size: int = bounded(16, ge=1)
    grader: str = "default"


@dataclass
class LearnConfig:
    """`seal learn`: make a model learn a document through its own self-edit, keep it if it helped."""

    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: str = KNOWLEDGE_PROMPT
    qa_format: Literal["text", "chat"] = KNOWLEDGE_QA_FORMAT  # how question-answer items train: see KnowledgeDomain
    drop_copied: bool = KNOWLEDGE_DROP_COPIED  # train no self-edit item that copies the document: see KnowledgeDomain
    sampling: SamplingConfig = field(default_factory=knowledge_sampling)
    inner: InnerConfig = field(default_factory=InnerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    gate: bool = True  # keep the adapter only if it beat the baseline
    resample: int = bounded(2, ge=0)  # times an unusable self-edit is replaced by a fresh sample
    seed: int = 0


C = TypeVar("C")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_coerce(k, key_type, where): _coerce(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _deep_update(base: dict, data: dict) -> dict:
    out = dict(base)
    for key, value in data.items():
        out[key] = _deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _on_field_default(f: dataclasses.Field, value: Any) -> Any:
    """A partial mapping for a nested config whose parent gives it its own defaults (a default_factory, e.g.
    a benchmark's memory settings) applies on top of those defaults, not on the nested class's."""
    if isinstance(value, dict) and f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
        if dataclasses.is_dataclass(default):
            return _deep_update(to_dict(default), value)
    return value


def from_dict(cls: type[C], data: dict, where: str = "config") -> C:
    """Build a config dataclass from a (partial) mapping; missing keys keep their defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(names)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {k: _coerce(_on_field_default(fields[k], v), hints[k], f"{where}.{k}") for k, v in data.items()}
    for f in dataclasses.fields(cls):
        for name, bound in f.metadata.get("bounds", {}).items():
            ok, op = _BOUNDS[name]
            value = kwargs.get(f.name)  # None: unset (e.g. max_tasks); NaN fails every bound
            if value is not None and not ok(value, bound):
                raise ConfigError(f"{where}.{f.name}: {value!r} is out of range (must be {op} {bound})")
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML scalars) to a nested mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return data


SHIPPED = Path(__file__).parent / "configs"


def shipped_configs() -> list[str]:
    """Names of the config files that come with seal (per-model settings chosen by the sweeps)."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """A YAML file's path, or the name of a shipped config (`--config smollm2-135m-instruct`)."""
    path = Path(name)
    if path.exists() or str(name) not in shipped_configs():
        return path
    return SHIPPED / f"{name}.yaml"


# Settings whose default changed after runs were recorded without them: a run's saved config that lacks one
# ran with the value here, not today's default (sampling.answers came in as "scaffold", later became "checked";
# sampling.pieces came in as 3; a memory's probe was compared with the parent version's before probe.against).
RECORDED_BEFORE = {"sampling": {"answers": "scaffold", "pieces": 1}, "probe": {"against": "parent"}}


def as_recorded(data: dict) -> dict:
    """A run's saved config `data`, with each setting it predates set to what the run did; also in the memory
    settings a bench or service config holds under `memory`."""
    out = {**data, **{section: {**keys, **data[section]} for section, keys in RECORDED_BEFORE.items()
                      if isinstance(data.get(section), dict)}}
    if isinstance(data.get("memory"), dict):
        out["memory"] = as_recorded(data["memory"])
    return out


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Defaults <- YAML file (or shipped config) <- overrides, validated against `cls`. A run's own config.yaml
    (beside its metrics.jsonl) is read `as_recorded`."""
    data: dict = {}
    if path is not None:
        path = config_path(path)
        if not path.exists():
            raise ConfigError(f"no config file {path}; shipped configs: {', '.join(shipped_configs())}")
        if path.is_dir():
            raise ConfigError(f"config {path} is a directory; give a YAML file or a shipped config's name")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.MarkedYAMLError as e:
            mark, context = e.problem_mark or e.context_mark, ""
            if e.context and e.context_mark and e.problem_mark:  # e.g. where the unclosed bracket opened
                context = f" ({e.context} from line {e.context_mark.line + 1}, column {e.context_mark.column + 1})"
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise ConfigError(f"{where}: invalid YAML: {e.problem or e.context}{context}") from e
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping at top level")
        data = loaded or {}
        if (path.parent / "metrics.jsonl").exists():
            data = as_recorded(data)
    return from_dict(cls, apply_overrides(data, overrides or []))


def save_config(config: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
