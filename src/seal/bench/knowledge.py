"""`seal bench knowledge`: the paper's knowledge-incorporation tables on our models.

Conditions (each an update, or none, followed by closed-book QA unless stated):

- `base`: no update.
- `passage`: a fresh LoRA trained on the passage alone.
- `self-edit`: passage + the bench model's own self-edits.
- `file:NAME`: passage + self-edits read from `<synthetic_dir>/NAME_val.json` (e.g. gpt4_1, base), each
  `sampling.pieces` stored completions joined, as many as an own self-edit joins samples.
- `generator:PATH`: passage + self-edits sampled from another generator (e.g. a ReST-EM round's model).
- `open-book`: no update, the passage is in the prompt (the ceiling the weights are chasing).
- `recitation`: no model at all: every answer is the passage's opening, as many tokens as an answer may
  have. The floor an update must clear; every benchmark carries it, listed or not.
- `retrieval`: no update, each question retrieves (BM25) one passage out of all N and sees it.

Settings: `single` trains one adapter per passage (the paper's single-passage table); `multi` trains
one adapter on all N passages and their self-edits at once (continued pretraining) and asks every
question afterwards. Every finished episode is appended to metrics.jsonl, so a killed benchmark
resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from seal import models
from seal.bench.knowledge_table import answers_page, comparisons, report, summarise
from seal.bench.self_edits import sampled_self_edits
from seal.config import (KNOWLEDGE_DROP_COPIED, KNOWLEDGE_PROMPT, KNOWLEDGE_QA_FORMAT, EvalConfig, InnerConfig,
                         ModelConfig, SamplingConfig, bounded, knowledge_sampling)
from seal.datapaths import data_file
from seal.domains.base import SelfEditError, UpdateError, UpdatePlan
from seal.domains.knowledge.data import DataError, Passage, load_squad, split_eval
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.grading import describe
from seal.domains.knowledge.retrieval import Retriever
from seal.episode import adapt_and_evaluate_all
from seal.generation import join_pieces
from seal.inner.batched import batchable, batched_adapters, evaluator_for
from seal.inner.lora import fresh_update, train
from seal.plots import plot_accuracy_per_round, plot_conditions
from seal.progress import progress_bar
from seal.runs import Run, atomic_write

NO_UPDATE = ("base", "open-book", "retrieval", "recitation")


@dataclass
class KnowledgeBenchConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: str = field(default_factory=lambda: data_file("squad/squad_val.json"))  # see seal.datapaths
    synthetic_dir: str = field(default_factory=lambda: data_file("squad/synthetic"))
    split: str = "eval"  # eval: the paper's 200 evaluation passages; train: the other 1,867 (for tuning)
    offset: int = bounded(0, ge=0)
    passages: int = bounded(20, ge=1)
    setting: str = "single"  # single: one update per passage | multi: one update on all passages
    conditions: list[str] = field(default_factory=lambda: ["base", "passage", "self-edit", "file:gpt4_1", "file:base"])
    k: int = bounded(1, ge=1)  # self-edits per passage (single: one episode each, averaged; multi: all in one update)
    # single: train a passage's k self-edits together, one update of all their items (one episode), instead of one
    # update each: more phrasings of each fact for the same passage, at the cost of a longer update
    combine: bool = False
    prompt: str = KNOWLEDGE_PROMPT
    qa_format: Literal["text", "chat"] = KNOWLEDGE_QA_FORMAT  # how question-answer items train: see KnowledgeDomain
    drop_copied: bool = KNOWLEDGE_DROP_COPIED  # train no self-edit item that copies the document: see KnowledgeDomain
    sampling: SamplingConfig = field(default_factory=knowledge_sampling)
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


def file_self_edits(path: Path, passages: list[Passage], k: int, pieces: int) -> list[list[str]]:
    """The first k self-edits of each passage (matched by passage text), each made of `pieces` stored
    completions joined as a sampled self-edit joins its samples: a stored row trains on as many of another
    model's lists as the own row trains on of the model's (`sampling.pieces`)."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read self-edits from {path}: {e}") from e
    by_context = {r["context"].strip(): r["completions"] for r in records}
    missing = [p.title for p in passages if p.context not in by_context]
    if missing:
        raise DataError(f"{path} has no self-edits for {len(missing)} passage(s), e.g. {missing[0]!r}")
    short = [p.title for p in passages if len(by_context[p.context]) < k * pieces]
    if short:
        raise DataError(f"{path} has fewer than k x sampling.pieces = {k * pieces} completions for {short[0]!r}")
    return [join_pieces(by_context[p.context][:k * pieces], pieces) for p in passages]


