"""A Memory: one base model that learns document after document, each learn a new version on disk.

    mem = Memory.open("my-memory", MemoryConfig(strategy="router"))
    result = mem.learn(Document("Orrin Canal", text))      # self-edit -> LoRA -> gate -> new version or not
    mem.answer("When did the Orrin Canal open?")
    mem.versions(); mem.activate("v0001")                  # rollback / roll forward

Each `learn` runs the normal SEAL path: the model writes a self-edit of the document, a fresh LoRA is
trained on the document and its self-edit (on top of the version's folded-in weights, plus whatever
the strategy adds, e.g. replayed sequences), and a gate compares closed-book accuracy on the user's
questions (or, when there are none, on the model's own held-out self-quiz) before and after, and checks
that the general probe held. Only an update that passes becomes a new version; the reason is recorded
either way.

Processes: the directory is the truth. `learn` may run in another process than `answer` (e.g. a
service keeps answering from the old version while a worker learns): every `answer` reads the active
pointer and reloads when it changed. Learners are serialised by a lock on the directory. A kill at any
point leaves the last complete version active (see seal.memory.store).
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from seal.config import as_recorded, from_dict, to_dict
from seal.domains.base import Example, Score, SelfEditError, UpdatePlan
from seal.domains.knowledge.data import Passage, Question, check_document
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.quiz import QuizQuestion, self_quiz
from seal.generation import sample_self_edits
from seal.inner.batched import train_adapter
from seal.memory import probe as probes
from seal.memory.config import MemoryConfig
from seal.memory.store import BASE, MemoryDirError, Store
from seal.memory.loaded import LoadedVersion
from seal.memory.strategies import Consolidate, State, get_strategy

Progress = Callable[[str, int, int], None]  # (stage, done, total)
FIXED = ("model", "strategy", "inner.rank", "inner.alpha", "inner.target_modules")


@dataclass(frozen=True)
class Document:
    title: str
    text: str
    questions: tuple[Question, ...] | None = None  # None: the gate uses the model's own self-quiz


@dataclass
class LearnResult:
    """What one `learn` did. `version` is the new version's name, None when rejected."""

    accepted: bool
    reason: str
    version: str | None
    parent: str
    title: str
    quiz: list[dict]
    quiz_before: float | None
    quiz_after: float | None
    probe_before: dict
    probe_after: dict | None
    self_edit: str
    self_edit_usable: bool
    sequences: int
    seconds: float
    answers_before: list[dict] | None = field(default_factory=list)
    answers_after: list[dict] | None = field(default_factory=list)
    consolidation: dict | None = None
    check_before: float | None = None  # accuracy on `check_questions` (scored, never gated on)
    check_after: float | None = None
    scale: float = 1.0  # the scale the update was judged (and, if accepted, kept) at; see MemoryConfig.fold_scales
    scales_tried: list[dict] = field(default_factory=list)  # {scale, quiz_after, quiz_logprob_after, probe_after, reason}
    # mean log-probability per token of the quiz's answers, before and after (recorded, not gated on): a finer
    # reading of what the update taught than the quiz's accuracy
    quiz_logprob_before: float | None = None
    quiz_logprob_after: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _fixed(cfg: dict) -> dict:
    return {"model": cfg["model"]["name"], "strategy": cfg["strategy"], "inner.rank": cfg["inner"]["rank"],
            "inner.alpha": cfg["inner"]["alpha"], "inner.target_modules": list(cfg["inner"]["target_modules"])}


