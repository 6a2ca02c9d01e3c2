"""Knowledge incorporation as a domain: passage -> self-edit -> training sequences -> closed-book QA."""

from __future__ import annotations

from dataclasses import dataclass

from seal.config import EvalConfig
from seal.domains.base import Example, Score, SelfEditError, UpdatePlan
from seal.domains.knowledge.answers import (copied_share, copied_spans, graded_answer, recites, score_answers,
                                            sentences, summary, words)
from seal.domains.knowledge.data import Passage
from seal.domains.knowledge.grading import DEFAULT_GRADER, get_grader
from seal.domains.knowledge.prompts import (QA_SCAFFOLD, QA_SCAFFOLD_ANSWER, QA_SCAFFOLD_QUESTION, answer_prompt,
                                            self_edit_prompt)
from seal.domains.knowledge.selfedit import qa_pair, split_self_edit, training_sequences
from seal.generation import chat_prompt, generate


SCAFFOLD_SENTENCES = 12  # sentences of a passage that structured self-QA asks about (bounds its cost)


def _first_line(text: str, stop: str | None = None) -> str:
    line = text.strip().split("\n")[0]
    return (line.split(stop)[0] if stop else line).strip()


def _scaffold_prompt(tokenizer, title: str, sentence: str) -> str:
    return chat_prompt(tokenizer, QA_SCAFFOLD.format(title=title, sentence=sentence)) + QA_SCAFFOLD_QUESTION


