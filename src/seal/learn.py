"""`seal learn`: a model learns a document through its own self-edit, and keeps the update only if it helped.

Baseline closed-book accuracy on the held-out questions, k sampled self-edits, one fresh LoRA per
self-edit, adapted accuracy, then the gate: the best adapter is kept (saved in PEFT format) only when
it beats the baseline. Everything shown on screen is also recorded in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from rich.panel import Panel
from rich.table import Table

from seal import models
from seal.config import LearnConfig
from seal.domains.base import SelfEditError, UpdateError, UpdatePlan
from seal.domains.knowledge.answers import answers_table
from seal.domains.knowledge.data import Passage, Question
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.grading import describe
from seal.episode import adapt_and_evaluate
from seal.generation import sample_self_edits
from seal.inner.batched import adapt_and_evaluate_many, batchable
from seal.plots import plot_learn
from seal.progress import console, step_bar
from seal.inner.lora import check_target_modules
from seal.runs import Run, check_new, check_writable, first_missing

ADAPTER_META = "seal.json"


def _answers_table(title: str, score) -> Table:
    """The graded answers (first sentence of each generation), with recitation (R) and repetition (=) marked."""
    m = score.metrics
    table = Table(title=f"{title}: closed-book accuracy {m['accuracy']:.0%}, F1 {m['f1']:.2f}, "
                        f"recited {m['recitation']:.0%}, identical {m['identical']:.0%}, unrecited {m['unrecited']:.0%}",
                  show_lines=False)
    table.add_column("question")
    table.add_column("gold")
    table.add_column("answer")
    table.add_column("", justify="center")
    for d in score.details:
        marks = ("✓" if d["correct"] else "✗") + (" R" if d["recites"] else "") + (" =" if d["identical"] else "")
        table.add_row(d["question"], d["gold"], d["answer"] or "[dim](empty)", marks)
    return table


LEARN_FILES = {"config.yaml", "metrics.jsonl", "plots", "candidates", "adapter", "report.md", ".report.md.tmp",
               ".result.json.tmp"}  # everything a learn run writes into its directory


def unfinished(out: Path) -> bool:
    """Whether `out` holds a learn run that never finished (killed): its own files only, and no result.json."""
    return ((out / "config.yaml").is_file() and not (out / "result.json").exists()
            and {p.name for p in out.iterdir()} <= LEARN_FILES)


def _discard(out: Path, made: Path | None) -> None:
    """Remove what a failed learn run wrote: the directories it made, or the contents of the one it was given
    (which was empty, or held an unfinished run)."""
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
    elif out.is_dir():
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def _rank(score) -> tuple[float, float]:
    """Candidates compare by credited accuracy, then by how little they recite."""
    return score.value, -score.metrics["recitation"]


def _sample_plans(model, tokenizer, domain, passage, cfg: LearnConfig) -> list[tuple[str, UpdatePlan | SelfEditError]]:
    """`num_samples` self-edits with their update plans. Each unusable one (a small model sometimes writes a
    lone "Imprecisions:") is replaced by a fresh sample, up to `cfg.resample` times, so that one unlucky
    sample does not end the run; every try is kept, the unusable ones with their reason."""
    tries, wanted = [], cfg.sampling.num_samples
    for attempt in range(cfg.resample + 1):
        texts = sample_self_edits(model, tokenizer, domain, [passage], cfg.sampling, wanted, seed=cfg.seed + attempt)[0]
        for text in texts:
            try:
                tries.append((text, domain.parse(passage, text)))
            except SelfEditError as e:
                tries.append((text, e))
        wanted = sum(isinstance(plan, SelfEditError) for _, plan in tries[-len(texts):])
        if not wanted:
            break
    return tries


def _update(model, tokenizer, domain, passage, plan: UpdatePlan, inner, save_to: Path, on_step):
    """One candidate's update, saved as a PEFT adapter. Through the batched inner loop wherever it applies, even
    for one candidate: it packs the sequences without padding, the same update (tests/test_inner_batched.py) in about
    half peft's time on the default self-edit."""
    if not batchable(inner):
        return adapt_and_evaluate(model, tokenizer, domain, passage, plan, inner, save_to=save_to, on_step=on_step)
    [outcome] = adapt_and_evaluate_many(model, tokenizer, domain, passage, [plan], [inner], save_to=[save_to],
                                        on_step=lambda step, total, losses: on_step(step, total, losses[0]))
    return outcome


def learn(passage: Passage, questions: tuple[Question, ...], cfg: LearnConfig, out: str | Path) -> dict:
    """Run the whole learn workflow; returns (and writes to `out/result.json`) the result record.

    The inputs and the output directory are checked before anything is written. A learn run is short, so it
    restarts rather than resumes: a run that fails removes what it wrote, and a rerun into the directory of
    one that was killed (its files only, no result.json) starts it again from scratch.
    """
    start = time.perf_counter()
    if not questions:
        raise ValueError("learn needs at least one question to check whether the update helped")
    if cfg.inner.method != "lora":
        raise ValueError("learn keeps its update as a PEFT adapter, so inner.method must be 'lora'")
    out = Path(out)
    restart = out.is_dir() and unfinished(out)
    if restart:
        check_writable(out)
    else:
        check_new(out, results_name="result.json", resume=False)
    passage = dataclasses.replace(passage, questions=tuple(questions))
    domain = KnowledgeDomain(cfg.prompt, cfg.inner.max_sequences, cfg.eval, cfg.qa_format, drop_copied=cfg.drop_copied)
    made = first_missing(out)
    try:
        with console.status(f"loading {cfg.model.name}"):
            model, tokenizer = models.load(cfg.model)
        check_target_modules(model, cfg.inner)
        if restart:
            console.print(f"[yellow]{out} holds a learn run that did not finish: starting it again")
            _discard(out, None)
        run = Run(out, cfg, results_name="result.json", resume=False)
        return _learn(run, model, tokenizer, domain, passage, cfg, start)
    except BaseException:  # a user error, a bug or Ctrl-C: leave no half-written run behind
        if not (out / "result.json").exists():
            _discard(out, made)
        raise


