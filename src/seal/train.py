"""`seal train <domain>`: ReST-EM rounds on a domain's training contexts, in a resumable run directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from seal.config import EvalConfig
from seal.domains.knowledge.data import load_squad, split_eval
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.plots import plot_rounds
from seal.rl.restem import RestEMConfig, restem
from seal.runs import Run


@dataclass
class TrainKnowledgeConfig:
    restem: RestEMConfig = field(default_factory=RestEMConfig)
    data: str = "../shared/data/squad/squad_val.json"
    passages: int = 12  # training passages, taken from outside the 200-passage evaluation set
    offset: int = 0
    prompt: str = "implications"
    eval: EvalConfig = field(default_factory=EvalConfig)


def train_knowledge(cfg: TrainKnowledgeConfig, out: str | Path) -> dict:
    _, rest = split_eval(load_squad(cfg.data))
    contexts = [p for p in rest[cfg.offset:] if p.questions][: cfg.passages]
    if len(contexts) < cfg.passages:
        raise ValueError(f"only {len(contexts)} training passages with questions at offset {cfg.offset}")
    domain = KnowledgeDomain(cfg.prompt, cfg.restem.inner.max_sequences, cfg.eval)
    run = Run(out, cfg)
    rounds = restem(domain, contexts, cfg.restem, run, on_round=lambda r, s: run.log({"event": "round", **s}))
    results = {"generator": cfg.restem.generator.name, "learner": cfg.restem.learner or "generator",
               "rounds": rounds, "generators": [str(Path(out) / f"round-{s['round']}") for s in rounds]}
    plot_rounds(rounds, run.path / "plots" / "rounds.png")
    run.report(_report(results))
    run.finish(results)
    return results


def _report(results: dict) -> str:
    lines = [f"# ReST-EM on knowledge incorporation: {results['generator']} (learner: {results['learner']})", "",
             "| round | contexts | episodes | failed | mean baseline | mean adapted | mean reward | cloned self-edits |",
             "|---|---|---|---|---|---|---|---|"]
    for s in results["rounds"]:
        lines.append(f"| {s['round']} | {s['contexts']} | {s['episodes']} | {s['failed']} | {s['mean_baseline']:.1%} | "
                     f"{s['mean_score']:.1%} | {s['mean_reward']:.3f} | {s['training_examples']} |")
    lines += ["", "Generators: " + ", ".join(f"`{g}`" for g in results["generators"])]
    return "\n".join(lines) + "\n"
