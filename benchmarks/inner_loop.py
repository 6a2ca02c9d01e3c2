"""How many self-edit evaluations per minute: K candidates batched vs one by one vs the reference code.

The paper's inner-loop workload for knowledge incorporation: one SQuAD passage (not among the 200
evaluation passages), its questions, and K candidate self-edits of typical length (about eight
implications; written for this passage in this script and rotated so that the K plans differ). One
self-edit evaluation = fresh LoRA + train on passage + implications (InnerConfig defaults) + greedy
closed-book answers to the passage's questions, graded.

- batched: `seal.inner.batched.adapt_and_evaluate_many` with K = 1, 2, 4, 8;
- (a) sequential: `seal.inner.lora.fresh_adapter` + `train` + `KnowledgeDomain.evaluate`, per candidate;
- (b) reference: the reference code's approach, a fresh `get_peft_model` per request and HF `Trainer`
  with every sequence padded to 2,048 tokens and the padding inside the loss (labels = input ids).
  It runs a few sequences only (one is ~half a minute here) and its training time is extrapolated
  per sequence to the whole plan; its evaluation is measured in full.

Also measured: this machine's dense matmul rate in the training's dtype (torch.mm 2048x2048, fp32 or with
--train-dtype bfloat16 bf16) and the achieved FLOP/s of the training phase. FLOPs are counted on real
(unpadded) tokens, per token of a row of length L:
  forward   2 N + 2 N_lora + attention                     N: every frozen linear incl. the LM head
  backward  2 N (activation grads only: frozen weights get no weight grads)
            + 4 N_lora (activation and weight grads of A and B) + 2 x attention
where N_lora = r (in + out) summed over adapted layers and the attention term (QK^T and AV, causal
half) is 2 h d (L + 1) per layer per token in the forward pass. The embedding lookup costs no FLOPs;
layer 0 skips its q/k/v input grads, which this count ignores (< 1 %).

    python benchmarks/inner_loop.py            # full run (~35 min on Qwen, one thread)
    python benchmarks/inner_loop.py --quick    # ~3 min: 1 epoch, 2 questions, K = 4, no reference
    python benchmarks/inner_loop.py --quick --reference-sequences 1   # + the reference, ~1 more minute

The last line printed is JSON. Timings on a shared machine move with its load: sequential and
batched runs alternate, the matmul rate is measured before and after (best window), and every run
also records this process's CPU time (`*_cpu_*` figures: less sensitive to other processes, with one
thread). The default is one torch thread: with other jobs on the 2 cores, 2 threads ran 4-5x slower
(threads wait for each other at every op); use --threads 2 on an idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from seal import models
from seal.config import EvalConfig, InnerConfig
from seal.domains.base import UpdatePlan
from seal.domains.knowledge.data import Passage, load_squad, split_eval
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.inner.batched import batched_adapters
from seal.inner.batched_eval import evaluator_for
from seal.inner.multi_lora import target_names
from seal.inner.lora import fresh_adapter, lora_config, tokenize_examples, train

DATA = Path(__file__).resolve().parents[1] / "../shared/data/squad/squad_val.json"
TITLE = "Huguenot"
OPENING = "Frederick William, Elector of Brandenburg, invited Huguenots"
# A self-edit of typical length for that passage (implications, in our own words); candidate k
# trains on 8 of them, starting at item k, so the K plans differ.
IMPLICATIONS = [
    "Frederick William, the Elector of Brandenburg, encouraged Huguenot refugees to settle in his lands.",
    "Many descendants of the Huguenots who moved to Brandenburg rose to prominence in Prussia.",
    "The German poet Theodor Fontane had Huguenot ancestors.",
    "General Hermann von François, a hero of the Battle of Tannenberg in the First World War, was of Huguenot descent.",
    "Adolf Galland, a Luftwaffe general and fighter ace, came from a Huguenot family.",
    "Luftwaffe ace Hans-Joachim Marseille and U-boat captain Lothar von Arnauld de la Perière were ethnic Huguenots.",
    "Lothar de Maizière, the last Prime Minister of the German Democratic Republic, descends from Huguenots.",
    "Thomas de Maizière, who served as German Federal Minister of the Interior, also has Huguenot roots.",
    "Huguenot immigrants shaped German military, cultural and political life for centuries.",
    "Families of Huguenot origin produced leaders in both East and West Germany.",
]
REFERENCE_LENGTH = 2048


def self_edit(k: int) -> str:
    items = [IMPLICATIONS[(k + i) % len(IMPLICATIONS)] for i in range(8)]
    return "\n".join(f"{i + 1}. {s}" for i, s in enumerate(items))


def find_passage(path: Path) -> Passage:
    evaluation, rest = split_eval(load_squad(path))
    passage = next(p for p in rest if p.title == TITLE and p.context.startswith(OPENING))
    assert all(p.context != passage.context for p in evaluation), "benchmark passage is an evaluation passage"
    return passage


def matmul_rate(seconds: float = 2.0, n: int = 2048, dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """Dense FLOP/s of torch.mm on n x n matrices of `dtype` (the training's), per wall second and per CPU
    second of this process (best of a few windows: the machine is shared)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best_wall = best_cpu = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t, c, reps = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - t < 0.4:
            torch.mm(a, b)
            reps += 1
        best_wall = max(best_wall, 2 * n**3 * reps / (time.perf_counter() - t))
        best_cpu = max(best_cpu, 2 * n**3 * reps / max(time.process_time() - c, 1e-9))
    return best_wall, best_cpu


class FlopCounter:
    """Useful training FLOPs of rows of given lengths (see the module docstring)."""

    def __init__(self, model, cfg: InnerConfig):
        head = model.get_output_embeddings()
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        self.n_frozen = sum(m.in_features * m.out_features for m in linears)
        if head is not None and not isinstance(head, torch.nn.Linear):
            self.n_frozen += head.weight.numel()
        self.n_lora = sum(cfg.rank * (model.get_submodule(n).in_features + model.get_submodule(n).out_features)
                          for n in target_names(model, cfg))
        c = model.config
        self.attn = c.num_hidden_layers * c.num_attention_heads * getattr(c, "head_dim", c.hidden_size // c.num_attention_heads)

    def row(self, length: int) -> float:
        linear = 4 * self.n_frozen + 6 * self.n_lora
        attention = 3 * 2 * self.attn * (length + 1)
        return length * (linear + attention)

    def plan(self, tokenizer, plan: UpdatePlan, cfg: InnerConfig) -> float:
        epochs = plan.epochs or cfg.epochs
        return epochs * sum(self.row(len(ids)) for ids, _ in tokenize_examples(tokenizer, plan.examples, cfg.max_length))


def run_batched(model, tokenizer, domain, passage, plans, cfgs) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    marks = {}
    with batched_adapters(model, cfgs) as multi:
        marks["init"] = time.perf_counter() - start
        c = time.process_time()
        reports = multi.train(tokenizer, plans)
        marks["train"] = reports[0].seconds
        marks["train_cpu"] = time.process_time() - c
        t = time.perf_counter()
        scores = evaluator_for(domain)(multi, tokenizer, passage)
        marks["eval"] = time.perf_counter() - t
        stats = multi.stats
    total = time.perf_counter() - start
    return dict(seconds=total, cpu_seconds=time.process_time() - cpu, **{f"{k}_seconds": v for k, v in marks.items()},
                scores=[s.value for s in scores], answers=[[d["prediction"] for d in s.details] for s in scores],
                losses=[r.losses for r in reports], tokens=stats.tokens, padded_tokens=stats.padded_tokens,
                microbatches=len(stats.microbatches))


def run_sequential(model, tokenizer, domain, passage, plan, cfg) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    with fresh_adapter(model, cfg) as peft_model:
        init = time.perf_counter() - start
        c = time.process_time()
        report = train(peft_model, tokenizer, plan, cfg)
        train_cpu = time.process_time() - c
        t = time.perf_counter()
        score = domain.evaluate(peft_model, tokenizer, passage)
        evaluation = time.perf_counter() - t
    return dict(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu,
                init_seconds=init, train_seconds=report.seconds, train_cpu_seconds=train_cpu,
                eval_seconds=evaluation, score=score.value, answers=[d["prediction"] for d in score.details],
                losses=report.losses)


def run_reference(model, tokenizer, domain, passage, plan, cfg, measured: int) -> dict:
    """The reference approach on `measured` sequences of the plan; training time extrapolated per sequence."""
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    texts = [ex.completion for ex in plan.examples]
    epochs = plan.epochs or cfg.epochs
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    peft_model = get_peft_model(model, lora_config(cfg))
    try:
        enc = tokenizer(texts[:measured], padding="max_length", max_length=REFERENCE_LENGTH, truncation=True)
        rows = [{"input_ids": ids, "attention_mask": mask, "labels": list(ids)}  # padding inside the loss
                for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(output_dir=out, per_device_train_batch_size=1,
                                     gradient_accumulation_steps=measured, max_steps=1,
                                     learning_rate=plan.lr or cfg.lr, report_to=[], save_strategy="no",
                                     logging_strategy="no", use_cpu=True, disable_tqdm=True)
            trainer = Trainer(model=peft_model, args=args, train_dataset=rows)
            setup = time.perf_counter() - start
            t = time.perf_counter()
            trainer.train()
            per_sequence = (time.perf_counter() - t) / measured
        t = time.perf_counter()
        score = domain.evaluate(peft_model, tokenizer, passage)
        evaluation = time.perf_counter() - t
    finally:
        peft_model.unload()
    train_seconds = per_sequence * len(texts) * epochs
    return dict(seconds=setup + train_seconds + evaluation, init_seconds=setup, train_seconds=train_seconds,
                eval_seconds=evaluation, seconds_per_sequence=per_sequence, measured_sequences=measured,
                extrapolated_to_sequences=len(texts) * epochs, score=score.value)


def per_minute(n: int, seconds: float) -> float:
    return 60.0 * n / seconds


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true",
                        help="1 epoch, 2 questions, 16-token answers, K = 4, one sequential candidate: about three minutes on Qwen")
    parser.add_argument("--ks", default=None, help="comma-separated K values (default 1,2,4,8; quick 4)")
    parser.add_argument("--sequential", type=int, default=None, help="candidates run one by one (default 4; quick 1)")
    parser.add_argument("--reference-sequences", type=int, default=None,
                        help="2048-token sequences the reference trains before extrapolating (default 2; quick 0: "
                             "one sequence alone takes over a minute here; 0 skips)")
    parser.add_argument("--epochs", type=int, default=None, help="default: InnerConfig's (quick: 1)")
    parser.add_argument("--questions", type=int, default=None, help="default: all of the passage's (quick: 2)")
    parser.add_argument("--train-dtype", default="float32", choices=("float32", "bfloat16"),
                        help="InnerConfig.train_dtype: bfloat16 trains the fp32 base's matmuls in bf16 (autocast); "
                             "the matmul peak is then measured in bf16")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine 2 threads ran 4-5x slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in (args.ks or ("4" if args.quick else "1,2,4,8")).split(",")]
    n_sequential = args.sequential if args.sequential is not None else (1 if args.quick else 4)
    n_reference = args.reference_sequences if args.reference_sequences is not None else (0 if args.quick else 2)
    cfg = InnerConfig(train_dtype=args.train_dtype)
    if args.epochs or args.quick:
        cfg = replace(cfg, epochs=args.epochs or 1)
    passage = find_passage(args.data)
    n_questions = args.questions or (2 if args.quick else None)
    if n_questions:
        passage = replace(passage, questions=passage.questions[:n_questions])
    load_before = os.getloadavg()[0]

    print(f"passage {passage.title!r}: {len(passage.context)} chars, {len(passage.questions)} questions; "
          f"epochs {cfg.epochs}, rank {cfg.rank}, threads {torch.get_num_threads()}, load {load_before:.1f}", flush=True)
    peak_dtype = getattr(torch, args.train_dtype)
    peak_before, cpu_peak_before = matmul_rate(1.0 if args.quick else 2.0, dtype=peak_dtype)
    print(f"{args.train_dtype} matmul rate {peak_before / 1e9:.1f} GFLOP/s ({cpu_peak_before / 1e9:.1f} per CPU second)",
          flush=True)
    model, tokenizer = models.load(args.model)
    domain = KnowledgeDomain(eval=EvalConfig(max_new_tokens=16) if args.quick else EvalConfig())
    kmax = max(ks + [n_sequential])
    plans = [domain.parse(passage, self_edit(k)) for k in range(kmax)]
    cfgs = [replace(cfg, seed=k) for k in range(kmax)]
    flops = FlopCounter(model, cfg)
    plan_flops = [flops.plan(tokenizer, p, c) for p, c in zip(plans, cfgs)]
    # warm-up of both paths (allocator, lazy imports, the one-off check of the replayed LoRA init)
    tiny_plan = replace(plans[0], epochs=1, examples=plans[0].examples[:2])
    with batched_adapters(model, cfgs[:1]) as multi:
        multi.train(tokenizer, [tiny_plan])
        multi.generate(tokenizer, [["Hello"]], max_new_tokens=2)
    with fresh_adapter(model, cfgs[0]) as peft_model:
        train(peft_model, tokenizer, tiny_plan, cfgs[0])

    # sequential and batched runs alternate, so that a change in the machine's load hits both alike
    sequential, batched = [], {}
    for i in range(max(n_sequential, len(ks))):
        if i < n_sequential:
            s = run_sequential(model, tokenizer, domain, passage, plans[i], cfgs[i])
            sequential.append(s)
            print(f"sequential #{i}: {s['seconds']:.1f} s (init {s['init_seconds']:.1f}, train "
                  f"{s['train_seconds']:.1f}, eval {s['eval_seconds']:.1f}; cpu {s['cpu_seconds']:.1f}), "
                  f"score {s['score']:.2f}", flush=True)
        if i < len(ks):
            k = ks[i]
            b = batched[k] = run_batched(model, tokenizer, domain, passage, plans[:k], cfgs[:k])
            print(f"batched K={k}: {b['seconds']:.1f} s (init {b['init_seconds']:.1f}, train {b['train_seconds']:.1f}, "
                  f"eval {b['eval_seconds']:.1f}; cpu {b['cpu_seconds']:.1f}), {per_minute(k, b['seconds']):.2f} "
                  f"evaluations/min, padded/real tokens {b['padded_tokens'] / b['tokens']:.2f} in "
                  f"{b['microbatches']} micro-batches, training at {sum(plan_flops[:k]) / b['train_cpu_seconds'] / 1e9:.1f} "
                  f"GFLOP per CPU second, scores {b['scores']}", flush=True)
    reference = None
    if n_reference:
        reference = run_reference(model, tokenizer, domain, passage, plans[0], cfgs[0], n_reference)
        print(f"reference: {reference['seconds']:.1f} s per evaluation ({reference['seconds_per_sequence']:.1f} s "
              f"per 2048-token sequence x {reference['extrapolated_to_sequences']} sequences, "
              f"eval {reference['eval_seconds']:.1f})", flush=True)
    peak_after, cpu_peak_after = matmul_rate(1.0 if args.quick else 2.0, dtype=peak_dtype)
    peak, cpu_peak = max(peak_before, peak_after), max(cpu_peak_before, cpu_peak_after)

    def mean(key: str) -> float:
        return sum(s[key] for s in sequential) / len(sequential)

    agree = {}
    for k, b in batched.items():
        pairs = [(b["answers"][i], sequential[i]["answers"]) for i in range(min(k, n_sequential))]
        agree[k] = sum(x == y for a, s in pairs for x, y in zip(a, s)) / max(1, sum(len(a) for a, _ in pairs))
    k_cmp = 4 if 4 in batched else max(batched)
    b = batched[k_cmp]
    train_flops = sum(plan_flops[:k_cmp])
    summary = {
        "model": args.model,
        "quick": args.quick,
        "max_new_tokens": domain.eval.max_new_tokens,
        "passage": passage.title,
        "questions": len(passage.questions),
        "epochs": cfg.epochs,
        "train_dtype": args.train_dtype,
        "threads": torch.get_num_threads(),
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "matmul_flops": peak,
        "matmul_flops_before_after": [peak_before, peak_after],
        "matmul_flops_per_cpu_second": cpu_peak,
        "train_flops_per_candidate": plan_flops[0],
        "sequential": {"seconds_per_evaluation": mean("seconds"), "evaluations_per_minute": per_minute(1, mean("seconds")),
                       "cpu_seconds_per_evaluation": mean("cpu_seconds"), "train_seconds": mean("train_seconds"),
                       "eval_seconds": mean("eval_seconds"),
                       "train_flops_per_s": sum(plan_flops[:n_sequential]) / n_sequential / mean("train_seconds"),
                       "runs": [{k: v for k, v in s.items() if k not in ("answers", "losses")} for s in sequential]},
        "batched": {str(k): {"evaluations_per_minute": per_minute(k, v["seconds"]),
                             **{x: y for x, y in v.items() if x not in ("answers", "losses")},
                             "train_flops_per_s": sum(plan_flops[:k]) / v["train_seconds"],
                             "answers_equal_to_sequential": agree[k]}
                    for k, v in batched.items()},
        "speedup_k": k_cmp,
        "speedup_vs_sequential": per_minute(k_cmp, b["seconds"]) / per_minute(1, mean("seconds")),
        "speedup_vs_sequential_cpu_time": mean("cpu_seconds") * k_cmp / b["cpu_seconds"],
        "train_speedup_vs_sequential": mean("train_seconds") * k_cmp / b["train_seconds"],
        "eval_speedup_vs_sequential": mean("eval_seconds") * k_cmp / b["eval_seconds"],
        "speedup_vs_batched_k1": (per_minute(k_cmp, b["seconds"]) / per_minute(1, batched[1]["seconds"])
                                  if 1 in batched else None),
        # per K: training FLOP/s over the matmul peak (wall and CPU time), and CPU seconds per candidate
        "fraction_of_matmul_peak_by_k": {str(k): sum(plan_flops[:k]) / v["train_seconds"] / peak for k, v in batched.items()},
        "fraction_of_matmul_peak_cpu_time_by_k": {str(k): sum(plan_flops[:k]) / v["train_cpu_seconds"] / cpu_peak
                                                  for k, v in batched.items()},
        "cpu_seconds_per_candidate_by_k": {str(k): v["cpu_seconds"] / k for k, v in batched.items()},
        "train_flops_per_s": train_flops / b["train_seconds"],
        "fraction_of_matmul_peak": train_flops / b["train_seconds"] / peak,
        "fraction_of_matmul_peak_cpu_time": train_flops / b["train_cpu_seconds"] / cpu_peak,
        "sequential_fraction_of_matmul_peak": sum(plan_flops[:n_sequential]) / n_sequential / mean("train_seconds") / peak,
    }
    summary["speedup_vs_reference"] = None
    if reference:
        summary["reference"] = reference
        summary["speedup_vs_reference"] = per_minute(k_cmp, b["seconds"]) / per_minute(1, reference["seconds"])
        summary["sequential_speedup_vs_reference"] = reference["seconds"] / mean("seconds")
    summary["benchmark_seconds"] = time.perf_counter() - started
    print(json.dumps(summary))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
