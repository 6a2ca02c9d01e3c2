"""BM25 search over the passages of documents that are not yet consolidated (rank-bm25).

Documents are cut into passages of about `passage_words` words, so that a chat prompt gets the relevant part
of a long document rather than its opening. The index is rebuilt only when the set of pending documents
changes.
"""

from __future__ import annotations

import re
import threading

from rank_bm25 import BM25Okapi

_WORD = re.compile(r"\w+")
# rank-bm25 floors a negative idf at epsilon x the average idf, which is itself negative when most of a small
# corpus shares a word, so matching a common word would lower a passage's score. A small positive floor keeps
# every shared word a (weak) match.
_IDF_FLOOR = 1e-3


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def passages(text: str, words: int) -> list[str]:
    """Consecutive pieces of about `words` words, cut at paragraph breaks where possible."""
    pieces, current = [], []
    for paragraph in re.split(r"\n\s*\n", text):
        for word in paragraph.split():
            current.append(word)
            if len(current) >= words:
                pieces.append(" ".join(current))
                current = []
        if len(current) >= words // 2:
            pieces.append(" ".join(current))
            current = []
    if current:
        pieces.append(" ".join(current))
    return pieces or [text]


class PendingIndex:
    """Search the pending documents; `refresh(docs)` with the current pending documents before each search."""

    def __init__(self, passage_words: int):
        self.passage_words = passage_words
        self._key: tuple = ()
        self._entries: list[tuple[dict, str]] = []
        self._bm25: BM25Okapi | None = None
        self._lock = threading.Lock()

    def refresh(self, docs: list[dict]) -> None:
        key = tuple(d["id"] for d in docs)
        with self._lock:
            if key == self._key:
                return
            entries = [({"id": d["id"], "title": d["title"]}, p) for d in docs
                       for p in passages(d["text"], self.passage_words)]
            bm25 = BM25Okapi([tokens(f"{doc['title']} {p}") for doc, p in entries]) if entries else None
            if bm25 is not None:
                bm25.idf = {w: max(v, _IDF_FLOOR) for w, v in bm25.idf.items()}
            self._key, self._entries, self._bm25 = key, entries, bm25

    def search(self, query: str, k: int) -> list[dict]:
        """The k best passages that share at least one word with the query, best first."""
        with self._lock:
            entries, bm25 = self._entries, self._bm25
        if bm25 is None or not tokens(query):
            return []
        scores = bm25.get_scores(tokens(query))
        best = sorted((i for i in range(len(entries)) if scores[i] > 0), key=lambda i: -scores[i])[:k]
        return [{"document": entries[i][0]["id"], "title": entries[i][0]["title"], "text": entries[i][1],
                 "score": round(float(scores[i]), 4)} for i in best]
