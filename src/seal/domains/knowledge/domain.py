"""Knowledge incorporation as a domain: passage -> self-edit -> training sequences -> closed-book QA."""

from __future__ import annotations

from dataclasses import dataclass

from seal.config import EvalConfig
from seal.domains.base import Example, Score, SelfEditError, UpdatePlan
from seal.domains.knowledge.answers import score_answers, summary
from seal.domains.knowledge.data import Passage
from seal.domains.knowledge.grading import DEFAULT_GRADER, get_grader
from seal.domains.knowledge.prompts import answer_prompt, self_edit_prompt
from seal.domains.knowledge.selfedit import qa_pair, split_self_edit, training_sequences
from seal.generation import chat_prompt, generate


def grader_for(name: str):
    return get_grader(DEFAULT_GRADER if name == "default" else name)


@dataclass
class KnowledgeDomain:
    prompt: str = "implications"
    max_sequences: int | None = 64
    eval: EvalConfig = None  # type: ignore[assignment]
    # chat: a self-edit's question-answer items are trained as the closed-book question (chat turn) and its
    # answer, with the loss on the answer only; text: as plain text, like every other item
    qa_format: str = "text"
    name: str = "knowledge"

    def __post_init__(self):
        self.eval = self.eval or EvalConfig()
        self.grader = grader_for(self.eval.grader)
        self_edit_prompt(self.prompt, "", "")  # fail fast on an unknown prompt kind
        if self.qa_format not in ("text", "chat"):
            raise ValueError(f"qa_format must be 'text' or 'chat', not {self.qa_format!r}")

    def self_edit_prompt(self, passage: Passage) -> str:
        return self_edit_prompt(self.prompt, passage.title, passage.context)

    def parse(self, passage: Passage, self_edit: str) -> UpdatePlan:
        """Training sequences from a self-edit; the passage itself is always one of them."""
        items = split_self_edit(self_edit) if self.prompt != "none" else []
        if self.prompt != "none" and not items:
            raise SelfEditError("the self-edit contains no usable statements")
        sequences = training_sequences(passage.title, passage.context, items, self.max_sequences)
        examples = [Example(sequences[0])] + [self._example(passage.title, item, text)
                                              for item, text in zip(items, sequences[1:])]
        return UpdatePlan(examples, notes={"items": len(items)})

    def _example(self, title: str, item: str, text: str) -> Example:
        pair = qa_pair(item) if self.qa_format == "chat" else None
        return Example(pair[1], answer_prompt(title, pair[0]), chat=True) if pair else Example(text)

    def answer(self, model, tokenizer, passage: Passage, supports=None) -> list[str]:
        """Greedy answers to the passage's questions: closed-book (the model sees the topic and the question,
        never the passage) unless `supports` gives a (title, text) passage to put before each question."""
        supports = supports or [None] * len(passage.questions)
        prompts = [chat_prompt(tokenizer, answer_prompt(passage.title, q.question, s))
                   for q, s in zip(passage.questions, supports)]
        outs = generate(model, tokenizer, prompts, max_new_tokens=self.eval.max_new_tokens,
                        batch_size=self.eval.batch_size)
        return [o[0] for o in outs]

    def evaluate(self, model, tokenizer, passage: Passage, supports=None) -> Score:
        if not passage.questions:
            raise ValueError(f"passage {passage.title!r} has no questions to evaluate on")
        return self.score(passage, self.answer(model, tokenizer, passage, supports))

    def score(self, passage: Passage, answers: list[str]) -> Score:
        """Grade generated answers under the closed-book protocol (`answers.py`): the value is the credited
        accuracy; `metrics` adds F1, exact match, recitation and identical-answer rates."""
        details = score_answers(self.grader, passage.context, passage.questions, answers)
        metrics = summary(details)
        return Score(metrics["accuracy"], details, metrics)
