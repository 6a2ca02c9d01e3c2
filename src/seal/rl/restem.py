"""ReST-EM over self-edits: the outer loop that teaches a generator to write self-edits that help.

Each round has two steps, generic over any `Domain`:

- E-step: for every training context, sample k self-edits from the current generator, apply each one
  to the learner with a fresh adapter, score the adapted learner, and turn the scores into rewards.
- M-step: supervised finetuning of the generator on (self-edit prompt -> rewarded self-edit), loss on
  the completion only; the result is saved as `round-N/` and is the generator of the next round.

By default the learner is the generator itself (the model adapts itself); with `learner` set, a fixed
student learns from a teacher's self-edits, and only the teacher is trained. Every episode is logged
as soon as it ends and every round's generator is saved atomically, so rerunning the same command
after a kill redoes no finished work. Unlike the reference code, a winner must beat the learner's
baseline by default; a context whose self-edits all fail to help contributes nothing.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import gc
import os
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from seal import models
from seal.config import InnerConfig, ModelConfig, SamplingConfig, bounded
from seal.domains.base import Domain, Example, Score, SelfEditError, UpdateError, UpdatePlan
from seal.episode import adapt_and_evaluate_all
from seal.generation import sample_self_edits, self_edit_examples
from seal.inner.lora import fresh_adapter, train
from seal.progress import progress_bar, step_bar
from seal.runs import Run

REWARDS = ("binary", "best", "gain")
BASELINES = ("untouched", "context")


@dataclass
class SFTConfig:
    """The M-step: finetune the generator on its rewarded self-edits."""

    mode: str = "lora"  # lora: train an adapter, then merge it into the weights | full: every weight
    lr: float = 3e-4
    epochs: int = 2
    rank: int = 16
    alpha: int = 32
    batch_size: int = 4
    max_length: int = 1024
    seed: int = 0
    kl_to_base: float = bounded(0.0, ge=0)  # lora: weight of the KL from the round's generator (inner.loss.update_loss)
    # recompute each layer's activations in the backward pass instead of keeping them: the same update with less
    # memory and one more forward pass per step; on Qwen2.5-0.5B on 2 CPU cores it took half the peak memory and
    # no longer (docs/results.md, "The M-step's memory")
    checkpointing: bool = True


@dataclass
class RestEMConfig:
    generator: ModelConfig = field(default_factory=ModelConfig)
    learner: str | None = None  # a fixed student model; None: the generator of each round learns itself
    rounds: int = 2
    k: int = 4  # self-edits sampled per context
    seeds: int = 1  # inner-loop seeds per self-edit; the score is their mean
    reward: str = "binary"  # binary: improved over baseline | best: highest score | gain: score - baseline
    require_improvement: bool = True  # a winner must beat the baseline (the reference code did not check)
    # what the baseline is: `untouched`, the learner's score before any update; or `context`, its score after
    # an update on the context alone (the domain's `context_plan`, e.g. the passage). A knowledge self-edit's
    # update always trains the passage too, so against the untouched learner a self-edit wins for what the
    # passage taught; against the passage-only update it wins only for what its own items add.
    baseline: str = "untouched"
    # upper bounds on what the domain notes of a self-edit, e.g. {copied: 0.25}: a self-edit that copies more than a
    # quarter of its words from the context is not cloned, however well it scored. On the knowledge domain the
    # reward pays for copying (16 passages, KL M-step: self-edits copying over a quarter of their words won 62-70 %
    # of their episodes, the others 28-38 %), so the M-step learns to restate the passage rather than to write.
    winner_max_notes: dict[str, float] = field(default_factory=dict)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=1.0, top_p=0.95))
    inner: InnerConfig = field(default_factory=InnerConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    seed: int = 0

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, not {self.reward!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, not {self.baseline!r}")
        if self.sft.mode not in ("lora", "full"):
            raise ValueError(f"sft.mode must be 'lora' or 'full', not {self.sft.mode!r}")
        if self.sft.mode == "full" and self.sft.kl_to_base:
            raise ValueError("sft.kl_to_base needs sft.mode=lora: the base it stays near is the adapter switched off")
        if self.rounds < 1 or self.k < 1 or self.seeds < 1:
            raise ValueError("rounds, k and seeds must all be at least 1")


def winners(episodes: list[dict], baseline: float, cfg: RestEMConfig) -> list[dict]:
    """The self-edits of one context that the M-step clones, according to the reward mode."""
    scored = [e for e in episodes if e.get("score") is not None]
    if cfg.winner_max_notes:
        for e in scored:  # a resumed round whose episodes were all logged parses nothing: check its records here
            check_noted(cfg, e["notes"])
        scored = [e for e in scored if all(e["notes"][n] <= limit for n, limit in cfg.winner_max_notes.items())]
    if cfg.require_improvement:
        scored = [e for e in scored if e["score"] > baseline]
    if not scored:
        return []
    if cfg.reward == "binary":
        return scored
    return [max(scored, key=lambda e: (e["score"], -e["sample"]))]


def check_noted(cfg: RestEMConfig, notes: dict) -> None:
    """A name in `winner_max_notes` that a self-edit's notes lack is a config error, not a bound never applied."""
    unnoted = set(cfg.winner_max_notes) - set(notes)
    if unnoted:
        raise ValueError(f"restem.winner_max_notes: the domain notes no {sorted(unnoted)} of a self-edit "
                         f"(it notes {sorted(notes)})")


