"""`seal bench knowledge`: the paper's single-passage knowledge-incorporation table on our models.

For each passage, each condition is one episode: an update (or none) followed by closed-book QA on the
passage's questions. Conditions:

- `base`: no update.
- `passage`: a fresh LoRA trained on the passage alone.
- `self-edit`: passage + the model's own self-edit (sampled with the config's seed).
- `file:NAME`: passage + self-edits read from `<synthetic_dir>/NAME_val.json` (e.g. gpt4_1, base).

Every finished episode is appended to metrics.jsonl, so a killed benchmark resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from seal import models
from seal.bench.stats import mean_ci
from seal.config import EvalConfig, InnerConfig, ModelConfig, SamplingConfig
from seal.domains.base import Example, SelfEditError, UpdatePlan
from seal.domains.knowledge.data import DataError, Passage, load_squad, split_eval
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.episode import adapt_and_evaluate
from seal.generation import chat_prompt, generate
from seal.inner.lora import UpdateError
from seal.plots import plot_conditions
from seal.progress import console, progress_bar
from seal.runs import Run


@dataclass
class KnowledgeBenchConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: str = "../shared/data/squad/squad_val.json"
    synthetic_dir: str = "../shared/data/squad/synthetic"
    split: str = "eval"  # eval: the paper's 200 evaluation passages; train: the other 1,867 (for tuning)
    offset: int = 0
    passages: int = 20
    conditions: list[str] = field(default_factory=lambda: ["base", "passage", "self-edit", "file:gpt4_1", "file:base"])
    prompt: str = "implications"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    inner: InnerConfig = field(default_factory=InnerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0


def select_passages(cfg: KnowledgeBenchConfig) -> list[Passage]:
    evaluation, rest = split_eval(load_squad(cfg.data))
    pool = {"eval": evaluation, "train": rest}.get(cfg.split)
    if pool is None:
        raise ValueError(f"split must be 'eval' or 'train', not {cfg.split!r}")
    chosen = pool[cfg.offset : cfg.offset + cfg.passages]
    if len(chosen) < cfg.passages:
        raise ValueError(f"only {len(chosen)} passages available at offset {cfg.offset} of the {cfg.split} split")
    return chosen


def file_self_edits(cfg: KnowledgeBenchConfig, name: str, passages: list[Passage]) -> list[str]:
    """The first stored self-edit of each passage in `<synthetic_dir>/<name>_val.json`, matched by text."""
    path = Path(cfg.synthetic_dir) / f"{name}_val.json"
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read self-edits from {path}: {e}") from e
    by_context = {r["context"].strip(): r["completions"] for r in records}
    missing = [p.title for p in passages if p.context not in by_context]
    if missing:
        raise DataError(f"{path} has no self-edits for {len(missing)} passage(s), e.g. {missing[0]!r}")
    return [by_context[p.context][0] for p in passages]


def _plan(domain: KnowledgeDomain, passage: Passage, condition: str, self_edit: str | None) -> UpdatePlan | None:
    if condition == "base":
        return None
    if condition == "passage":
        return UpdatePlan([Example(f"{passage.title}\n{passage.context}")], notes={"items": 0})
    return domain.parse(passage, self_edit or "")


def run_bench(cfg: KnowledgeBenchConfig, out: str | Path) -> dict:
    run = Run(out, cfg)
    passages = select_passages(cfg)
    domain = KnowledgeDomain(cfg.prompt, cfg.inner.max_sequences, cfg.eval)
    external = {c: file_self_edits(cfg, c.split(":", 1)[1], passages) for c in cfg.conditions if c.startswith("file:")}
    unknown = [c for c in cfg.conditions if c not in ("base", "passage", "self-edit") and c not in external]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; use base, passage, self-edit or file:NAME")
    model, tokenizer = models.load(cfg.model)

    own = {r["passage"]: r["text"] for r in run.records(event="self_edit")}
    todo = [i for i in range(len(passages)) if i not in own] if "self-edit" in cfg.conditions else []
    if todo:
        with console.status(f"sampling self-edits for {len(todo)} passages"):
            s = cfg.sampling
            prompts = [chat_prompt(tokenizer, domain.self_edit_prompt(passages[i])) for i in todo]
            texts = generate(model, tokenizer, prompts, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                             top_p=s.top_p, batch_size=s.batch_size, seed=cfg.seed)
        for i, t in zip(todo, texts):
            own[i] = t[0]
            run.log({"event": "self_edit", "passage": i, "text": t[0]})

    done = {(r["passage"], r["condition"]) for r in run.records(event="episode")}
    jobs = [(i, c) for i in range(len(passages)) for c in cfg.conditions if (i, c) not in done]
    with progress_bar() as bar:
        task = bar.add_task("episodes", total=len(passages) * len(cfg.conditions), completed=len(done), status="")
        for i, condition in jobs:
            passage = passages[i]
            self_edit = own[i] if condition == "self-edit" else external[condition][i] if condition in external else None
            record = {"event": "episode", "passage": i, "title": passage.title, "condition": condition}
            start = time.perf_counter()
            try:
                plan = _plan(domain, passage, condition, self_edit)
                if plan is None:
                    score = domain.evaluate(model, tokenizer, passage)
                else:
                    score = adapt_and_evaluate(model, tokenizer, domain, passage, plan, cfg.inner).score
                    record["sequences"] = len(plan.examples)
            except (SelfEditError, UpdateError) as e:
                record["error"] = str(e)  # counted as a failed episode, reported in the table
            else:
                record.update(accuracy=score.value, f1=sum(d["f1"] for d in score.details) / len(score.details),
                              answers=score.details)
            record["seconds"] = time.perf_counter() - start
            run.log(record)
            bar.update(task, advance=1, status=f"{condition} {record.get('accuracy', 'failed')}")

    rows = summarise(run.records(event="episode"), cfg.conditions)
    results = {"model": cfg.model.name, "split": cfg.split, "passages": len(passages), "rows": rows}
    plot_conditions(rows, run.path / "plots" / "conditions.png", f"knowledge incorporation, {cfg.model.name}")
    run.report(report(results))
    run.finish(results)
    return results


def summarise(episodes: list[dict], conditions: list[str]) -> list[dict]:
    """One table row per condition. A failed episode (unusable self-edit) scores as no update."""
    base = {e["passage"]: e for e in episodes if e["condition"] == "base" and "error" not in e}
    rows = []
    for c in conditions:
        eps = [e for e in episodes if e["condition"] == c]
        failed = [e for e in eps if "error" in e]
        acc = [e["accuracy"] if "error" not in e else base.get(e["passage"], {}).get("accuracy", 0.0) for e in eps]
        f1 = [e["f1"] if "error" not in e else base.get(e["passage"], {}).get("f1", 0.0) for e in eps]
        mean, low, high = mean_ci(acc)
        rows.append({"condition": c, "episodes": len(eps), "failed": len(failed), "accuracy": mean, "ci_low": low,
                     "ci_high": high, "f1": sum(f1) / len(f1),
                     "seconds_per_episode": sum(e["seconds"] for e in eps) / len(eps)})
    return rows


def report(results: dict) -> str:
    lines = [
        f"# Knowledge incorporation, single passage: {results['model']}",
        "",
        f"{results['passages']} passages of the {results['split']} split. Accuracy is the mean over passages of "
        "closed-book accuracy on each passage's questions; 95 % CI over passages.",
        "",
        "| condition | accuracy | 95 % CI | F1 | failed | s / episode |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(f"| {r['condition']} | {r['accuracy']:.1%} | {r['ci_low']:.1%} – {r['ci_high']:.1%} | "
                     f"{r['f1']:.3f} | {r['failed']} | {r['seconds_per_episode']:.1f} |")
    return "\n".join(lines) + "\n"
