"""`router`: one adapter per document, kept apart from the weights and from each other. For each question a
retriever (BM25 over the learned documents and some background passages) picks the document's adapter, or
none when the question matches no learned document best, and the untouched weights answer. A batch whose
questions route to different adapters is answered in shared forward passes (seal.memory.weights)."""

from __future__ import annotations

import functools
import math
import re

import snowballstemmer
from rank_bm25 import BM25Okapi

from seal.memory.strategies.base import State, Strategy

_WORD = re.compile(r"\w+")
_STEMMER = snowballstemmer.stemmer("english")
# Words of scikit-learn's stop list that a question can hinge on ("Who did he fire?", "the fifty ships"): kept.
_CONTENT_WORDS = frozenset("""amount back became become bill bottom call describe detail done eight eleven empty
    fifteen fifty fill find fire first five forty found four front full give hundred interest keep last made mill
    move name nine part serious show side sincere sixty system take thick thin third three top twelve twenty""".split())


@functools.cache
def _stop_words() -> frozenset[str]:
    """scikit-learn's English stop words less `_CONTENT_WORDS`, imported at first use: importing scikit-learn
    takes over a second, which every process that imports seal.memory (the server, each consolidation worker)
    paid for a word list."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS - _CONTENT_WORDS


@functools.lru_cache(maxsize=1 << 16)  # a memory re-indexes the same documents' words on every load
def _stem(word: str) -> str:
    return _STEMMER.stemWord(word)


def _tokens(text: str) -> list[str]:
    """Stems of the lower-cased words, stop words dropped: a question that shares only "what", "is", "the"
    with a learned document must not reach its adapter, and "Who did he fire?" must find "fired". With the
    full scikit-learn list and no stems, questions about one paragraph of an article went to the adapter of
    another paragraph of it (benchmarks/router_locality.py)."""
    stop = _stop_words()
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in stop]


class Router(Strategy):
    name = "router"

    def place(self, state: State, adapter: str, document: dict) -> State:
        return State(state.merged, state.routed + [{"document": document["id"], "adapter": adapter}],
                     state.documents + [document], state.scales)


class DocumentIndex:
    """BM25 over the routed documents plus background passages. `route(query)` is the index of the routed
    document that scores best, or None when a background passage scores higher or the query is not about
    that document: less than `min_coverage` of the query's words, weighted by IDF, occur in it. The
    background keeps the document frequencies meaningful with only one or two documents learned, and gives
    off-topic questions somewhere else to go.

    Why a covered share and not a minimum BM25 score: the score grows with log(corpus size) and shrinks with
    the document's length against the average, so no one threshold holds across memories. A score of 6,
    tuned on 8 SQuAD passages, routed 1 of the 6 built-in Velmora questions in a one-document memory, and
    let 59 % of the questions about never-learned passages through at 50. The share is a ratio of the same
    corpus's IDFs, so it barely moves with either (benchmarks/router_locality.py)."""

    def __init__(self, documents: list[str], background: list[str], min_coverage: float):
        self.count = len(documents)
        self.min_coverage = min_coverage
        corpus = [_tokens(text) for text in documents + background]
        self.words = [set(words) for words in corpus[: self.count]]
        self.index = BM25Okapi(corpus) if corpus and any(corpus) else None
        # a query word found nowhere weighs as much as the rarest possible word: it says the query is elsewhere
        self.unseen_idf = math.log((len(corpus) + 0.5) / 0.5)

    def route(self, query: str) -> int | None:
        if self.index is None or self.count == 0:
            return None
        words = _tokens(query)
        scores = self.index.get_scores(words)
        best = max(range(len(scores)), key=lambda i: scores[i])
        if best >= self.count or scores[best] <= 0:
            return None
        return best if self.coverage(words, best) >= self.min_coverage else None

    def coverage(self, words: list[str], document: int) -> float:
        """The IDF-weighted share of `words` that occur in routed document `document`."""
        weight = {w: self.index.idf.get(w, self.unseen_idf) for w in set(words)}
        total = sum(weight.values())
        return sum(v for w, v in weight.items() if w in self.words[document]) / total if total else 0.0
