"""The torch model's weights and LoRA adapters written as GGUF files that llama.cpp loads.

llama.cpp reads GGUF only, and seal's models live as torch modules whose weights change (a trained
generator, a full finetune), so the weights are written from the module itself with the `gguf` package's
writer and tensor-name map. Tokens never pass through llama.cpp's tokenizer (seal feeds token ids from
the HF tokenizer), so the file carries no vocabulary: `tokenizer.ggml.model = no_vocab` and the vocab size.

Written by hand because no library converts an in-memory torch model: the metadata below and one
permutation. llama.cpp's `llama` architecture rotates adjacent pairs of each head's q/k channels, HF's
Llama rotates the two halves, so q/k rows (and LoRA B rows of q/k) are reordered into pairs; `qwen2`
rotates halves like HF and needs nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

ARCHS = {"llama": ("LLAMA", True), "qwen2": ("QWEN2", False)}  # HF model_type -> (gguf arch, permute q/k)
WEIGHT_TYPES = ("f32", "f16", "q8_0")


def unsupported(config) -> str | None:
    """Why this HF config cannot be written for llama.cpp, or None."""
    if config.model_type not in ARCHS:
        return f"architecture {config.model_type!r} is not one of {sorted(ARCHS)}"
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"rope scaling {rope.get('rope_type')!r} is not supported"
    return None


def _hf_name(name: str) -> str:
    """A parameter's name in the plain HF model, whatever adapter wrapper holds it."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


def base_parameters(model) -> dict[str, torch.Tensor]:
    """The model's own weights (no adapter weights) under their plain HF names."""
    return {_hf_name(n): p for n, p in model.named_parameters() if "lora_" not in n}


SAMPLED_VALUES = 4096  # per weight, in `signature`


def signature(model) -> tuple:
    """Changes whenever a base weight does. Torch bumps a parameter's `_version` on an in-place write, but not
    on one through `.data`, which is how peft merges an adapter into the weights (`merge_adapter`,
    `merge_and_unload`): a merge changes every element of a weight, so a few thousand of its values, spread
    over it, are part of the signature too (about 4 ms a call on the default model, against 0.1 s to sum it all)."""
    return tuple((n, id(p), p.data_ptr(), p._version, _sampled(p)) for n, p in base_parameters(model).items())


def _sampled(p: torch.Tensor) -> bytes:
    flat = p.detach().reshape(-1)
    sample = flat[:: max(1, flat.numel() // SAMPLED_VALUES)]
    return hashlib.blake2b(sample.float().cpu().numpy().tobytes(), digest_size=16).digest()


def _arch(config):
    import gguf

    arch_name, permute = ARCHS[config.model_type]
    return getattr(gguf.MODEL_ARCH, arch_name), permute


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def to_pairs(w: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a q/k projection from HF's halves layout to llama.cpp's adjacent pairs, per head."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _layout(name: str, w: np.ndarray, config, permute: bool) -> np.ndarray:
    if permute and ".self_attn.q_proj." in name:
        return to_pairs(w, config.num_attention_heads)
    if permute and ".self_attn.k_proj." in name:
        return to_pairs(w, config.num_key_value_heads)
    return w


def _writer(path: Path, config):
    import gguf

    arch, _ = _arch(config)
    return gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch]), gguf.get_tensor_name_map(arch, config.num_hidden_layers)


def write_model(model, path: Path, weight_type: str = "f16") -> Path:
    """Write the model's current base weights as a GGUF llama.cpp can load (2-D weights in `weight_type`)."""
    import gguf

    config = model.config
    _, permute = _arch(config)
    writer, names = _writer(path, config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(_head_dim(config))
    writer.add_value_length(_head_dim(config))
    writer.add_rope_dimension_count(_head_dim(config))
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("no_vocab")
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[weight_type])
    for name, param in base_parameters(model).items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"no GGUF name for the weight {name}")
        w = _layout(name, param.detach().float().cpu().numpy(), config, permute)
        if w.ndim == 1 or weight_type == "f32":
            writer.add_tensor(gguf_name, np.ascontiguousarray(w, dtype=np.float32))
        elif weight_type == "f16":
            writer.add_tensor(gguf_name, np.ascontiguousarray(w, dtype=np.float16))
        else:
            q = gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(gguf_name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    _finish(writer)
    return path


def write_lora(config, layers: dict[str, tuple[torch.Tensor, torch.Tensor]], scaling: float, path: Path) -> Path:
    """Write one LoRA adapter: `layers` maps an HF module name to (A [r, in], B [out, r]); y += scaling * B A x."""
    _, permute = _arch(config)
    writer, names = _writer(path, config)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    rank = next(iter(layers.values()))[0].shape[0]
    writer.add_float32("adapter.lora.alpha", float(scaling * rank))  # llama.cpp scales by alpha / rank
    for module, (a, b) in layers.items():
        gguf_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if gguf_name is None:
            raise ValueError(f"no GGUF name for the adapted module {module}")
        writer.add_tensor(gguf_name + ".lora_a", np.ascontiguousarray(a.detach().float().cpu().numpy()))
        b = _layout(module + ".", b.detach().float().cpu().numpy(), config, permute)
        writer.add_tensor(gguf_name + ".lora_b", np.ascontiguousarray(b))
    _finish(writer)
    return path


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
