"""`seal bench knowledge`: the paper's knowledge-incorporation tables on our models.

Conditions (each an update, or none, followed by closed-book QA unless stated):

- `base`: no update.
- `passage`: a fresh LoRA trained on the passage alone.
- `self-edit`: passage + the bench model's own self-edits.
- `file:NAME`: passage + self-edits read from `<synthetic_dir>/NAME_val.json` (e.g. gpt4_1, base).
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from seal import models
from seal.bench.stats import format_ci, mean_ci, number, paired_difference, percent
from seal.config import EvalConfig, InnerConfig, ModelConfig, SamplingConfig, bounded, load_config
from seal.datapaths import data_file
from seal.domains.base import Example, SelfEditError, UpdateError, UpdatePlan
from seal.domains.knowledge.answers import METRICS
from seal.domains.knowledge.data import DataError, Passage, load_squad, split_eval
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.grading import describe
from seal.domains.knowledge.retrieval import Retriever
from seal.episode import adapt_and_evaluate_all
from seal.generation import sample_self_edits
from seal.inner.batched import batchable, batched_adapters, evaluator_for
from seal.inner.lora import fresh_update, train
from seal.plots import plot_accuracy_per_round, plot_conditions
from seal.progress import console, progress_bar
from seal.runs import Run, atomic_write, read_records

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
    prompt: str = "implications"
    qa_format: Literal["text", "chat"] = "text"  # how question-answer items train: see KnowledgeDomain
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


def file_self_edits(path: Path, passages: list[Passage], k: int) -> list[list[str]]:
    """The first k stored self-edits of each passage, matched by passage text."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read self-edits from {path}: {e}") from e
    by_context = {r["context"].strip(): r["completions"] for r in records}
    missing = [p.title for p in passages if p.context not in by_context]
    if missing:
        raise DataError(f"{path} has no self-edits for {len(missing)} passage(s), e.g. {missing[0]!r}")
    short = [p.title for p in passages if len(by_context[p.context]) < k]
    if short:
        raise DataError(f"{path} has fewer than k={k} self-edits for {short[0]!r}")
    return [by_context[p.context][:k] for p in passages]


def check_conditions(conditions: list[str]) -> None:
    fixed = NO_UPDATE + ("passage", "self-edit")
    bad = [c for c in conditions if c not in fixed and not c.startswith(("file:", "generator:"))]
    if bad:
        raise ValueError(f"unknown condition(s) {bad}; use {', '.join(fixed)}, file:NAME or generator:PATH")


def sampled_self_edits(cfg, run: Run, condition: str, model, tokenizer, domain, passages) -> list[list[str]]:
    """k self-edits per passage from `model`, logged once so that a resumed run reuses them."""
    logged = {r["passage"]: r["texts"] for r in run.records(event="self_edits", condition=condition)}
    todo = [i for i in range(len(passages)) if i not in logged]
    if todo:
        with console.status(f"{condition}: sampling {cfg.k} self-edit(s) for {len(todo)} passages"):
            texts = sample_self_edits(model, tokenizer, domain, [passages[i] for i in todo], cfg.sampling, cfg.k,
                                      seed=cfg.seed)
        for i, t in zip(todo, texts):
            logged[i] = t
            run.log({"event": "self_edits", "condition": condition, "passage": i, "texts": t})
    return [logged[i] for i in range(len(passages))]


def collect_self_edits(cfg, run, model, tokenizer, domain, passages) -> dict[str, list[list[str]]]:
    out = {}
    for c in conditions_of(cfg):
        if c == "self-edit":
            out[c] = sampled_self_edits(cfg, run, c, model, tokenizer, domain, passages)
        elif c.startswith("file:"):
            out[c] = file_self_edits(Path(cfg.synthetic_dir) / f"{c[5:]}_val.json", passages, cfg.k)
        elif c.startswith("generator:"):
            gen_model, gen_tok = models.load(dataclasses.replace(cfg.model, name=c[10:]))
            out[c] = sampled_self_edits(cfg, run, c, gen_model, gen_tok, domain, passages)
            del gen_model
    return out


def conditions_of(cfg: KnowledgeBenchConfig) -> list[str]:
    """The configured conditions, with the recitation control first whenever it is not listed."""
    return cfg.conditions if "recitation" in cfg.conditions else ["recitation", *cfg.conditions]


def samples(cfg: KnowledgeBenchConfig, condition: str) -> int:
    """Episodes per passage (single) or per run (multi) of a condition: k for sampled self-edits, else one."""
    return 1 if cfg.setting == "multi" or condition in NO_UPDATE + ("passage",) else cfg.k