def _learn(run: Run, model, tokenizer, domain: KnowledgeDomain, passage: Passage, cfg: LearnConfig,
           start: float) -> dict:
    timings = {"load": time.perf_counter() - start}

    t = time.perf_counter()
    baseline = domain.evaluate(model, tokenizer, passage)
    timings["baseline_eval"] = time.perf_counter() - t
    run.log({"event": "baseline", **baseline.metrics})
    console.print(_answers_table("Before", baseline))

    t = time.perf_counter()
    with console.status(f"writing {cfg.sampling.num_samples} self-edit(s)"):
        tries = _sample_plans(model, tokenizer, domain, passage, cfg)
    timings["self_edit_generation"] = time.perf_counter() - t

    candidates_dir = run.path / "candidates"
    self_edits, best = [], None
    t = time.perf_counter()
    for i, (text, plan) in enumerate(tries):
        console.print(Panel(text or "(empty)", title=f"self-edit {i + 1}/{len(tries)}", expand=False))
        record = {"index": i, "text": text}
        try:
            if isinstance(plan, SelfEditError):
                raise plan
            with step_bar(f"training adapter {i + 1}") as on_step:
                outcome = _update(model, tokenizer, domain, passage, plan, cfg.inner, candidates_dir / str(i), on_step)
        except (SelfEditError, UpdateError) as e:
            record["error"] = str(e)
            console.print(f"[red]self-edit {i + 1} could not be used: {e}")
        else:
            record.update(items=plan.notes["items"], copied=plan.notes["copied"], dropped=plan.notes.get("dropped", 0),
                          sequences=len(plan.examples),
                          adapted_accuracy=outcome.score.value, metrics=outcome.score.metrics,
                          answers=outcome.score.details, train=dataclasses.asdict(outcome.report))
            if best is None or _rank(outcome.score) > _rank(best[1].score):
                best = (i, outcome)
        run.log({"event": "self_edit", **{k: v for k, v in record.items() if k != "answers"}})
        self_edits.append(record)
    timings["updates"] = time.perf_counter() - t

    adapted = best[1].score if best else None
    if adapted is not None:
        console.print(_answers_table("After", adapted))
    accepted = adapted is not None and (adapted.value > baseline.value or not cfg.gate)
    if accepted:
        adapter_dir = run.path / "adapter"
        (candidates_dir / str(best[0])).rename(adapter_dir)
        base = cfg.model.name if cfg.model.name in models.EMBEDDED else models.identity(cfg.model.name)  # from any cwd
        (adapter_dir / ADAPTER_META).write_text(json.dumps({"model": base, "title": passage.title}))
    shutil.rmtree(candidates_dir, ignore_errors=True)

    result = {
        "model": cfg.model.name,
        "title": passage.title,
        "grader": describe(domain.grader),
        "baseline_accuracy": baseline.value,
        "adapted_accuracy": adapted.value if adapted else None,
        "baseline_metrics": baseline.metrics,
        "adapted_metrics": adapted.metrics if adapted else None,
        "accepted": accepted,
        "gate": cfg.gate,
        "chosen_self_edit": best[0] if best else None,
        "self_edits": self_edits,
        "baseline_answers": baseline.details,
        "error": None if best else "no self-edit produced a trainable update",
        "timings": timings,
        "seconds": time.perf_counter() - start,
    }
    plot_learn(result, run.path / "plots" / "learn.png")
    run.report(_report(result))
    run.finish(result)
    verdict = "[green]accepted: adapter saved" if accepted else "[yellow]discarded: the update did not help"
    if adapted is not None:
        console.print(f"{verdict} ({baseline.value:.0%} -> {adapted.value:.0%}) in {result['seconds']:.0f} s; "
                      f"run directory {run.path}")
    else:
        console.print(f"[red]no usable self-edit; nothing learned. Run directory {run.path}")
    return result


def _report(r: dict) -> str:
    lines = [
        f"# seal learn: {r['title']}",
        "",
        f"- model: `{r['model']}`",
        f"- baseline: {_metrics_line(r['baseline_metrics'])}",
        f"- adapted: {'n/a' if r['adapted_metrics'] is None else _metrics_line(r['adapted_metrics'])}",
        f"- decision: {'accepted (adapter/ saved)' if r['accepted'] else 'discarded'}",
        f"- total time: {r['seconds']:.1f} s "
        + "(" + ", ".join(f"{k} {v:.1f} s" for k, v in r["timings"].items()) + ")",
        "",
        "## Answers before the update",
        "",
        *answers_table(r["baseline_answers"]),
        "",
        "## Self-edits",
    ]
    for s in r["self_edits"]:
        dropped = f", {s['dropped']} of them copying it not trained" if s.get("dropped") else ""
        status = s.get("error") or (f"{s['items']} items ({s['copied']:.0%} of their words copied from the document"
                                    f"{dropped}); {_metrics_line(s['metrics'])}")
        lines += ["", f"### {s['index'] + 1}: {status}", "", "```", s["text"], "```"]
        if "answers" in s:
            lines += ["", *answers_table(s["answers"])]
    return "\n".join(lines) + "\n"


def _metrics_line(m: dict) -> str:
    return (f"accuracy {m['accuracy']:.1%}, F1 {m['f1']:.2f}, exact {m['em']:.1%}, recited {m['recitation']:.1%}, "
            f"identical {m['identical']:.1%}, unrecited {m['unrecited']:.1%}")