class Memory:
    """A memory directory over one base model; see the module docstring. One object holds one version in RAM
    and is not thread-safe: threads that share it take turns (a lock), processes each open their own."""

    def __init__(self, store: Store, cfg: MemoryConfig):
        self.store, self.cfg = store, cfg
        self.strategy = get_strategy(cfg.strategy, cfg.replay_ratio, cfg.consolidate_every)
        self.domain = KnowledgeDomain(cfg.prompt, cfg.inner.max_sequences, cfg.eval, cfg.qa_format,
                                      drop_copied=cfg.drop_copied)
        self._loaded = LoadedVersion(cfg)
        self._pending: dict[str, dict] = {}  # documents of the learn in progress, not yet committed

    # ---- opening

    @classmethod
    def open(cls, path: str | Path, cfg: MemoryConfig | None = None) -> Memory:
        """Create a memory in `path` (with `cfg`, default settings if None), or reopen an existing one. On
        reopening, `cfg` may change how it learns but not its model, strategy or adapter shape; None takes
        the settings it was created with."""
        store = Store(path)
        if store.exists():
            store.settle()
            meta = store.meta()
            if cfg is None:  # as it was created; one from before fold_scales folded in at full scale only
                cfg = from_dict(MemoryConfig, {"fold_scales": [1.0], **as_recorded(meta["config"])})
            elif _fixed(to_dict(cfg)) != _fixed(meta["config"]):
                saved, new = _fixed(meta["config"]), _fixed(to_dict(cfg))
                diff = ", ".join(f"{k}: {saved[k]!r} -> {new[k]!r}" for k in FIXED if saved[k] != new[k])
                raise MemoryDirError(f"{path} was created with other fixed settings ({diff})")
            return cls(store, cfg)
        cfg = cfg or MemoryConfig()
        if Path(path).exists() and any(Path(path).iterdir()):
            raise MemoryDirError(f"{path} is not empty and holds no memory")
        memory = cls(store, cfg)
        store.create({"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "config": to_dict(cfg),
                      "probe": probes.choose(memory._loaded, memory.domain, cfg)})
        return memory

    # ---- reading

    @property
    def active(self) -> str:
        """The active version's name ("base" before anything is learned)."""
        return self.store.active()

    def versions(self) -> list[dict]:
        """Every version, oldest first: name, created, parent, documents (titles), scores, active flag."""
        active = self.active
        out = []
        for name in [BASE] + self.store.version_names():
            v = self.store.version(name)
            out.append({"name": name, "created": v["created"], "parent": v["parent"],
                        "documents": [d["title"] for d in v["documents"]], "scores": v["scores"],
                        "strategy": self.cfg.strategy, "active": name == active})
        return out

    def activate(self, version: str) -> None:
        """Make `version` the active one (rollback or roll forward); an unknown name raises MemoryDirError."""
        self.store.activate(version)

    def answer(self, question: str, context: list[tuple[str, str]] | None = None, version: str | None = None,
               topic: str | None = None) -> str:
        """The answer of the active version (or `version`) to `question`; `context` passages (title, text)
        are put in the prompt; `topic` names the subject, as the closed-book protocol does (None: the title of
        the held document the question is about, if any; see LoadedVersion.routed_prompt)."""
        return self.answer_many([question], [topic], context, version)[0]

    def answer_many(self, questions: list[str], topics: list[str | None] | None = None,
                    context: list[tuple[str, str]] | None = None, version: str | None = None) -> list[str]:
        """Batched `answer`: one answer per question, in shared forward passes."""
        self._materialize(version or self.active)
        topics = topics or [None] * len(questions)
        items = [{"title": t, "question": q, "support": None} for q, t in zip(questions, topics)]
        return self._loaded.answer(items, context)

    def answer_stream(self, question: str, context: list[tuple[str, str]] | None = None,
                      version: str | None = None) -> Iterator[str]:
        """`answer`, in pieces as they are generated (joined, the same text). The version is loaded before this
        returns, so that one that cannot be loaded fails here rather than half-way through a streamed reply."""
        self._materialize(version or self.active)
        return self._loaded.answer_stream({"title": None, "question": question, "support": None}, context)

    def disk_bytes(self) -> int:
        return self.store.disk_bytes()

    def learn_records(self) -> list[dict]:
        """Every learn attempt so far, oldest first (LearnResult.to_dict() without the answers)."""
        return self.store.learn_records()

    # ---- learning

    def learn(self, doc: Document, on_progress: Progress | None = None,
              check_questions: tuple[Question, ...] = ()) -> LearnResult:
        """Learn `doc` into a new version, if the gate lets it; see the module docstring. Safe to run in
        another process than the one answering; two learners wait for each other. `check_questions` are
        scored before and after like the quiz but never gated on (e.g. to see whether the self-quiz gate
        agrees with a gate on human questions)."""
        progress = on_progress or (lambda stage, done, total: None)
        text = check_document(doc.text, f"document {doc.title!r}")
        start = time.perf_counter()
        with self.store.learning():
            seed = self.cfg.seed + len(self.learn_records())
            try:
                result = self._learn_locked(doc, text, progress, check_questions, seed)
                result.seconds = time.perf_counter() - start
                # the record is the commit point (seal.memory.store): on record before the pointer moves, and before
                # a consolidation starts, so that no kill leaves a version active without its learn on record
                self.store.log({k: v for k, v in result.to_dict().items() if not k.startswith("answers")},
                               activate=result.version)  # None when rejected
                state = State.of(self.store.version(result.version)) if result.accepted else None
                if state and isinstance(self.strategy, Consolidate) and self.strategy.consolidation_due(state):
                    fold_start = time.perf_counter()
                    result.consolidation = self._consolidate(result.version, state, seed, progress)
                    result.consolidation["seconds"] = time.perf_counter() - fold_start
                    result.seconds += result.consolidation["seconds"]
                    self.store.log_consolidation(result.version, result.consolidation)
            except BaseException:
                self._pending.clear()
                self._loaded.name = None  # it may hold a candidate: the next use rebuilds the version it needs
                raise
        progress("done", 1, 1)
        return result

    # ---- the steps of learn

    def _learn_locked(self, doc: Document, text: str, progress: Progress,
                      check_questions: tuple[Question, ...], seed: int) -> LearnResult:
        parent = self.active
        self._materialize(parent)
        state = State.of(self.store.version(parent))
        passage = Passage(doc.title, text)
        progress("self-edit", 0, 1)
        self_edit, plan, usable = self._self_edit(passage, seed)
        progress("quiz", 0, 1)
        quiz = self._quiz(doc, passage, seed)
        quiz_passage = Passage(doc.title, text, tuple(quiz))
        before = self._quiz_score(quiz_passage)
        logprob_before = self._quiz_logprob(quiz_passage)
        check = Passage(doc.title, text, tuple(check_questions))
        check_before = self._quiz_score(check).value if check_questions else None
        probe_before = self._probe_of(parent)
        earlier = self._sequences([d["id"] for d in state.documents])
        train_plan = self.strategy.training_plan(plan, earlier, random.Random(seed))
        adapter = self._train(train_plan, progress)
        document = {"id": f"doc-{uuid.uuid4().hex[:12]}", "title": doc.title}
        self._pending[document["id"]] = {"title": doc.title, "text": text, "self_edit": self_edit,
                                         "quiz": [_quiz_dict(q) for q in quiz],
                                         "sequences": [[e.prompt, e.completion] for e in plan.examples]}
        placed = self.strategy.place(state, adapter, document)
        attempts: list[_Attempt] = []
        for scale in self.cfg.fold_scales if adapter in placed.merged and self.cfg.gate else [1.0]:
            progress("evaluate", 0, 1)
            candidate = placed.scaled(adapter, scale) if scale != 1.0 else placed
            self._materialize(None, candidate)
            after = self._quiz_score(quiz_passage)
            check_after = self._quiz_score(check).value if check_questions else None
            probe_after = self._probe_score()
            accepted, reason = self._gate(before and before.value, after and after.value,
                                          self._probe_reference(parent), probe_after)
            attempts.append(_Attempt(scale, candidate, after, check_after, self._quiz_logprob(quiz_passage),
                                     probe_after, accepted, reason + (f" (at scale {scale:g})" if scale != 1.0 else "")))
            if accepted or not self._quiz_passes(before and before.value, after and after.value):
                break  # a smaller scale can only help an update that passed the quiz but cost the probe
        # the accepted attempt, or the update as trained (full scale) when every scale was rejected
        kept = attempts[-1 if attempts[-1].accepted else 0]
        after, accepted = kept.after, kept.accepted
        tried = [{"scale": a.scale, "quiz_after": a.after and a.after.value, "quiz_logprob_after": a.logprob_after,
                  "probe_after": a.probe_after, "reason": a.reason} for a in attempts]
        result = LearnResult(accepted, kept.reason, None, parent, doc.title, [_quiz_dict(q) for q in quiz],
                             before and before.value, after and after.value, probe_before, kept.probe_after,
                             self_edit, usable, len(train_plan.examples), 0.0, before and before.details,
                             after and after.details, check_before=check_before, check_after=kept.check_after,
                             scale=kept.scale, scales_tried=tried, quiz_logprob_before=logprob_before,
                             quiz_logprob_after=kept.logprob_after)
        if accepted:
            scores = {"quiz_before": result.quiz_before, "quiz_after": result.quiz_after, "probe": kept.probe_after}
            result.version = self._commit(parent, kept.state, [adapter], scores, progress)
        else:
            self._materialize(parent)
        self._pending.clear()
        return result

    def _self_edit(self, passage: Passage, seed: int) -> tuple[str, UpdatePlan, bool]:
        """The first usable of the sampled self-edits and its plan; the document alone when none is usable."""
        s = self.cfg.sampling
        texts = sample_self_edits(self._loaded.model, self._loaded.tokenizer, self.domain, [passage], s, s.num_samples, seed)[0]
        for text in texts:
            try:
                return text, self.domain.parse(passage, text), True
            except SelfEditError:
                continue
        return texts[0] if texts else "", UpdatePlan([Example(f"{passage.title}\n{passage.context}")]), False

    def _quiz(self, doc: Document, passage: Passage, seed: int) -> list[Question]:
        if doc.questions:
            return [QuizQuestion(q.question, q.answer, "user") for q in doc.questions]
        q = self.cfg.quiz
        return list(self_quiz(self._loaded.model, self._loaded.tokenizer, passage, q.questions, samples=q.samples,
                              temperature=q.temperature, max_new_tokens=q.max_new_tokens, seed=seed))

    def _quiz_score(self, passage: Passage) -> Score | None:
        """The domain's score of the loaded version on the passage's questions; None when it has none."""
        if not passage.questions:
            return None
        return self.domain.score(passage, self._loaded.answer(_closed_book(passage)))

    def _quiz_logprob(self, passage: Passage) -> float | None:
        """Mean over the passage's questions of the loaded version's log-probability per token of their answers."""
        if not passage.questions:
            return None
        values = self._loaded.answer_logprob(_closed_book(passage), [q.answer for q in passage.questions])
        return sum(values) / len(values)

    def _train(self, plan: UpdatePlan, progress: Progress) -> str:
        """Train a fresh adapter on top of the loaded (folded-in) weights; returns its staged id."""
        staged = self.store.new_staging_dir("adapter")
        train_adapter(self._loaded.model, self._loaded.tokenizer, plan, self.cfg.inner, staged,
                      on_step=lambda step, total, loss: progress("train", step, total))
        return staged.name

    def _gate(self, before: float | None, after: float | None, probe_reference: dict,
              probe_after: dict) -> tuple[bool, str]:
        held, why = probes.holds(probe_reference, probe_after, self.cfg.probe)
        if not self.cfg.gate:
            return True, "gate off: every update is kept" + (f" ({why})" if why else "")
        if before is None or after is None:
            return False, "no quiz: neither the user, the model nor a cloze of the document gave a question"
        if not self._quiz_passes(before, after):
            return False, f"quiz accuracy did not improve ({before:.0%} -> {after:.0%})"
        if not held:
            return False, why
        return True, f"quiz accuracy {before:.0%} -> {after:.0%}{' (a tie, kept)' if after == before else ''}; " \
                     "general probe held"

    def _quiz_passes(self, before: float | None, after: float | None) -> bool:
        """Whether the quiz shows the update worth keeping: it rose, or it tied and ties are kept (cfg.quiz_ties)."""
        if before is None or after is None:
            return False
        return after > before or (after == before and self.cfg.quiz_ties == "keep")

    def _commit(self, parent: str, state: State, new_adapters: list[str], scores: dict, progress: Progress) -> str:
        """Move the new pieces into place and write the version; `learn` puts it on record, then moves the pointer."""
        progress("commit", 0, 1)
        for adapter in new_adapters:
            self.store.commit_adapter(self.store.staging / adapter)
        for doc_id, record in self._pending.items():
            self.store.commit_document(doc_id, record)
        self._pending.clear()
        name = self.store.next_version_name()
        self.store.write_version({"name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  "parent": parent, "strategy": self.cfg.strategy, **state.to_dict(),
                                  "scores": scores})
        self._loaded.name = name
        return name

    def _consolidate(self, version: str, state: State, seed: int, progress: Progress) -> dict:
        """Fold the routed adapters into one update trained on all their documents' sequences (+ replay);
        a second new version when it keeps every covered document's quiz accuracy and the probe."""
        strategy: Consolidate = self.strategy  # type: ignore[assignment]
        covered = [r["document"] for r in state.routed]
        routed_ids = set(covered)
        older = [d["id"] for d in state.documents if d["id"] not in routed_ids]
        plan = strategy.consolidation_plan(self._sequences(covered), self._sequences(older), random.Random(seed + 1))
        quizzes = [p for p in (self._quiz_passage(doc_id) for doc_id in covered) if p.questions]
        before = [self._quiz_score(p).value for p in quizzes]
        adapter = self._train(plan, progress)
        folded = strategy.fold(state, adapter)
        self._materialize(None, folded)
        after = [self._quiz_score(p).value for p in quizzes]
        probe_after = self._probe_score()
        mean_before, mean_after = (sum(before) / len(before), sum(after) / len(after)) if quizzes else (0.0, 0.0)
        held, why = probes.holds(self._probe_reference(version), probe_after, self.cfg.probe)
        accepted = (mean_after >= mean_before and held) or not self.cfg.gate
        record = {"accepted": accepted, "documents": len(covered), "sequences": len(plan.examples),
                  "quiz_before": mean_before, "quiz_after": mean_after, "probe_after": probe_after,
                  "reason": why or f"mean quiz accuracy of the covered documents {mean_before:.0%} -> {mean_after:.0%}",
                  "version": None}
        if accepted:
            record["version"] = self._commit(version, folded, [adapter],
                                             {"quiz_before": mean_before, "quiz_after": mean_after,
                                              "probe": probe_after, "consolidated": len(covered)}, progress)
        else:
            self._materialize(version)
        return record

    # ---- documents and probe

    def _document(self, doc_id: str) -> dict:
        return self._pending.get(doc_id) or self.store.document(doc_id)

    def _sequences(self, doc_ids: list[str]) -> list[Example]:
        return [Example(c, p) for d in doc_ids for p, c in self._document(d)["sequences"]]

    def _quiz_passage(self, doc_id: str) -> Passage:
        d = self._document(doc_id)
        return Passage(d["title"], d["text"], tuple(Question(q["question"], q["answer"]) for q in d["quiz"]))

    def _probe_of(self, version: str) -> dict:
        if version == BASE:
            return self.store.meta()["probe"]["base"]
        return self.store.version(version)["scores"]["probe"]

    def _probe_reference(self, parent: str) -> dict:
        """What the gate holds an update's probe to (cfg.probe.against): the untouched model's or the parent's."""
        return self._probe_of(BASE if self.cfg.probe.against == "untouched" else parent)

    def _probe_score(self) -> dict:
        return probes.measure(self._loaded, self.domain, self.store.meta()["probe"])

    # ---- weights

    def _adapter_path(self, adapter_id: str) -> Path:
        committed = self.store.adapter_path(adapter_id)
        return committed if committed.exists() else self.store.staging / adapter_id

    def _materialize(self, version: str | None, state: State | None = None) -> None:
        """Hold `version` (or, with version None, the candidate `state`) in RAM, unless it already is."""
        if version is not None and version == self._loaded.name:
            return
        self._loaded.become(version, state or State.of(self.store.version(version)), self._adapter_path,
                            self._document, self.store.meta()["probe"]["background"])

    def route(self, question: str, topic: str | None = None) -> int | None:
        """Which document of `routed_documents()` the held version sends `question` to; None: no adapter."""
        return self._loaded.route(question, topic)

    def routed_documents(self) -> list[dict]:
        """The documents the held version keeps apart ({title, text}), in `route`'s index order."""
        return [d for d, _ in self._loaded.routed]


@dataclass
class _Attempt:
    """One scale an update was judged at (see MemoryConfig.fold_scales)."""

    scale: float
    state: State
    after: Score | None
    check_after: float | None
    logprob_after: float | None
    probe_after: dict
    accepted: bool
    reason: str


def _closed_book(passage: Passage) -> list[dict]:
    """The passage's questions as closed-book items under its title (LoadedVersion.answer's input)."""
    return [{"title": passage.title, "question": q.question, "support": None} for q in passage.questions]


def _quiz_dict(q: Question) -> dict:
    return {"question": q.question, "answer": q.answer, "source": getattr(q, "source", "user")}