def passage_plan(passage: Passage) -> UpdatePlan:
    return UpdatePlan([Example(f"{passage.title}\n{passage.context}")], notes={"items": 0})


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
    examples = [e for p in passages for e in passage_plan(p).examples]
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
                             cfg.qa_format)
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
                        plan = passage_plan(chosen[0])
                    else:
                        plan = domain.parse(chosen[0], self_edits[condition][idx[0]][j])
                    if plan is not None:
                        record["sequences"] = len(plan.examples)
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
               "setting": cfg.setting, "passages": len(passages), "k": cfg.k, "rows": rows,
               "comparisons": comparisons(episodes, cfg.conditions)}
    title = f"knowledge incorporation ({cfg.setting}-passage), {cfg.model.name}"
    plot_conditions(rows, run.path / "plots" / "conditions.png", title)
    if any(r["round"] for r in rows):
        plot_accuracy_per_round(rows, run.path / "plots" / "rounds.png", title)
    run.report(report(results))
    atomic_write(run.path / "answers.md", answers_page(episodes, passages))
    run.finish(results)
    return results


def _shard(out: str | Path) -> tuple[KnowledgeBenchConfig, list[dict]]:
    """A benchmark run's config and episodes, passages renumbered by their place in the split."""
    path = Path(out)
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"{path} is not a knowledge benchmark run (no config.yaml)")
    cfg = load_config(KnowledgeBenchConfig, path / "config.yaml")
    episodes = read_records(path / "metrics.jsonl", event="episode")
    return cfg, [{**e, "passages": [cfg.offset + i for i in e["passages"]]} for e in episodes]


def interim(*outs: str | Path) -> dict:
    """The table of one benchmark, or of shards of one (the same config at different `offset`s, run in
    parallel), still running or killed: over the passages whose every episode is done, so that every row
    averages the same passages; read-only."""
    shards = [_shard(out) for out in outs]
    cfg = shards[0][0]
    for out, (other, _) in zip(outs, shards):
        if dataclasses.replace(other, offset=cfg.offset, passages=cfg.passages) != cfg:
            raise ValueError(f"{out} is not a shard of {outs[0]}: their configs differ beyond offset and passages")
    if len(shards) > 1 and cfg.setting == "multi":
        raise ValueError("multi-passage runs are one update over all their passages and cannot be pooled")
    if len(shards) > 1 and "retrieval" in cfg.conditions:
        raise ValueError("retrieval searches only its own run's passages, so shards of it cannot be pooled")
    ranges = sorted((c.offset, c.offset + c.passages) for c, _ in shards)
    if any(end > start for (_, end), (start, _) in zip(ranges, ranges[1:])):
        raise ValueError(f"the runs' passages overlap: {ranges}")
    episodes = [e for _, eps in shards for e in eps]
    done = Counter((tuple(e["passages"]), e["condition"]) for e in episodes)
    complete = {idx for idx, _ in done if all(done[idx, c] >= samples(cfg, c) for c in conditions_of(cfg))}
    finished = [e for e in episodes if tuple(e["passages"]) in complete]
    return {"model": cfg.model.name, "setting": cfg.setting, "passages_done": sum(len(i) for i in complete),
            "passages": sum(c.passages for c, _ in shards), "k": cfg.k,
            "rows": summarise(finished, conditions_of(cfg)) if complete else [],
            "comparisons": comparisons(finished, cfg.conditions)}


def per_passage(episodes: list[dict], condition: str) -> dict[int, dict[str, float]]:
    """Mean accuracy, F1, exact match, recitation and identical-answer rates of `condition` per passage, over
    its samples that ran.

    A failed episode (its self-edit unusable, its update impossible) has no score: it is counted in the
    row's `failed` column, never averaged in, and a passage whose every episode failed has no score at all.
    """
    scores_of: dict[int, list[dict]] = {}
    for e in episodes:
        if e["condition"] == condition and "scores" in e:
            for i, s in zip(e["passages"], e["scores"]):
                scores_of.setdefault(i, []).append(s)
    return {i: {m: sum(s[m] for s in v) / len(v) for m in METRICS} for i, v in scores_of.items()}


def summarise(episodes: list[dict], conditions: list[str]) -> list[dict]:
    """One row per condition: mean over the passages it scored (`passages`, the n of the 95 % t-interval),
    the protocol's other metrics, failed episodes (and unusable self-edits of merged updates), seconds per episode."""
    rows = []
    for c in conditions:
        eps = [e for e in episodes if e["condition"] == c]
        scores = list(per_passage(episodes, c).values())
        mean, low, high = mean_ci([s["accuracy"] for s in scores]) if scores else (None, None, None)
        failed = sum("error" in e for e in eps) + sum(e.get("unusable_self_edits", 0) for e in eps)
        rows.append({"condition": c, "round": rl_round(c), "episodes": len(eps), "failed": failed,
                     "passages": len(scores), "accuracy": mean, "ci_low": low, "ci_high": high,
                     **{m: sum(s[m] for s in scores) / len(scores) if scores else None for m in METRICS[1:]},
                     "seconds_per_episode": sum(e["seconds"] for e in eps) / len(eps)})
    return rows


