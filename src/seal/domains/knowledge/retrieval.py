"""BM25 retrieval over passages: the baseline that keeps facts outside the weights."""

from __future__ import annotations

import re

from rank_bm25 import BM25Okapi

from seal.domains.knowledge.data import Passage

_WORD = re.compile(r"\w+")


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Retriever:
    """Index passages (title + text) once; `top(query)` returns the best-matching passage."""

    def __init__(self, passages: list[Passage]):
        if not passages:
            raise ValueError("cannot build a retriever over no passages")
        self.passages = passages
        self.index = BM25Okapi([_tokens(f"{p.title} {p.context}") for p in passages])

    def top(self, query: str) -> Passage:
        scores = self.index.get_scores(_tokens(query))
        return self.passages[max(range(len(scores)), key=lambda i: scores[i])]
