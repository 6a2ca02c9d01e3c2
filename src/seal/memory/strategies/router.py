"""`router`: one adapter per document, kept apart from the weights and from each other. For each question a
retriever (BM25 over the learned documents and some background passages) picks the document's adapter, or
none when the question matches no learned document best, and the untouched weights answer. A batch whose
questions route to different adapters is answered in shared forward passes (seal.memory.weights)."""

from __future__ import annotations

import functools
import re

from rank_bm25 import BM25Okapi

from seal.memory.strategies.base import State, Strategy

_WORD = re.compile(r"\w+")


@functools.cache
def _stop_words() -> frozenset[str]:
    """scikit-learn's English stop words, imported at first use: importing scikit-learn takes over a second,
    which every process that imports seal.memory (the server, each consolidation worker) paid for a word list."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return ENGLISH_STOP_WORDS


def _tokens(text: str) -> list[str]:
    """Lower-cased words without stop words: a question that shares only "what", "is", "the" with a learned
    document must not reach its adapter."""
    stop = _stop_words()
    return [w for w in _WORD.findall(text.lower()) if w not in stop]


class Router(Strategy):
    name = "router"

    def place(self, state: State, adapter: str, document: dict) -> State:
        return State(state.merged, state.routed + [{"document": document["id"], "adapter": adapter}],
                     state.documents + [document])


class DocumentIndex:
    """BM25 over the routed documents plus background passages. `route(query)` is the index of the routed
    document that scores best, or None when a background passage scores higher or the best score is below
    `min_score`. The background keeps BM25's document frequencies meaningful with only one or two
    documents learned, and gives off-topic questions somewhere else to go."""

    def __init__(self, documents: list[str], background: list[str], min_score: float):
        self.count = len(documents)
        self.min_score = min_score
        corpus = [_tokens(text) for text in documents + background]
        self.index = BM25Okapi(corpus) if corpus and any(corpus) else None

    def route(self, query: str) -> int | None:
        if self.index is None or self.count == 0:
            return None
        scores = self.index.get_scores(_tokens(query))
        best = max(range(len(scores)), key=lambda i: scores[i])
        return best if best < self.count and scores[best] >= self.min_score else None