def reward(score: float | None, baseline: float, mode: str) -> float | None:
    if score is None:
        return None  # a failed episode has no reward: it is counted as failed, never averaged as a score
    return {"binary": float(score > baseline), "best": score, "gain": score - baseline}[mode]


def round_dir(run: Run, r: int) -> Path:
    return run.path / f"round-{r}"


def sft_generator(model, tokenizer, examples: list[Example], cfg: SFTConfig, on_step=None):
    """Behaviour cloning of rewarded self-edits; returns the finetuned model (adapter merged in)."""
    plan = UpdatePlan(examples)
    inner = InnerConfig(rank=cfg.rank, alpha=cfg.alpha, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                        max_length=cfg.max_length, seed=cfg.seed)
    if cfg.checkpointing:  # transformers' default, non-reentrant: the adapters get grads though no input needs one
        model.activation_checkpointing_enable()
    try:
        if cfg.mode == "full":
            torch.manual_seed(cfg.seed)
            for p in model.parameters():
                p.requires_grad_(True)
            train(model, tokenizer, plan, inner, on_step=on_step)
            return model
        with fresh_adapter(model, inner) as peft_model:
            train(peft_model, tokenizer, plan, inner, on_step=on_step, kl_to_base=cfg.kl_to_base)
            peft_model.merge_adapter()  # fold the update into the base weights before the adapter is removed
        return model
    finally:
        if cfg.checkpointing:
            model.activation_checkpointing_disable()


def _save_atomically(model, tokenizer, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)


@dataclass
class ContextJob:
    """The E-step work left on one context of round `round`: its baseline (None: still to measure) and the
    self-edit samples not yet scored."""

    round: int
    context: int
    baseline: float | None
    samples: list[int]


# Runs a round's jobs and yields their records (baseline and episode) as they finish, each exactly once:
# `local_episodes` in this process, or `seal.distributed.RayEpisodes` on workers that load the round's generator.
Episodes = Callable[[list[ContextJob]], Iterator[dict]]
RemoteEpisodes = Callable[[list[ContextJob], str], Iterator[dict]]  # (jobs, generator source) -> records


def restem(
    domain: Domain,
    contexts: list[Any],
    cfg: RestEMConfig,
    run: Run,
    on_round: Callable[[int, dict], None] | None = None,
    remote: RemoteEpisodes | None = None,
) -> list[dict]:
    """Run (or resume) all rounds; returns one summary per round. Generators are saved as round-N/.

    With `remote`, the E-step's episodes run wherever it sends them (each worker holding its own models);
    the records, the resume and the M-step are the same as in this process.
    """
    if cfg.baseline == "context" and not hasattr(domain, "context_plan"):
        raise ValueError(f"baseline=context needs an update on the context alone, which the {domain.name} domain "
                         "does not define")
    summaries = []
    student = models.load(dataclasses.replace(cfg.generator, name=cfg.learner)) if cfg.learner and not remote else None
    for r in range(1, cfg.rounds + 1):
        source = cfg.generator.name if r == 1 else str(round_dir(run, r - 1))
        load = functools.partial(models.load, dataclasses.replace(cfg.generator, name=source))
        if remote:  # the workers hold the generator; this process loads it for the M-step only
            model = tokenizer = None
            episodes = functools.partial(remote, source=source)
        else:
            model, tokenizer = load()
            learner, learner_tok = student or (model, tokenizer)
            episodes = local_episodes(domain, contexts, cfg, model, tokenizer, learner, learner_tok)
        summary = e_step(domain, contexts, cfg, run, r, episodes)
        target = round_dir(run, r)
        if not (target / "config.json").is_file():
            if not summary["training_examples"]:
                raise UpdateError(f"round {r}: no self-edit beat its baseline, so there is nothing to clone")
            if model is None:
                model, tokenizer = load()
            examples = [x for e in summary["winners"]
                        for x in self_edit_examples(tokenizer, domain, contexts[e["context"]], e["text"], cfg.sampling)]
            start = time.perf_counter()
            with step_bar(f"round {r} M-step") as on_step:
                model = sft_generator(model, tokenizer, examples, cfg.sft, on_step=on_step)
            _save_atomically(model, tokenizer, target)
            del model
            run.log({"event": "m_step", "round": r, "examples": len(examples), "seconds": time.perf_counter() - start,
                     "peak_gb": peak_resident_gb(), "resident_gb_after": release_freed_memory()})
        summary.pop("winners")
        summaries.append(summary)
        if on_round:
            on_round(r, summary)
        model = None
    return summaries