def _own_words(items: list[str], document: str) -> list[str]:
    """The items that copy no run of the document (`drop_copied` keeps only these)."""
    return [item for item in items if not recites(item, document)]


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
    # what a score's value counts (the reward ReST-EM compares): `accuracy`, the credited answers; or
    # `unrecited`, the credited answers that recite nothing, so that a self-edit teaching the model to copy
    # the passage earns nothing for the copies
    score_by: str = "accuracy"
    # drop a self-edit's items that copy a run of the passage (as `recites` finds one): the passage is trained
    # anyway, and a copied sentence teaches the model to answer by reciting it
    drop_copied: bool = False
    # ReST-EM's M-step clones a rewarded self-edit with no loss on the words it copies from the passage: the
    # generator learns the self-edit's own words, not to copy (exclusive with drop_copied, which clones none)
    mask_copied: bool = False
    name: str = "knowledge"

    def __post_init__(self):
        self.eval = self.eval or EvalConfig()
        self.grader = grader_for(self.eval.grader)
        self_edit_prompt(self.prompt, "", "")  # fail fast on an unknown prompt kind
        if self.qa_format not in ("text", "chat"):
            raise ValueError(f"qa_format must be 'text' or 'chat', not {self.qa_format!r}")
        if self.score_by not in ("accuracy", "unrecited"):
            raise ValueError(f"score_by must be 'accuracy' or 'unrecited', not {self.score_by!r}")
        if self.drop_copied and self.mask_copied:
            raise ValueError("drop_copied and mask_copied are exclusive: a dropped item leaves nothing to mask")

    def self_edit_prompt(self, passage: Passage) -> str:
        return self_edit_prompt(self.prompt, passage.title, passage.context)

    def write_self_edits(self, model, tokenizer, passages: list[Passage], sampling, num_samples: int,
                         seed: int) -> list[list[str]]:
        """Structured self-QA (`sampling.structured`): for each sentence (at most `SCAFFOLD_SENTENCES`) the model
        writes a question the sentence answers (sampled) and then its short answer (greedy), each in a prompt of
        its own; a self-edit is one sample's pairs, as "Question: ...\nAnswer: ..." items.

        `sampling.answers` decides who answers. `scaffold`: the scaffold, seeing only the sentence. `open-book`:
        the model asked the question exactly as it is asked closed-book, but with the passage before it; its
        graded answer is the one trained, so the update teaches the model to say without the passage what it
        says with it. `checked`: the open-book answer, kept only where the grader finds it agrees with the
        scaffold's (two readings of the document that agree; a question neither answers the same is dropped)."""
        jobs = [(i, s) for i, p in enumerate(passages) for s in sentences(p.context)[:SCAFFOLD_SENTENCES]]
        asks = [_scaffold_prompt(tokenizer, passages[i].title, s) for i, s in jobs]
        questions = generate(model, tokenizer, asks, max_new_tokens=48, temperature=sampling.temperature,
                             top_p=sampling.top_p, num_samples=num_samples, batch_size=sampling.batch_size, seed=seed)
        questions = [[_first_line(q, stop="Answer") for q in qs] for qs in questions]
        asked = [(i, ask, q) for (i, _), ask, qs in zip(jobs, asks, questions) for q in qs]
        if sampling.answers == "scaffold":
            answers = self._scaffold_answers(model, tokenizer, asked, sampling)
        else:
            answers = self._open_book_answers(model, tokenizer, passages, asked, sampling)
        if sampling.answers == "checked":
            scaffold = self._scaffold_answers(model, tokenizer, asked, sampling)
            answers = [a if a and s and self.grader(q, a, s) else ""
                       for (_, _, q), a, s in zip(asked, answers, scaffold)]
        pairs: list[list[list[str]]] = [[[] for _ in range(num_samples)] for _ in passages]
        for n, ((i, _, q), answer) in enumerate(zip(asked, answers)):
            if q and answer:
                pairs[i][n % num_samples].append(f"Question: {q}\nAnswer: {answer}")
        return [["\n\n".join(sample) for sample in per_passage] for per_passage in pairs]

    def _scaffold_answers(self, model, tokenizer, asked: list[tuple[int, str, str]], sampling) -> list[str]:
        prompts = [f"{ask} {q}{QA_SCAFFOLD_ANSWER}" for _, ask, q in asked]
        outs = generate(model, tokenizer, prompts, max_new_tokens=24, batch_size=sampling.batch_size)
        return [_first_line(o[0]) for o in outs]

    def _open_book_answers(self, model, tokenizer, passages: list[Passage], asked: list[tuple[int, str, str]],
                           sampling) -> list[str]:
        books = [(passages[i].title, q, (passages[i].title, passages[i].context)) for i, _, q in asked]
        return [graded_answer(o) for o in self._ask(model, tokenizer, books, sampling.batch_size)]

    def scaffold_examples(self, tokenizer, passage: Passage, self_edit: str) -> list[Example]:
        """What ReST-EM's M-step clones from a rewarded structured self-edit: each of its question-answer pairs as
        the completion of the scaffold prompt it answers. The self-edit does not say which sentence a pair came
        from (empty pairs were dropped), so each pair goes to the sentence that shares most of its words: the
        sentence that supports it, which is what the generator should learn to ask about."""
        candidates = sentences(passage.context)[:SCAFFOLD_SENTENCES]
        examples = []
        for item in split_self_edit(self_edit):
            pair = qa_pair(item)
            if pair and candidates:
                item_words = set(words(item))
                sentence = max(candidates, key=lambda s: len(item_words.intersection(words(s))))
                examples.append(Example(f" {pair[0]}{QA_SCAFFOLD_ANSWER} {pair[1]}",
                                        prompt=_scaffold_prompt(tokenizer, passage.title, sentence)))
        return examples

    def parse(self, passage: Passage, self_edit: str) -> UpdatePlan:
        """Training sequences from a self-edit; the passage itself is always one of them. The notes count its
        items, the share of their words `copied` from the passage and, with `drop_copied`, the items dropped."""
        items = split_self_edit(self_edit) if self.prompt != "none" else []
        if self.prompt != "none" and not items:
            raise SelfEditError("the self-edit contains no usable statements")
        notes = {"items": len(items), "copied": copied_share(items, passage.context)}
        if self.drop_copied and items:
            own = _own_words(items, passage.context)
            if not own:
                raise SelfEditError(f"all {len(items)} statements of the self-edit copy the passage word for word")
            notes["dropped"] = len(items) - len(own)
            items = own
        sequences = training_sequences(passage.title, passage.context, items, self.max_sequences)
        examples = [Example(sequences[0])] + [self._example(passage.title, item, text)
                                              for item, text in zip(items, sequences[1:])]
        return UpdatePlan(examples, notes=notes)

    def context_plan(self, passage: Passage) -> UpdatePlan:
        """The update on the passage alone: what every self-edit's update trains besides its items, so the
        baseline a self-edit must beat to have taught something of its own (ReST-EM's `baseline=context`)."""
        return UpdatePlan([Example(training_sequences(passage.title, passage.context, [], None)[0])],
                          notes={"items": 0})

    def cloned_example(self, passage: Passage, piece: str, prompt: str) -> Example:
        """What ReST-EM's M-step teaches the generator to write for a rewarded piece of a self-edit: the piece;
        with `drop_copied`, only its items in its own words, as a numbered list; with `mask_copied`, the piece as
        written, its words copied from the passage read but not learned. Cloned verbatim, the winners' few copied
        sentences became the next generator's habit (docs/results.md: round 1's winners copied 12 % of their words, the
        generator cloned from them 51 %); dropped, the generator learned to invent instead."""
        if self.drop_copied:
            own = _own_words(split_self_edit(piece), passage.context)
            return Example("\n".join(f"{n}. {item}" for n, item in enumerate(own, 1)), prompt=prompt)
        unlearned = tuple(copied_spans(piece, passage.context)) if self.mask_copied else ()
        return Example(piece, prompt=prompt, unlearned=unlearned)

    def _example(self, title: str, item: str, text: str) -> Example:
        pair = qa_pair(item) if self.qa_format == "chat" else None
        return Example(pair[1], answer_prompt(title, pair[0]), chat=True) if pair else Example(text)

    def answer(self, model, tokenizer, passage: Passage, supports=None) -> list[str]:
        """Greedy answers to the passage's questions: closed-book (the model sees the topic and the question,
        never the passage) unless `supports` gives a (title, text) passage to put before each question."""
        supports = supports or [None] * len(passage.questions)
        asks = [(passage.title, q.question, s) for q, s in zip(passage.questions, supports)]
        return self._ask(model, tokenizer, asks, self.eval.batch_size)

    def _ask(self, model, tokenizer, asks: list[tuple[str, str, tuple[str, str] | None]], batch_size: int) -> list[str]:
        """Greedy generations for (title, question, support) triples, in the evaluation's answer prompt."""
        prompts = [chat_prompt(tokenizer, answer_prompt(title, question, support)) for title, question, support in asks]
        outs = generate(model, tokenizer, prompts, max_new_tokens=self.eval.max_new_tokens, batch_size=batch_size)
        return [o[0] for o in outs]

    def evaluate(self, model, tokenizer, passage: Passage, supports=None) -> Score:
        if not passage.questions:
            raise ValueError(f"passage {passage.title!r} has no questions to evaluate on")
        return self.score(passage, self.answer(model, tokenizer, passage, supports))

    def score(self, passage: Passage, answers: list[str]) -> Score:
        """Grade generated answers under the closed-book protocol (`answers.py`): the value is the credited
        accuracy (or `score_by`); `metrics` adds F1, exact match, recitation and identical-answer rates."""
        details = score_answers(self.grader, passage.context, passage.questions, answers)
        metrics = summary(details)
        return Score(metrics[self.score_by], details, metrics)