def check_conditions(conditions: list[str]) -> None:
    fixed = NO_UPDATE + ("passage", "self-edit")
    bad = [c for c in conditions if c not in fixed and not c.startswith(("file:", "generator:"))]
    if bad:
        raise ValueError(f"unknown condition(s) {bad}; use {', '.join(fixed)}, file:NAME or generator:PATH")


def collect_self_edits(cfg, run, model, tokenizer, domain, passages) -> dict[str, list[list[str]]]:
    out = {}
    for c in conditions_of(cfg):
        if c == "self-edit":
            out[c] = sampled_self_edits(cfg, run, c, "passage", model, tokenizer, domain, passages)
        elif c.startswith("file:"):
            out[c] = file_self_edits(Path(cfg.synthetic_dir) / f"{c[5:]}_val.json", passages, cfg.k,
                                     cfg.sampling.pieces)
        elif c.startswith("generator:"):
            gen_model, gen_tok = models.load(dataclasses.replace(cfg.model, name=c[10:]))
            out[c] = sampled_self_edits(cfg, run, c, "passage", gen_model, gen_tok, domain, passages)
            del gen_model
    return out


def conditions_of(cfg: KnowledgeBenchConfig) -> list[str]:
    """The configured conditions, with the recitation control first whenever it is not listed."""
    return cfg.conditions if "recitation" in cfg.conditions else ["recitation", *cfg.conditions]


def samples(cfg: KnowledgeBenchConfig, condition: str) -> int:
    """Episodes per passage (single) or per run (multi) of a condition: k for uncombined self-edits, else one."""
    return 1 if cfg.setting == "multi" or cfg.combine or condition in NO_UPDATE + ("passage",) else cfg.k


def answer_all(domain, model, tokenizer, passages, condition, retriever) -> list[dict]:
    """Per-passage scores of one (possibly adapted) model; open-book and retrieval put a passage in the prompt."""
    out = []
    for p in passages:
        supports = None
        if condition == "recitation":
            out.append(score_record(domain.score(p, [opening(tokenizer, p, domain.eval.max_new_tokens)]
                                                 * len(p.questions))))
            continue
        if condition == "open-book":
            supports = [(p.title, p.context)] * len(p.questions)
        elif condition == "retrieval":
            supports = [(r.title, r.context) for r in (retriever.top(f"{p.title} {q.question}") for q in p.questions)]
        out.append(score_record(domain.evaluate(model, tokenizer, p, supports)))
    return out


def opening(tokenizer, passage: Passage, tokens: int) -> str:
    """The passage's first `tokens` tokens: the recitation control's answer to every question."""
    return tokenizer.decode(tokenizer(passage.context, add_special_tokens=False)["input_ids"][:tokens])


def score_record(score) -> dict:
    return {**score.metrics, "answers": score.details}


def run_episode(domain, model, tokenizer, passages, condition, plan, inner, retriever, on_step=None) -> list[dict]:
    if plan is None:
        return answer_all(domain, model, tokenizer, passages, condition, retriever)
    with fresh_update(model, inner) as updated:
        train(updated, tokenizer, plan, inner, on_step=on_step)
        return answer_all(domain, updated, tokenizer, passages, condition, retriever)


def multi_passage_updates(domain, model, tokenizer, passages, plans, inner, on_step) -> list[list[dict]]:
    """Multi-passage updates of several conditions, trained together through the batched inner loop
    (`inner.parallel` at a time: same results as one by one, and rows cut by length so that the short
    self-edit items do not pad to the passages' length) and each scored on every passage."""
    if not batchable(inner):
        return [run_episode(domain, model, tokenizer, passages, "", plan, inner, None, on_step) for plan in plans]
    evaluate, out = evaluator_for(domain), []
    for start in range(0, len(plans), inner.parallel):
        chunk = plans[start : start + inner.parallel]
        with batched_adapters(model, [inner] * len(chunk)) as multi:
            multi.train(tokenizer, chunk, on_step=lambda step, total, losses: on_step(
                step, total, sum(x for x in losses if x is not None) / sum(x is not None for x in losses)))
            scores = [evaluate(multi, tokenizer, p) for p in passages]
        out += [[score_record(per_passage[k]) for per_passage in scores] for k in range(len(chunk))]
    return out


def merged_plan(domain, passages, self_edits: list[list[str]] | None) -> tuple[UpdatePlan, int]:
    """Multi-passage update: every passage once, plus the items of all its self-edits; counts unusable ones."""
    examples = [e for p in passages for e in domain.context_plan(p).examples]
    failed = 0
    for p, texts in zip(passages, self_edits or []):
        for text in texts:
            try:
                examples += domain.parse(p, text).examples[1:]  # [0] is the passage, already in
            except SelfEditError:
                failed += 1
    return UpdatePlan(examples), failed