def peak_resident_gb() -> float:
    """The most memory this process has held since it started, loading included and file pages mapped in counted
    (Linux reports kB): how near a round came to the machine's memory."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2)


def release_freed_memory() -> float | None:
    """Hands the heap's free pages back to the OS and returns this process's resident GB (None off Linux).
    An M-step on Qwen2.5-0.5B peaks near 17 GB, and the process still held 16.7 GB when the next round's
    Ray workers started beside it on a 23 GB machine: Ray's memory monitor killed one and the run stopped.
    glibc's `malloc_trim` is the only way to return freed arena pages; no library wraps it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, AttributeError):  # not glibc or not Linux: nothing to trim, nothing to read
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e9, 2)


def e_step(domain, contexts, cfg: RestEMConfig, run: Run, r: int, episodes: Episodes) -> dict:
    """Sample, apply, score and reward k self-edits per context; resumes from the logged episodes."""
    done = {(e["context"], e["sample"]): e for e in run.records(event="episode", round=r)}
    baselines = {b["context"]: b["score"] for b in run.records(event="baseline", round=r)}
    jobs = [ContextJob(r, i, baselines.get(i), [j for j in range(cfg.k) if (i, j) not in done])
            for i in range(len(contexts))]
    jobs = [job for job in jobs if job.baseline is None or job.samples]
    with progress_bar() as bar:
        task = bar.add_task(f"round {r} E-step", total=len(contexts) * cfg.k, completed=len(done), status="")
        for record in episodes(jobs):
            run.log(record)
            if record["event"] == "baseline":
                baselines[record["context"]] = record["score"]
            else:
                done[record["context"], record["sample"]] = record
                bar.update(task, advance=1, status=f"context {record['context']}")
    missing = [(i, j) for i in range(len(contexts)) for j in range(cfg.k) if (i, j) not in done]
    if missing or len(baselines) < len(contexts):
        raise RuntimeError(f"round {r}: the E-step ended with {len(missing)} episodes unscored")
    all_winners, rewards, scores, metrics, notes, n_episodes = [], [], [], [], [], 0
    for i in range(len(contexts)):
        eps = [done[i, j] for j in range(cfg.k)]
        all_winners += winners(eps, baselines[i], cfg)
        n_episodes += len(eps)
        usable = [e for e in eps if e["score"] is not None]
        rewards += [e["reward"] for e in usable]
        scores += [e["score"] for e in usable]
        metrics += [e["metrics"] for e in usable if e.get("metrics")]
        notes += [e["notes"] for e in eps if e.get("notes")]
    return {
        "round": r,
        "contexts": len(contexts),
        "episodes": n_episodes,
        "failed": n_episodes - len(scores),  # episodes that could not run: in no mean below
        "baseline": cfg.baseline,
        "mean_baseline": sum(baselines.values()) / len(baselines),
        "mean_score": sum(scores) / len(scores) if scores else None,  # over the episodes that ran
        "mean_reward": sum(rewards) / len(rewards) if rewards else None,
        # the answer protocol's other rates over the episodes that ran (recitation, identical answers, F1, ...)
        **{f"mean_{m}": sum(x[m] for x in metrics) / len(metrics) for m in (metrics[0] if metrics else {})},
        # what the domain measured of the parsed self-edits (e.g. their items, the share copied from the context)
        **{f"self_edit_{n}": sum(x[n] for x in notes) / len(notes) for n in _numeric(notes)},
        "training_examples": len(all_winners),
        "winners": all_winners,
    }


def _numeric(notes: list[dict]) -> list[str]:
    """The note names every parsed self-edit has a number for (an ARC self-edit notes a strategy, not a number)."""
    names = set.intersection(*(set(n) for n in notes)) if notes else set()
    return sorted(n for n in names if all(isinstance(x[n], (int, float)) and not isinstance(x[n], bool) for x in notes))


