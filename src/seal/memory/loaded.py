"""The version a Memory process holds in RAM: the base model with the version's adapters folded in, and the
adapters it keeps apart with the index that routes questions to them. It answers, and it becomes another
version (or a learn's candidate) by folding in only what it lacks, reloading the base when it must unfold."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from seal import models
from seal.domains.knowledge.prompts import answer_prompt
from seal.generation import chat_prompt
from seal.memory import probe as probes
from seal.memory.config import MemoryConfig
from seal.memory.strategies import DocumentIndex, State
from seal.memory.weights import fold_in, read_adapter, routed_generate, routed_loglik, routed_stream

ANSWERS_KEPT = 4096  # answers remembered (see LoadedVersion.answer); beyond it they are forgotten all at once


class LoadedVersion:
    def __init__(self, cfg: MemoryConfig):
        self.cfg = cfg
        self.model = self.tokenizer = None
        self.name: str | None = None  # the version held; None: nothing yet, or a learn's candidate
        self.merged: list[tuple[str, float]] = []  # (adapter id, scale) folded into the weights, in order
        self.routed: list[tuple[dict, Any]] = []  # ({title, text} of the document, its adapter's weights)
        self.routed_ids: list[str] = []  # the adapter id of each routed document
        self._answers: dict[tuple, str] = {}  # (folded adapters, routed adapter id, prompt) -> greedy answer
        self._perplexities: dict[tuple, float] = {}  # (folded adapters, text) -> perplexity
        self.index: DocumentIndex | None = None
        self.titles: list[str] = []  # every document the version holds, folded in or kept apart
        self.topics: DocumentIndex | None = None  # finds which of them a question is about

    def load_base(self):
        if self.model is None:
            self.model, self.tokenizer = models.load(self.cfg.model)
            self.merged, self.name = [], None
        return self.model, self.tokenizer

    def become(self, name: str | None, state: State, adapter_path: Callable[[str], Path],
               document: Callable[[str], dict], background: list[tuple[str, str]]) -> None:
        """Hold `state` (version `name`, or None for a candidate): fold in the adapters it lacks, reloading the
        base first when it holds adapters the state does not; load the routed adapters and their index."""
        self.load_base()
        folded = state.folded()
        if self.merged != folded[: len(self.merged)]:
            self.model = None
            self.load_base()
        for adapter_id, scale in folded[len(self.merged):]:
            fold_in(self.model, self.cfg.inner, adapter_path(adapter_id), scale)
            self.merged.append((adapter_id, scale))
        held = {d["id"]: {k: document(d["id"])[k] for k in ("title", "text")} for d in state.documents}
        self.routed = [(held[r["document"]], read_adapter(self.model, self.cfg.inner, adapter_path(r["adapter"]))[1])
                       for r in state.routed]
        self.routed_ids = [r["adapter"] for r in state.routed]
        self.index = self._index([d for d, _ in self.routed], background)
        self.titles, self.topics = [d["title"] for d in held.values()], self._index(list(held.values()), background)
        self.name = name

    def _index(self, documents: list[dict], background: list[tuple[str, str]]) -> DocumentIndex | None:
        texts = [f"{d['title']} {d['text']}" for d in documents]
        return (DocumentIndex(texts, [f"{t} {x}" for t, x in background], self.cfg.router.min_coverage)
                if documents else None)

    def route(self, question: str, topic: str | None = None) -> int | None:
        """Which routed document `question` goes to (its index in `routed`), None for no adapter."""
        if self.index is None:
            return None
        return self.index.route(f"{topic} {question}" if topic else question)

    def routed_prompt(self, item: dict, context: list[tuple[str, str]] | None) -> tuple[str, int | None]:
        """The chat prompt of an item ({title, question, support}) and the routed document it goes to. A question
        with no topic that is about a document the version holds (the one it routes to, else the one the same
        index finds among all held) is asked under that document's title: the closed-book prompt the gate
        measured the update with (asked bare, the default model answered "As an AI language model, I cannot ..."
        where the gate had seen 4 of 6 right: benchmarks/serve_story.py)."""
        route = self.route(item["question"], item.get("title"))
        topic = item.get("title") or (self.topic(item["question"]) if route is None else self.routed[route][0]["title"])
        return chat_prompt(self.tokenizer, user_turn(item["question"], topic, item.get("support"), context)), route

    def topic(self, question: str) -> str | None:
        """The title of the held document `question` is about, None when it is about none of them."""
        found = self.topics.route(question) if self.topics else None
        return None if found is None else self.titles[found]

    def answer(self, items: list[dict], context: list[tuple[str, str]] | None = None) -> list[str]:
        """Greedy answers to items ({title, question, support}), each through the adapter it routes to. A prompt
        already answered through the same folded-in weights and routed adapter gets that answer again without
        decoding: a router's update leaves the weights alone, so after it the general probe's questions and
        those of the documents it did not touch are answered as they were (a fifth of a router learn's time)."""
        routed = [self.routed_prompt(i, context) for i in items]
        folded = tuple(self.merged)
        keys = [(folded, None if r is None else self.routed_ids[r], p) for p, r in routed]
        known = {k: self._answers[k] for k in keys if k in self._answers}
        new = {k: (p, r) for k, (p, r) in zip(keys, routed) if k not in known}
        if new:
            texts = routed_generate(self.model, self.tokenizer, self.cfg.inner, [w for _, w in self.routed],
                                    [p for p, _ in new.values()], [r for _, r in new.values()],
                                    max_new_tokens=self.cfg.eval.max_new_tokens, batch_size=self.cfg.eval.batch_size)
            known.update(zip(new, texts))
            if len(self._answers) + len(new) > ANSWERS_KEPT:  # bounded, for a service that runs for months
                self._answers.clear()
            self._answers.update(zip(new, texts))
        return [known[k] for k in keys]

    def answer_logprob(self, items: list[dict], answers: list[str]) -> list[float]:
        """Mean log-probability per token of each answer after its item's closed-book prompt, through the adapter
        the item routes to: how much likelier an update made an answer, where accuracy only says whether it became
        the greedy one (a 0 -> 0 quiz tie hides an update that taught something)."""
        routed = [self.routed_prompt(i, None) for i in items]
        sums = routed_loglik(self.model, self.tokenizer, self.cfg.inner, [w for _, w in self.routed],
                             [(p, a) for (p, _), a in zip(routed, answers)], [r for _, r in routed])
        return [total / len(self.tokenizer(a, add_special_tokens=False)["input_ids"]) for total, a in zip(sums, answers)]

    def answer_stream(self, item: dict, context: list[tuple[str, str]] | None = None) -> Iterator[str]:
        """`answer` of one item, in pieces as they are generated."""
        prompt, route = self.routed_prompt(item, context)
        adapter = None if route is None else self.routed[route][1]
        return routed_stream(self.model, self.tokenizer, self.cfg.inner, adapter, prompt,
                             max_new_tokens=self.cfg.eval.max_new_tokens)

    def perplexity(self, text: str) -> float:
        """Perplexity of the folded-in weights (routed adapters apply to routed questions only)."""
        key = (tuple(self.merged), text)
        if key not in self._perplexities:
            self._perplexities[key] = probes.perplexity(self.model, self.tokenizer, text)
        return self._perplexities[key]


def user_turn(question: str, topic: str | None, support, context: list[tuple[str, str]] | None) -> str:
    """The closed-book question of the knowledge domain when a topic is known; passages before it if given."""
    passages = [tuple(support)] if support else list(context or [])
    if topic and len(passages) <= 1:
        return answer_prompt(topic, question, passages[0] if passages else None)
    head = "".join(f"Passage:\n{t}\n{x}\n\n" for t, x in passages)
    return head + (f"Topic: {topic}\n" if topic else "") + question