def run_bench(cfg: KnowledgeBenchConfig, out: str | Path) -> dict:
    check_conditions(cfg.conditions)
    if cfg.setting not in ("single", "multi"):
        raise ValueError(f"setting must be 'single' or 'multi', not {cfg.setting!r}")
    passages = select_passages(cfg)
    domain = KnowledgeDomain(cfg.prompt, cfg.inner.max_sequences if cfg.setting == "single" else None, cfg.eval,
                             cfg.qa_format, drop_copied=cfg.drop_copied)
    model, tokenizer = models.load(cfg.model)
    run = Run(out, cfg)
    self_edits = collect_self_edits(cfg, run, model, tokenizer, domain, passages)
    retriever = Retriever(passages)

    if cfg.setting == "single":
        jobs = [((i,), c, j) for i in range(len(passages)) for c in conditions_of(cfg) for j in range(samples(cfg, c))]
    else:
        jobs = [(tuple(range(len(passages))), c, 0) for c in conditions_of(cfg)]
    done = {(tuple(r["passages"]), r["condition"], r["sample"]) for r in run.records(event="episode")}
    pending: dict[tuple, list] = {}
    for key in jobs:
        if key not in done:
            pending.setdefault(key[0], []).append(key)
    with progress_bar() as bar:
        task = bar.add_task(f"{cfg.setting}-passage episodes", total=len(jobs), completed=len(done), status="")
        steps = bar.add_task("update", total=None, status="", visible=False)  # a multi-passage update takes minutes

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(steps, completed=step, total=total, status=f"loss {loss:.3f}", visible=True)
        for idx, keys in pending.items():
            chosen = [passages[i] for i in idx]
            batched = []  # the updates of this passage (single) or of all passages (multi): trained together
            for _, condition, j in keys:
                record = {"event": "episode", "passages": list(idx), "condition": condition, "sample": j}
                start = time.perf_counter()
                try:
                    if condition in NO_UPDATE:
                        plan = None
                    elif cfg.setting == "multi":
                        plan, record["unusable_self_edits"] = merged_plan(
                            domain, chosen, None if condition == "passage" else [self_edits[condition][i] for i in idx])
                    elif condition == "passage":
                        plan = domain.context_plan(chosen[0])
                    elif cfg.combine:
                        plan = domain.parse(chosen[0], "\n\n".join(self_edits[condition][idx[0]]))
                    else:
                        plan = domain.parse(chosen[0], self_edits[condition][idx[0]][j])
                    if plan is not None:
                        record["sequences"] = len(plan.examples)
                        if "copied" in plan.notes:  # a parsed self-edit: how much of it the passage, copied out
                            record["copied"] = plan.notes["copied"]
                        batched.append((record, plan))
                        continue
                    record["scores"] = run_episode(domain, model, tokenizer, chosen, condition, plan, cfg.inner,
                                                   retriever)
                except (SelfEditError, UpdateError) as e:
                    record["error"] = str(e)  # counted as a failed episode and reported in the table
                record["seconds"] = time.perf_counter() - start
                run.log(record)
                bar.update(task, advance=1, status=condition)
            if batched:
                start = time.perf_counter()
                plans = [p for _, p in batched]
                try:
                    if cfg.setting == "single":
                        outcomes = adapt_and_evaluate_all(model, tokenizer, domain, chosen[0], plans,
                                                          [cfg.inner] * len(batched))
                        results = [{"scores": [score_record(o.score)]} for o in outcomes]
                    else:
                        bar.reset(steps, total=None, visible=False)
                        results = [{"scores": s} for s in multi_passage_updates(
                            domain, model, tokenizer, chosen, plans, cfg.inner, on_step)]
                except UpdateError as e:  # updates trained together fail together: each is a failed episode
                    results = [{"error": str(e)}] * len(batched)
                seconds = (time.perf_counter() - start) / len(batched)
                for (record, _), result in zip(batched, results):
                    record.update(result, seconds=seconds)
                    run.log(record)
                bar.update(task, advance=len(batched), status=f"passage {idx[0]}" if len(idx) == 1 else "")

    episodes = run.records(event="episode")
    rows = summarise(episodes, conditions_of(cfg))
    results = {"model": cfg.model.name, "grader": describe(domain.grader), "split": cfg.split,
               "setting": cfg.setting, "passages": len(passages), "k": cfg.k, "pieces": cfg.sampling.pieces,
               "combine": cfg.combine,
               "rows": rows, "comparisons": comparisons(episodes, cfg.conditions)}
    title = f"knowledge incorporation ({cfg.setting}-passage), {cfg.model.name}"
    plot_conditions(rows, run.path / "plots" / "conditions.png", title)
    if any(r["round"] for r in rows):
        plot_accuracy_per_round(rows, run.path / "plots" / "rounds.png", title)
    run.report(report(results))
    atomic_write(run.path / "answers.md", answers_page(episodes, passages))
    run.finish(results)
    return results