def local_episodes(domain, contexts, cfg: RestEMConfig, model, tokenizer, learner, learner_tok) -> Episodes:
    """The jobs run one after another in this process, on these models."""
    def run(jobs: list[ContextJob]) -> Iterator[dict]:
        for job in jobs:
            yield from context_episodes(domain, contexts[job.context], job, cfg, model, tokenizer, learner, learner_tok)

    return run


def context_episodes(domain, context, job: ContextJob, cfg: RestEMConfig, model, tokenizer, learner,
                     learner_tok) -> Iterator[dict]:
    """One context's records: its baseline if not known yet, then its missing episodes chunk by chunk
    (`cfg.inner.parallel` at a time, so that a kill loses at most one chunk). The k self-edits are sampled
    with a seed of the round and context, so any worker writes the same ones."""
    r, i = job.round, job.context
    baseline = job.baseline
    if baseline is None:
        baseline = baseline_score(domain, context, cfg, learner, learner_tok)
        yield {"event": "baseline", "round": r, "context": i, "score": baseline}
    if not job.samples:
        return
    texts = sample_self_edits(model, tokenizer, domain, [context], cfg.sampling, cfg.k,
                              seed=cfg.seed + 100_003 * r + 1_009 * i)[0]
    for start in range(0, len(job.samples), cfg.inner.parallel):
        chunk = job.samples[start:start + cfg.inner.parallel]
        # a loop, not `yield from` a list: Ray's streaming generators send() into the generator they run
        for record in score_self_edits(domain, context, {j: texts[j] for j in chunk}, cfg, learner, learner_tok,
                                       baseline, r, i):
            yield record


def baseline_score(domain, context, cfg: RestEMConfig, learner, tokenizer) -> float:
    """What a self-edit of this context must beat (`cfg.baseline`); an update is scored over the same
    `seeds` inner-loop seeds as the self-edits it is compared with."""
    if cfg.baseline == "untouched":
        return domain.evaluate(learner, tokenizer, context).value
    plan = domain.context_plan(context)
    scores = [adapt_and_evaluate_all(learner, tokenizer, domain, context, [plan], [inner])[0].score.value
              for inner in seeded_inners(cfg)]
    return sum(scores) / len(scores)


def seeded_inners(cfg: RestEMConfig) -> list[InnerConfig]:
    """The inner loop once per seed of `cfg.seeds`: every update a reward compares is scored over the same ones."""
    return [dataclasses.replace(cfg.inner, seed=cfg.inner.seed + n) for n in range(cfg.seeds)]


def score_self_edits(domain, context, texts: dict[int, str], cfg: RestEMConfig, learner, tokenizer,
                     baseline: float, r: int, i: int) -> list[dict]:
    """Apply self-edits {sample: text} to the learner (batched; mean over `seeds` inner-loop seeds), with rewards."""
    start = time.perf_counter()
    records, plans = {}, {}
    for j, text in texts.items():
        records[j] = {"event": "episode", "round": r, "context": i, "sample": j, "text": text, "score": None,
                      "error": None}
        try:
            plans[j] = domain.parse(context, text)
            records[j]["notes"] = plans[j].notes
            check_noted(cfg, plans[j].notes)  # before any update, not when the round's winners are drawn hours later
        except SelfEditError as e:
            records[j]["error"] = str(e)
    values: dict[int, list[Score]] = {j: [] for j in plans}
    try:
        for seeded in seeded_inners(cfg):
            outcomes = adapt_and_evaluate_all(learner, tokenizer, domain, context, list(plans.values()),
                                              [seeded] * len(plans))
            for j, outcome in zip(plans, outcomes):
                values[j].append(outcome.score)
    except UpdateError as e:  # a plan with nothing to train on spoils its batch: score the chunk one by one
        if len(plans) == 1:
            records[next(iter(plans))]["error"] = str(e)
            values = {}
        else:
            return [rec for j, text in texts.items()
                    for rec in score_self_edits(domain, context, {j: text}, cfg, learner, tokenizer, baseline, r, i)]
    seconds = (time.perf_counter() - start) / len(texts)
    for j, vs in values.items():
        records[j]["score"] = sum(v.value for v in vs) / len(vs)
        records[j]["metrics"] = {m: sum(v.metrics[m] for v in vs) / len(vs) for m in vs[0].metrics}
    for rec in records.values():
        rec["reward"] = reward(rec["score"], baseline, cfg.reward)
        rec["seconds"] = seconds
    return list(records.values())
