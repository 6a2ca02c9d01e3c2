"""The general-capability probe: does a memory still read and write as well as the untouched model?

Learning one document must not cost the model what it could already do. The probe is fixed when a
memory is created: questions the untouched model answers correctly (drawn reproducibly from seal's own
small probe set, or from a SQuAD-format file, e.g. passages outside a benchmark's sequences), asked with
their passage in the prompt by default (reading, not knowledge), plus the perplexity of a fixed text.
"""

from __future__ import annotations

import json
import math
import random
from importlib.resources import files
from pathlib import Path

from seal.domains.knowledge.data import Passage, Question, load_squad, split_eval
from seal.generation import loglik
from seal.config import to_dict
from seal.memory.config import MemoryConfig, ProbeConfig

MAX_TEXT_TOKENS = 512
_CHOSEN: dict[str, dict] = {}  # see choose


def probe_source(cfg: ProbeConfig) -> tuple[list[Passage], str]:
    """(passages with questions, perplexity text): seal's shipped probe, or passages of `cfg.data` outside the
    paper's evaluation split, shuffled with `cfg.seed`; the text is the first passage not asked about."""
    if not cfg.data:
        data = json.loads((files("seal") / "assets" / "general_probe.json").read_text(encoding="utf-8"))
        return [Passage(p["title"], p["context"], tuple(_questions(p))) for p in data["passages"]], data["text"]
    _, rest = split_eval(load_squad(Path(cfg.data)))
    rest = list(rest)
    random.Random(cfg.seed).shuffle(rest)
    chosen, count = [], 0
    while rest and count < cfg.candidates:
        passage = rest.pop(0)
        chosen.append(passage)
        count += len(passage.questions)
    if not rest:
        raise ValueError(f"{cfg.data} has too few passages for a probe of {cfg.candidates} questions and a text")
    return chosen, rest[0].context


def _questions(raw: dict) -> list[Question]:
    return [Question(q["question"], q["answer"]) for q in raw["questions"]]


def candidates(cfg: ProbeConfig) -> tuple[list[dict], str]:
    """The probe's candidate items ({title, question, answer, support}) and its perplexity text."""
    passages, text = probe_source(cfg)
    items = [{"title": p.title, "question": q.question, "answer": q.answer,
              "support": [p.title, p.context] if cfg.open_book else None}
             for p in passages for q in p.questions]
    return items[: cfg.candidates], text


def perplexity(model, tokenizer, text: str) -> float:
    """exp(mean next-token loss) of `text` (its first MAX_TEXT_TOKENS tokens): every token after the first
    is scored, as the log-likelihood of the rest given the first."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:MAX_TEXT_TOKENS]
    if len(ids) < 2:
        raise ValueError(f"the perplexity text needs at least two tokens, got {text!r}")
    (total,) = loglik(model, tokenizer, [(ids[:1], ids[1:])])
    return math.exp(-total / (len(ids) - 1))


def probe_passages(items: list[dict]) -> list[tuple[str, str]]:
    """The distinct (title, text) passages the probe draws on: the router's background documents."""
    seen = {}
    for item in items:
        if item.get("support"):
            seen.setdefault(tuple(item["support"]), None)
    return list(seen)


def holds(before: dict, after: dict, cfg: ProbeConfig) -> tuple[bool, str]:
    """Whether the probe held from `before` to `after` under cfg's tolerances, and why not."""
    if before.get("accuracy") is not None and after["accuracy"] < before["accuracy"] - cfg.max_drop:
        return False, f"general probe fell from {before['accuracy']:.0%} to {after['accuracy']:.0%}"
    if after["perplexity"] > before["perplexity"] * cfg.max_perplexity_ratio:
        return False, f"perplexity on the probe text rose from {before['perplexity']:.1f} to {after['perplexity']:.1f}"
    return True, ""


def choose(loaded, domain, cfg: MemoryConfig) -> dict:
    """The probe of a new memory: the candidates the untouched model (`loaded`, a LoadedVersion) answers right,
    graded by `domain`, and the perplexity text. The same model and settings always choose the same probe, so
    it is chosen once per process."""
    key = json.dumps([to_dict(cfg.model), to_dict(cfg.probe), to_dict(cfg.eval)], sort_keys=True)
    if key not in _CHOSEN:
        loaded.load_base()
        items, text = candidates(cfg.probe)
        details = domain.score(_as_passage(items), loaded.answer(items)).details
        kept = [item for item, d in zip(items, details) if d["correct"]]
        _CHOSEN[key] = {"items": kept, "background": probe_passages(items), "text": text, "tried": len(items),
                        "base": {"accuracy": 1.0 if kept else None, "perplexity": loaded.perplexity(text)}}
    return _CHOSEN[key]


def measure(loaded, domain, probe: dict) -> dict:
    """Accuracy on the probe's items (None when it kept none) and perplexity on its text, of the held weights."""
    accuracy = None
    if probe["items"]:
        accuracy = domain.score(_as_passage(probe["items"]), loaded.answer(probe["items"])).value
    return {"accuracy": accuracy, "perplexity": loaded.perplexity(probe["text"])}


def _as_passage(items: list[dict]) -> Passage:
    return Passage("probe", "", tuple(Question(i["question"], i["answer"]) for i in items))
