"""What gradient checkpointing saves and costs in ReST-EM's M-step, on the self-edits a run's round rewarded.

The M-step finetunes the generator on its rewarded self-edits (prompt + completion, up to `restem.sft.max_length`
tokens, `restem.sft.batch_size` at a time); on Qwen2.5-0.5B with `restem.sft.kl_to_base=1` it peaked near this
machine's 23 GB (docs/results.md). This clones the first `--examples` of round `--round`'s rewarded self-edits of a
`seal train knowledge` run with the run's own M-step settings (overridable with `--set`), once as configured and
once with `restem.sft.checkpointing` flipped, each in a fresh process (a process's peak memory only ever grows),
and prints each one's seconds, peak resident memory and the memory held after loading the model.

    python benchmarks/mstep_memory.py --run runs/train-knowledge-1 --examples 8
    python benchmarks/mstep_memory.py --run RUN --set restem.sft.batch_size=1   # a smaller batch

The last line is JSON with both runs and `peak_saved_gb` (without checkpointing minus with) and `time_ratio`
(with over without).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from seal import models
from seal.config import load_config
from seal.generation import self_edit_examples
from seal.inner.lora import tokenize_examples
from seal.progress import step_bar
from seal.rl.restem import peak_resident_gb, release_freed_memory, sft_generator, winners
from seal.runs import read_records
from seal.train import TrainKnowledgeConfig, knowledge_domain, training_contexts


def rewarded_examples(run: Path, cfg: TrainKnowledgeConfig, r: int, tokenizer, limit: int) -> list:
    """The first `limit` training examples the M-step of round `r` builds from the round's rewarded self-edits."""
    domain, contexts = knowledge_domain(cfg), training_contexts(cfg)
    baselines = {b["context"]: b["score"] for b in read_records(run / "metrics.jsonl", event="baseline", round=r)}
    episodes = read_records(run / "metrics.jsonl", event="episode", round=r)
    chosen = [w for i in sorted(baselines)
              for w in winners([e for e in episodes if e["context"] == i], baselines[i], cfg.restem)]
    examples = [x for w in chosen
                for x in self_edit_examples(tokenizer, domain, contexts[w["context"]], w["text"], cfg.restem.sampling)]
    if not examples:
        raise SystemExit(f"round {r} of {run} rewarded no self-edit")
    return examples[:limit]


def measure(args: argparse.Namespace) -> dict:
    """One M-step in this process: its seconds and the peak resident memory."""
    cfg = load_config(TrainKnowledgeConfig, args.run / "config.yaml", args.overrides)
    model, tokenizer = models.load(cfg.restem.generator)
    loaded_gb = release_freed_memory()
    examples = rewarded_examples(args.run, cfg, args.round, tokenizer, args.examples)
    start = time.perf_counter()
    with step_bar(f"M-step, checkpointing={cfg.restem.sft.checkpointing}") as on_step:
        sft_generator(model, tokenizer, examples, cfg.restem.sft, on_step=on_step)
    return {"checkpointing": cfg.restem.sft.checkpointing, "examples": len(examples),
            "tokens": sum(len(ids) for ids, _ in tokenize_examples(tokenizer, examples, cfg.restem.sft.max_length)),
            "seconds": round(time.perf_counter() - start, 1), "peak_gb": peak_resident_gb(), "loaded_gb": loaded_gb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a `seal train knowledge` run directory")
    parser.add_argument("--round", type=int, default=1, help="whose rewarded self-edits are cloned")
    parser.add_argument("--examples", type=int, default=8, help="how many of them (the first ones)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="the run's config key=value")
    parser.add_argument("--one", action="store_true", help="measure the configured setting only, in this process")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args)))
        return
    configured = load_config(TrainKnowledgeConfig, args.run / "config.yaml", args.overrides).restem.sft.checkpointing
    results = []
    for checkpointing in (configured, not configured):
        command = [sys.executable, __file__, "--one", "--run", str(args.run), "--round", str(args.round),
                   "--examples", str(args.examples), *[f"--set={o}" for o in args.overrides],
                   f"--set=restem.sft.checkpointing={str(checkpointing).lower()}"]
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"checkpointing={checkpointing}: {results[-1]['seconds']} s, peak {results[-1]['peak_gb']} GB "
              f"(model loaded: {results[-1]['loaded_gb']} GB), {results[-1]['examples']} examples")
    off, on = sorted(results, key=lambda x: x["checkpointing"])
    print(json.dumps({"without": off, "with": on, "peak_saved_gb": round(off["peak_gb"] - on["peak_gb"], 2),
                      "time_ratio": round(on["seconds"] / off["seconds"], 2)}))


if __name__ == "__main__":
    main()
