"""`seal bench forgetting`: documents learned one after another into a Memory, under each continual strategy.

For every strategy and sequence of T evaluation passages, a fresh Memory learns the passages in order,
as a user would: without their questions (the gate uses the model's own self-quiz), while SQuAD's
human questions are kept aside to measure. After each step every passage of the sequence, learned or
not, is asked closed-book through the memory's answer path (routing included) and graded by the
knowledge domain: row i of the accuracy matrix R (seal.bench.transfer). Each step also records the
general probe, seconds, disk usage, whether the gate kept the update and whether a gate on the human
questions would have (their agreement), and for routing strategies where each question was routed.

Every step is appended to metrics.jsonl and each memory lives in `memories/<strategy>-<sequence>/`,
so a killed benchmark resumes where it stopped (a learn that finished but was not logged is not redone).
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from seal.bench.forgetting_report import answers_page, plot_forgetting, report, summarise
from seal.domains.knowledge.data import Passage, load_squad, split_eval
from seal.memory import Document, Memory, MemoryConfig
from seal.memory.config import STRATEGIES, ProbeConfig
from seal.config import load_config
from seal.datapaths import data_file
from seal.progress import progress_bar
from seal.runs import Run, atomic_write, read_records


@dataclass
class ForgettingBenchConfig:
    data: str = field(default_factory=lambda: data_file("squad/squad_val.json"))  # see seal.datapaths
    documents: int = 8  # T: passages learned in sequence
    sequences: int = 4  # S: independent sequences (disjoint passages) per strategy
    # the first sequence's index: runs side by side on sequences 0-1 and 2-3 pool into S = 4 (seal bench status)
    first_sequence: int = 0
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    # learn as a user would (self-quiz gate) or gate on the passages' own questions (the paper's setting)
    self_quiz: bool = True
    # every how many steps the whole row R[i] is measured (the first and last steps always are); between them a
    # step asks only the passage just learned and the next one, the cells ACC, BWT, FWT and retention read:
    # at T = 50, 10 answers 388 passages' questions over the run instead of 2,550
    full_row_every: int = 1
    memory: MemoryConfig = field(
        default_factory=lambda: MemoryConfig(probe=ProbeConfig(data=data_file("squad/squad_val.json"))))
    seed: int = 0


def sequences(cfg: ForgettingBenchConfig) -> dict[int, list[Passage]]:
    """Sequences `first_sequence` .. `first_sequence + S - 1` of T evaluation passages, by index: disjoint
    slices of the evaluation split shuffled with the config's seed, so sequence s is the same passages in
    every run that shares T and the seed, whichever sequences it runs."""
    evaluation, _ = split_eval(load_squad(cfg.data))
    pool = list(evaluation)
    random.Random(cfg.seed).shuffle(pool)
    end = cfg.first_sequence + cfg.sequences
    if cfg.documents * end > len(pool):
        raise ValueError(f"sequences {cfg.first_sequence}-{end - 1} of {cfg.documents} need "
                         f"{cfg.documents * end} passages; the evaluation split has {len(pool)}")
    return {s: pool[s * cfg.documents:(s + 1) * cfg.documents] for s in range(cfg.first_sequence, end)}


def check(cfg: ForgettingBenchConfig) -> None:
    bad = [s for s in cfg.strategies if s not in STRATEGIES]
    if bad or not cfg.strategies:
        raise ValueError(f"unknown strategy {bad}; choose among {', '.join(STRATEGIES)}")
    if cfg.documents < 1 or cfg.sequences < 1 or cfg.first_sequence < 0 or cfg.full_row_every < 1:
        raise ValueError("documents, sequences and full_row_every must be at least 1, first_sequence at least 0")


def measured(step: int, cfg: ForgettingBenchConfig) -> list[int]:
    """The passages whose accuracy step `step` measures (see ForgettingBenchConfig.full_row_every)."""
    if step in (0, cfg.documents) or step % cfg.full_row_every == 0:
        return list(range(cfg.documents))
    return [step - 1, step]  # R[step][step-1]: right after its own update; R[step][step]: just before its own


def evaluate_row(memory: Memory, passages: list[Passage], which: list[int]) -> tuple[list[float | None], list[dict]]:
    """Accuracy on the passages `which` (closed book, through the memory's routing; None for the others), graded
    by the knowledge domain, with the answers and, for routing versions, which learned document each went to."""
    asked = [passages[j] for j in which]
    questions = [(p, q) for p in asked for q in p.questions]
    answers = memory.answer_many([q.question for _, q in questions], [p.title for p, _ in questions])
    routed = [d["text"] for d in memory.routed_documents()]
    row: list[float | None] = [None] * len(passages)
    details, start = [], 0
    for j, p in zip(which, asked):
        score = memory.domain.score(p, answers[start:start + len(p.questions)])
        row[j] = score.value
        for d in score.details:  # True: its own document's adapter, False: another's, None: no adapter
            target = memory.route(d["question"], p.title)
            d["routed_to"] = None if target is None else routed[target] == p.context
        details.append({"title": p.title, "held_apart": p.context in routed, "metrics": score.metrics,
                        "answers": score.details})
        start += len(p.questions)
    return row, details


def run_step(memory: Memory, passages: list[Passage], step: int, cfg: ForgettingBenchConfig) -> dict:
    """Learn passage `step - 1` (unless a killed run already did) and measure; step 0 measures the base."""
    start = time.perf_counter()
    learn = None
    if step > 0:
        attempts = memory.learn_records()
        if len(attempts) >= step:
            learn = attempts[step - 1]
        else:
            p = passages[step - 1]
            doc = Document(p.title, p.context, None if cfg.self_quiz else p.questions)
            learn = memory.learn(doc, check_questions=p.questions).to_dict()
    row, details = evaluate_row(memory, passages, measured(step, cfg))
    version = memory.store.version(memory.active)
    return {"row": row, "answers": details, "version": memory.active, "learn": _learn_summary(learn),
            "probe": version["scores"].get("probe") or memory.store.meta()["probe"]["base"],
            "disk_bytes": memory.disk_bytes(), "seconds": time.perf_counter() - start}


def _learn_summary(learn: dict | None) -> dict | None:
    if learn is None:
        return None
    keep = ("accepted", "reason", "version", "quiz", "quiz_before", "quiz_after", "probe_after", "self_edit",
            "self_edit_usable", "sequences", "seconds", "check_before", "check_after", "consolidation", "scale",
            "scales_tried", "quiz_logprob_before", "quiz_logprob_after")
    return {k: learn.get(k) for k in keep}


def run_bench(cfg: ForgettingBenchConfig, out: str | Path) -> dict:
    check(cfg)
    seqs = sequences(cfg)
    run = Run(out, cfg)
    done = {(r["strategy"], r["sequence"], r["step"]): r for r in run.records(event="step")}
    total = len(cfg.strategies) * len(seqs) * (cfg.documents + 1)
    with progress_bar() as bar:
        task = bar.add_task("forgetting steps", total=total, completed=len(done), status="")
        for strategy in cfg.strategies:
            for s, passages in seqs.items():
                if all((strategy, s, i) in done for i in range(cfg.documents + 1)):
                    continue
                mem_cfg = dataclasses.replace(cfg.memory, strategy=strategy, seed=cfg.memory.seed + s)
                memory = Memory.open(run.path / "memories" / f"{strategy}-{s}", mem_cfg)
                for step in range(cfg.documents + 1):
                    if (strategy, s, step) in done:
                        continue
                    bar.update(task, status=f"{strategy} sequence {s + 1} step {step}")
                    record = {"event": "step", "strategy": strategy, "sequence": s, "step": step,
                              **run_step(memory, passages, step, cfg)}
                    run.log(record)
                    done[strategy, s, step] = record
                    bar.update(task, advance=1)
    results = summarise(list(done.values()), cfg)
    plot_forgetting(results, run.path / "plots")
    run.report(report(results, cfg))
    atomic_write(run.path / "answers.md", answers_page(list(done.values()), cfg.documents))
    run.finish(results)
    return results



def interim(*outs: str | Path) -> tuple[dict, ForgettingBenchConfig]:
    """The table so far of forgetting runs that are running or were killed (their complete sequences); read-only.
    Several runs pool when their configs differ only in which sequences they run, and no sequence is in two."""
    configs, steps, owner = [], [], {}
    for out in outs:
        path = Path(out)
        if not (path / "config.yaml").is_file():
            raise FileNotFoundError(f"{path} is not a forgetting benchmark run (no config.yaml)")
        cfg = load_config(ForgettingBenchConfig, path / "config.yaml")
        if configs and dataclasses.replace(cfg, first_sequence=0, sequences=1) != dataclasses.replace(
                configs[0], first_sequence=0, sequences=1):
            raise ValueError(f"{out} and {outs[0]} differ in more than their sequences: they do not pool")
        configs.append(cfg)
        for r in read_records(path / "metrics.jsonl", event="step"):
            if owner.setdefault((r["strategy"], r["sequence"]), out) != out:
                raise ValueError(f"{out} and {owner[r['strategy'], r['sequence']]} both ran {r['strategy']} "
                                 f"sequence {r['sequence']}: they do not pool")
            steps.append(r)
    return summarise(steps, configs[0]), configs[0]