def comparisons(episodes: list[dict], conditions: list[str]) -> list[dict]:
    """Paired accuracy differences behind the paper's claims, over the passages both conditions scored:
    every self-edit condition against the passage alone (does restating beat the raw text?), each later
    RL round and each stored self-edit file against the model's own self-edits (round 0), and each file
    against the last RL round (does SEAL approach GPT-4.1's self-edits?)."""
    rounds = sorted((r, c) for c in conditions if (r := rl_round(c)) is not None)
    files = [c for c in conditions if c.startswith("file:")]
    pairs = []
    if "passage" in conditions:
        pairs += [(c, "passage") for c in conditions if c.startswith(("file:", "generator:")) or c == "self-edit"]
    if rounds and rounds[0][0] == 0:
        pairs += [(c, rounds[0][1]) for r, c in rounds[1:]] + [(f, rounds[0][1]) for f in files]
    if rounds and rounds[-1][0] > 0:
        pairs += [(f, rounds[-1][1]) for f in files]
    out = []
    for a, b in pairs:
        pa, pb = per_passage(episodes, a), per_passage(episodes, b)
        shared = sorted(pa.keys() & pb.keys())
        if shared:
            out.append({"a": a, "b": b, **paired_difference([pa[i]["accuracy"] for i in shared],
                                                           [pb[i]["accuracy"] for i in shared])})
    return out


def rl_round(condition: str) -> int | None:
    """The ReST-EM round a condition's self-edits come from: 0 for the model's own, N for a `round-N` generator."""
    if condition == "self-edit":
        return 0
    name = Path(condition[10:]).name if condition.startswith("generator:") else ""
    return int(name[6:]) if name.startswith("round-") and name[6:].isdigit() else None


def report(results: dict) -> str:
    lines = [
        f"# Knowledge incorporation, {results['setting']} passage: {results['model']}",
        "",
        f"{results['passages']} passages of the {results['split']} split, k={results['k']} self-edit(s) per passage. "
        "Accuracy is the mean over passages of closed-book accuracy on each passage's questions, over the episodes "
        "that ran; 95 % t-interval over the n passages scored (flagged under 5, none for 1). Only an answer's first "
        "sentence is graded, and an answer also given to a question it does not answer is not credited "
        "(`seal/domains/knowledge/answers.py`). `recited`: answers copying 10+ words of the passage; `identical`: "
        "answers given word for word to another question of the passage. `failed` counts episodes that could not "
        "run (unusable self-edit, impossible update; in the multi setting, unusable self-edits left out of the "
        "update): they are in no mean. Every answer: [answers.md](answers.md).",
        "",
        "| condition | accuracy | 95 % CI (n passages) | F1 | EM | recited | identical | failed | s / episode |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(f"| {r['condition']} | {percent(r['accuracy'])} | "
                     f"{format_ci(r['ci_low'], r['ci_high'], r['passages'])} | {number(r['f1'])} | {percent(r['em'])} | "
                     f"{percent(r['recitation'])} | {percent(r['identical'])} | {r['failed']} | "
                     f"{r['seconds_per_episode']:.1f} |")
    if results.get("comparisons"):
        lines += ["", "Paired differences in accuracy over the same passages (95 % t-interval; passages better / "
                  "worse):", "", "| comparison | difference | 95 % CI (n passages) | better / worse |", "|---|---|---|---|"]
        for c in results["comparisons"]:
            lines.append(f"| {c['a']} − {c['b']} | {c['difference']:+.1%} | "
                         f"{format_ci(c['ci_low'], c['ci_high'], c['units'], signed=True)} | "
                         f"{c['better']} / {c['worse']} |")
    return "\n".join(lines) + "\n"


def answers_page(episodes: list[dict], passages: list[Passage]) -> str:
    """Every graded answer of every episode, by passage then condition: what the numbers count."""
    lines = ["# Answers", "", "✓ credited, ✗ not; R recites the passage, = identical to another answer.", ""]
    for e in sorted(episodes, key=lambda e: (e["passages"], e["condition"], e["sample"])):
        for i, score in zip(e["passages"], e.get("scores", [])):
            lines += [f"## {passages[i].title} — {e['condition']} (sample {e['sample']})", "",
                      *answers_table(score["answers"]), ""]
    return "\n".join(lines)


def answers_table(answers: list[dict]) -> list[str]:
    """Markdown rows of graded answers (KnowledgeDomain.score details): question, gold, graded answer, marks."""
    lines = ["| question | gold | answer | |", "|---|---|---|---|"]
    for d in answers:
        marks = ("✓" if d["correct"] else "✗") + (" R" if d["recites"] else "") + (" =" if d["identical"] else "")
        cells = [d["question"], d["gold"], d["answer"] or "(empty)", marks]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return lines
