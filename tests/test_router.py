"""The router's retrieval (DocumentIndex) on its own: no model, our own short texts."""

from __future__ import annotations

import pytest

from seal.memory.strategies import DocumentIndex

HARBOUR = ("Pellam Harbour", "Pellam Harbour was dredged in 1911 by the engineer Tova Brisk. Its stone breakwater "
           "shelters forty fishing boats, and a tide mill on the east quay ground barley until 1958.")
OTHERS = [
    ("Ardle Orchard", "The Ardle Orchard grows russet apples on chalk soil and presses cider each October."),
    ("Kesh Bell Foundry", "The Kesh bell foundry cast the great tenor bell of Lowick church from recycled cannon."),
    ("Morrow Fen", "Morrow Fen was drained with windpumps; its peat now lies two metres below the river."),
    ("Tallis Glassworks", "Tallis glassworks blew green bottles for mineral springs until its furnace cracked."),
]
BACKGROUND = [f"Background {i}: a short note on weather, trade and roads in the county." for i in range(8)]
QUESTIONS = ["Who dredged Pellam Harbour?", "When did the tide mill at Pellam Harbour stop grinding barley?",
             "How many boats does the breakwater of Pellam Harbour shelter?"]


def index(documents, background=BACKGROUND):
    return DocumentIndex([f"{t} {x}" for t, x in documents], background, min_coverage=0.32)


@pytest.mark.parametrize("documents", [[HARBOUR], OTHERS[:2] + [HARBOUR], OTHERS + [HARBOUR] + OTHERS[::-1]])
def test_questions_reach_their_document_whatever_the_memory_size(documents):
    """The old rule (a minimum BM25 score) routed these in one memory size and not in another: the score
    scales with log(corpus size) and with document length against the average."""
    routes = [index(documents).route(q) for q in QUESTIONS]
    assert routes == [documents.index(HARBOUR)] * len(QUESTIONS)


def test_questions_about_nothing_learned_reach_no_document():
    memory = index(OTHERS + [HARBOUR])
    assert memory.route("What is the capital city of Peru and its population?") is None  # no word in any document
    assert memory.route("What is it that has been there since then?") is None  # stop words only
    assert memory.route("Background weather and roads in the county?") is None  # a background passage wins
    # one shared word among many the document never uses is not enough
    assert memory.route("Which harbour in Norway exports salted cod, timber and iron ore?") is None


def test_coverage_is_the_idf_weighted_share_of_the_query_words_in_the_document():
    memory = index([HARBOUR])
    words = ["pellam", "dredged", "zeppelin"]
    idf = memory.index.idf
    expected = (idf["pellam"] + idf["dredged"]) / (idf["pellam"] + idf["dredged"] + memory.unseen_idf)
    assert memory.coverage(words, 0) == pytest.approx(expected)
    assert memory.coverage(["zeppelin"], 0) == 0.0
    assert memory.coverage([], 0) == 0.0
