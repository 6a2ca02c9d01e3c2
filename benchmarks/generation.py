"""Generation speed and agreement: the hf backend against the fast CPU backend (llama.cpp), on one model.

Measured in one run, one thread each (the machine is shared; --threads to change):
- tokens/s of `seal.generation.generate` through each backend, at batch 1 and batch 8, with no adapter and
  with a LoRA adapter (trained here for a few epochs on one SQuAD passage, seal's inner-loop defaults
  otherwise): short prompts asking for an essay on a SQuAD passage's topic, so that decoding, not the
  prompt, takes the time; tokens are the completion's own tokens (re-encoded), so neither backend is
  credited for padding or stopped rows;
- llama.cpp's own rate on the same weights (the embedded model's GGUF through llama-cpp-python's `Llama`,
  greedy, batch 1): the anchor a llama.cpp user would see; for a model packaged in chunks (no single GGUF
  file) the anchor runs the very file the fast backend runs, so the ratio is the cost of seal's own loop;
- parity: the share of closed-book questions (the paper's evaluation passages, in order) whose greedy
  answer (48 tokens at most, as in evaluation) is the same text from both backends, without and with the
  adapter.

    python benchmarks/generation.py            # 128 tokens per completion, 200 questions (~10 min)
    python benchmarks/generation.py --quick    # 24 tokens, 16 questions (< 2 min)

The last line is JSON: `speedup_vs_hf` = fast / hf tokens/s at batch 1 without adapter (what seal now
uses against today's path), `ratio_to_llamacpp` = llama.cpp's own rate / the fast backend's at batch 1.
Rates are per second of this process's CPU time (one thread: the compute a core gives it, whatever else
runs on a shared machine); wall-clock rates are printed beside them and kept as `*_wall`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from seal import backends, models
from seal.backends import llamacpp_engine, to_gguf
from seal.config import InnerConfig, ModelConfig
from seal.domains.knowledge.data import load_squad, split_eval
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.prompts import answer_prompt
from seal.generation import chat_prompt, generate
from seal.inner.lora import fresh_adapter, train

SQUAD = Path(__file__).resolve().parents[1] / "../shared/data/squad/squad_val.json"


class Clock:
    """Wall time and this process's CPU time: on a shared machine the CPU-time rate is what one core
    delivers to this process, whatever the other jobs take (one thread: CPU time = compute time)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def rates(self, tokens: int) -> tuple[float, float]:
        return tokens / self.wall, tokens / self.cpu


def rate(model, tokenizer, prompts: list[str], tokens: int, batch: int) -> tuple[float, float]:
    """Completion tokens per second (wall, CPU) of one greedy `generate` call in batches of `batch`."""
    with Clock() as clock:
        outs = generate(model, tokenizer, prompts, max_new_tokens=tokens, batch_size=batch)
    return clock.rates(sum(len(tokenizer(o[0], add_special_tokens=False)["input_ids"]) for o in outs))


def llamacpp_rate(gguf: Path, tokenizer, prompt: str, tokens: int, threads: int) -> tuple[float, float]:
    """llama.cpp's own greedy decoding speed on the GGUF file, prompt processing included as in `rate`, the
    model loaded as seal loads it (`Llama` takes its parameters from llama_model_default_params)."""
    from llama_cpp import Llama

    with mock.patch("llama_cpp.llama_cpp.llama_model_default_params", llamacpp_engine.model_params):
        llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with Clock() as clock:
        llm.eval(ids)
        for _ in range(tokens):
            llm.eval([llm.sample(top_k=1, temp=0.0)])
    llm.close()
    return clock.rates(tokens)


def answers(model, tokenizer, questions) -> list[str]:
    prompts = [chat_prompt(tokenizer, answer_prompt(title, q)) for title, q in questions]
    return [o[0] for o in generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=16)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weight-type", default="f16", choices=("f16", "f32", "q8_0", "embedded"),
                    help="the fast backend's weights: written in this type, or the embedded model's own GGUF file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tokens, n_questions, epochs = (24, 16, 1) if args.quick else (128, 200, 3)
    if not backends.installed("llamacpp"):
        print("llama-cpp-python is not installed: bash scripts/setup.sh --with-llamacpp", file=sys.stderr)
        return 2
    passages, _ = split_eval(load_squad(SQUAD))
    questions = [(p.title, q.question) for p in passages for q in p.questions][:n_questions]
    model, tokenizer = models.load(ModelConfig(name=args.model, backend="hf"))
    anchor = models.embedded_gguf(args.model)
    prompts = [chat_prompt(tokenizer, f"Write a long essay about {p.title.replace('_', ' ')}.") for p in passages[:8]]
    use = {"hf": lambda: backends.attach(model, "hf"),
           "fast": lambda: backends.attach(model, "llamacpp", gguf=anchor, weight_type=args.weight_type)}
    figures: dict = {"model": args.model, "threads": args.threads, "tokens": tokens, "questions": len(questions)}

    def measure(label: str, m) -> None:
        for name in ("hf", "fast"):
            use[name]()
            generate(m, tokenizer, prompts[:1], max_new_tokens=2)  # warm-up: engine, adapter file, caches
            for batch, chunk in ((1, prompts[:1]), (8, prompts)):
                wall, cpu = rate(m, tokenizer, chunk, tokens, batch)
                figures[f"{name}_b{batch}_{label}"], figures[f"{name}_b{batch}_{label}_wall"] = cpu, wall
                print(f"{name:5s} batch {batch}  {label:10s} {cpu:7.1f} tokens/s of CPU time ({wall:.1f} wall)",
                      flush=True)
        got = {}
        for name in ("hf", "fast"):
            use[name]()
            got[name] = answers(m, tokenizer, questions)
        same = sum(a == b for a, b in zip(got["hf"], got["fast"]))
        figures[f"parity_{label}"] = same / len(questions)
        print(f"parity {label}: {same}/{len(questions)} greedy answers identical", flush=True)
        for a, b in [(a, b) for a, b in zip(got["hf"], got["fast"]) if a != b][:3]:
            print(f"  hf: {a!r}\n  fast: {b!r}")

    measure("no_adapter", model)
    cfg = dataclasses.replace(InnerConfig(), epochs=epochs)
    with fresh_adapter(model, cfg) as adapted:
        plan = KnowledgeDomain(prompt="none").parse(passages[0], "")
        train(adapted, tokenizer, plan, cfg)
        measure("adapter", adapted)
    figures["fast_weights"] = args.weight_type
    with tempfile.TemporaryDirectory() as scratch:
        if anchor is None:
            weights = "f16" if args.weight_type == "embedded" else args.weight_type
            anchor = to_gguf.write_model(model, Path(scratch) / "model.gguf", weights)
            figures["anchor"] = f"the {weights} file the fast backend runs"
        else:
            figures["anchor"] = f"the embedded file {anchor.name}"
        wall, cpu = llamacpp_rate(anchor, tokenizer, prompts[0], tokens, args.threads)
    figures["llamacpp_b1"], figures["llamacpp_b1_wall"] = cpu, wall
    print(f"llama.cpp's own rate on {figures['anchor']}, batch 1: {cpu:.1f} tokens/s of CPU time ({wall:.1f} wall)")
    figures["ratio_to_llamacpp"] = figures["llamacpp_b1"] / figures["fast_b1_no_adapter"]
    figures["speedup_vs_hf"] = figures["fast_b1_no_adapter"] / figures["hf_b1_no_adapter"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
