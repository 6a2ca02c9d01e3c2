"""Generation behind one interface: which engine runs is known here and nowhere else.

Callers go through `seal.generation` (generate, fill_in, loglik, next_token_logprobs, sample_self_edits),
which asks `for_model(model)` for the backend chosen when the model was loaded (`model.backend` in the config):

- `hf`: transformers' own forward passes; the reference every other backend is measured against.
- `llamacpp`: llama.cpp on the CPU (llama-cpp-python's low-level API) over a GGUF of the very weights the
  torch model holds, with each LoRA adapter exported as a GGUF LoRA (`scripts/setup.sh --with-llamacpp`).
- `vllm`: vLLM on a GPU, one `LoRARequest` per adapter (`pip install vllm`).
- `auto`: llamacpp when it is installed, the model sits on the CPU and its architecture is supported;
  hf otherwise. `AUTO` lists the candidates in order (the test suite pins it to hf, so that its exact
  comparisons with torch forward passes hold whichever engines a machine has).

The model stays the torch module callers already hold: adapters are whatever it carries (a peft LoRA, or
`seal.inner.batched`'s per-row adapters), so no caller changes when the engine does.
"""

from __future__ import annotations

import importlib.util
import weakref

from seal.backends.base import Backend, BackendError

NAMES = ("hf", "llamacpp", "vllm")
CHOICES = ("auto", *NAMES)
AUTO = ("llamacpp", "hf")  # tried in order by `auto`
_MODULES = {"llamacpp": "llama_cpp", "vllm": "vllm"}
_INSTALL = {"llamacpp": "bash scripts/setup.sh --with-llamacpp", "vllm": "pip install vllm (a CUDA machine)"}
_chosen: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_instances: dict[str, Backend] = {}


def installed(name: str) -> bool:
    module = _MODULES.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def _create(name: str) -> Backend:
    if name not in _instances:
        if name == "hf":
            from seal.backends.hf import HFBackend as cls
        elif name == "llamacpp":
            from seal.backends.llamacpp import LlamaCppBackend as cls
        else:
            from seal.backends.vllm import VLLMBackend as cls
        _instances[name] = cls()
    return _instances[name]


def require(name: str) -> None:
    """Raise BackendError for an unknown backend name or a named backend that is not installed (checked
    before a model is loaded, so that the error comes first)."""
    if name not in CHOICES:
        raise BackendError(f"unknown backend {name!r}; choose from {', '.join(CHOICES)}")
    if name != "auto" and not installed(name):
        raise BackendError(f"backend {name!r} is selected but not installed; install it with: {_INSTALL[name]}")


def resolve(name: str, model) -> str:
    """The backend `name` stands for with this model; a named backend that cannot run raises BackendError."""
    require(name)
    if name == "auto":
        for candidate in AUTO:
            if installed(candidate) and _create(candidate).supports(model) is None:
                return candidate
        return "hf"
    reason = _create(name).supports(model)
    if reason is not None:
        raise BackendError(f"backend {name!r} cannot run this model: {reason}")
    return name


def attach(model, name: str = "auto", **options) -> str:
    """Make `model` generate through backend `name` (resolved as in `resolve`); returns the resolved name."""
    resolved = resolve(name, model)
    backend = _create(resolved)
    backend.attach(model, **options)
    _chosen[model] = resolved
    return resolved


def for_model(model) -> Backend:
    """The backend `model` was attached to; hf for a model nobody attached (built by hand, wrapped by peft)."""
    base = getattr(model, "get_base_model", None)
    for candidate in (model, base() if callable(base) else None):
        if candidate is not None and candidate in _chosen:
            return _create(_chosen[candidate])
    return _create("hf")


__all__ = ["AUTO", "Backend", "BackendError", "CHOICES", "attach", "for_model", "installed", "require", "resolve"]
