"""llama.cpp's low-level C API, wrapped for seal's backend: one mmapped model, one context, its LoRAs.

Kept apart from `llamacpp.py` (token choice, templates, adapter bookkeeping) because this is the only
code that touches ctypes: batches, KV-cache cells and adapter handles live and die here.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from seal.backends.base import BackendError

MAX_ADAPTERS = 16  # GGUF LoRAs kept loaded per model; older ones are freed
_llama = None


def _lib():
    """llama_cpp, initialised once, with its log reduced to errors (it reports every tensor it loads)."""
    global _llama
    if _llama is None:
        import llama_cpp

        @llama_cpp.llama_log_callback
        def only_errors(level, text, _):
            if level == 4:  # GGML_LOG_LEVEL_ERROR (5 continues any earlier message, e.g. progress dots)
                print(text.decode(errors="replace"), end="", flush=True)

        llama_cpp.llama_log_set(only_errors, ctypes.c_void_p())
        llama_cpp.llama_backend_init()
        llama_cpp._seal_log_callback = only_errors  # keep the callback alive as long as the library
        _llama = llama_cpp
    return _llama


def model_params():
    """llama.cpp's model parameters as seal loads every model: mmapped, with no extra buffer types. Those copy
    the weights out of the mmap into repacked buffers: on a CPU with AMX the copy decoded f16 Qwen at 8.9
    tokens/s against 12.6 from the mmap, and crashed the first decode of q8_0 weights with a segfault; the
    mmap is also what the processes on one machine share."""
    L = _lib()
    params = L.llama_model_default_params()
    params.load_mode = L.LLAMA_LOAD_MODE_MMAP
    params.use_extra_bufts = False
    return params


class Engine:
    """One mmapped llama.cpp model with one context that grows to the largest call, and its adapters."""

    def __init__(self, path: Path, n_vocab: int):
        L = _lib()
        self.model = L.llama_model_load_from_file(str(path).encode(), model_params())
        if not self.model:
            raise BackendError(f"llama.cpp cannot load {path}")
        self.n_vocab = n_vocab
        self.ctx = None
        self.n_ctx = self.n_seq = 0
        self.batch = None
        self.adapters: OrderedDict[tuple, ctypes.c_void_p] = OrderedDict()
        self.current: object = None

    def close(self) -> None:
        L = _lib()
        if self.ctx:
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)
        L.llama_model_free(self.model)  # frees its adapters too
        self.ctx = self.model = None

    def reserve(self, per_seq: int, n_seq: int) -> None:
        """A context with room for `per_seq` tokens in each of `n_seq` sequences, emptied, with the caller's
        threads. Each sequence has a cache of its own (not one unified cache, where every token would attend
        over the masked cells of all sequences)."""
        L = _lib()
        if self.ctx is None or n_seq > self.n_seq or per_seq > self.n_ctx // self.n_seq:
            if self.ctx:
                L.llama_batch_free(self.batch)
                L.llama_free(self.ctx)
            per_seq = -(-max(per_seq, self.n_ctx // max(self.n_seq, 1)) // 256) * 256
            params = L.llama_context_default_params()
            params.n_seq_max = self.n_seq = max(n_seq, self.n_seq)
            params.n_ctx = self.n_ctx = per_seq * self.n_seq
            params.n_batch = params.n_ubatch = min(self.n_ctx, 512)
            params.kv_unified = False
            params.no_perf = True
            self.ctx = L.llama_init_from_model(self.model, params)
            if not self.ctx:
                raise BackendError("llama.cpp cannot create a context")
            self.batch = L.llama_batch_init(params.n_batch, 0, 1)
            self.current = None
        threads = torch.get_num_threads()
        L.llama_set_n_threads(self.ctx, threads, threads)
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)

    def use(self, adapter, make_file) -> None:
        """Switch the context to `adapter` (None: the bare model), loading its GGUF LoRA on first use."""
        L = _lib()
        key = None if adapter is None else adapter.key
        if key == self.current:
            return
        if key is None:
            L.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            if key not in self.adapters:
                if len(self.adapters) >= MAX_ADAPTERS:
                    L.llama_set_adapters_lora(self.ctx, None, 0, None)
                    L.llama_adapter_lora_free(self.adapters.popitem(last=False)[1])
                pointer = L.llama_adapter_lora_init(self.model, str(make_file(adapter)).encode())
                if not pointer:
                    raise BackendError("llama.cpp cannot load a LoRA adapter written by seal")
                self.adapters[key] = pointer
            self.adapters.move_to_end(key)
            handles = (L.llama_adapter_lora_p_ctypes * 1)(self.adapters[key])
            L.llama_set_adapters_lora(self.ctx, handles, 1, (ctypes.c_float * 1)(1.0))
        self.current = key

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> list[np.ndarray]:
        """Run (token, position, sequence, wants logits) entries; the logits rows asked for, in order."""
        L = _lib()
        out, size = [], self.n_ctx if self.n_ctx < 512 else 512
        for start in range(0, len(entries), size):
            chunk = entries[start : start + size]
            b = self.batch
            b.n_tokens = len(chunk)
            for i, (token, pos, seq, logits) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
                b.seq_id[i][0] = seq
            if L.llama_decode(self.ctx, b) != 0:
                raise RuntimeError("llama.cpp failed to decode a batch (context full?)")
            for i, (_, _, _, logits) in enumerate(chunk):
                if logits:
                    row = L.llama_get_logits_ith(self.ctx, i)
                    out.append(np.ctypeslib.as_array(row, shape=(self.n_vocab,)).copy())
        return out

    def forget(self, seq: int, from_pos: int) -> None:
        """Drop sequence `seq`'s cache from position `from_pos` on."""
        L = _lib()
        L.llama_memory_seq_rm(L.llama_get_memory(self.ctx), seq, from_pos, -1)
