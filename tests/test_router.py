"""The router's retrieval (DocumentIndex) on its own: no model, our own short texts."""

from __future__ import annotations

import pytest

from seal.memory.config import RouterConfig
from seal.memory.strategies import DocumentIndex
from seal.memory.strategies.router import _tokens

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
    return DocumentIndex([f"{t} {x}" for t, x in documents], background, RouterConfig().min_coverage)


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
    words = _tokens("Pellam dredged the zeppelin")
    assert words == ["pellam", "dredg", "zeppelin"]  # stems, "the" dropped
    idf = memory.index.idf
    expected = (idf["pellam"] + idf["dredg"]) / (idf["pellam"] + idf["dredg"] + memory.unseen_idf)
    assert memory.coverage(words, 0) == pytest.approx(expected)
    assert memory.coverage(["zeppelin"], 0) == 0.0
    assert memory.coverage([], 0) == 0.0


VENN_WORK = ("Orla Venn", "Orla Venn ran her print shop strictly. She fired a clerk because his handwriting was poor "
             "and sent an apprentice home to change his boots.")
VENN_ESTATE = ("Orla Venn", "After Orla Venn died in 1931 her nephew shipped her presses to Tarrow, where her clerk "
               "Ida Moss kept them in the Orla Venn museum beside her letters and her medals.")


def test_a_paragraph_of_an_article_keeps_its_questions_when_another_paragraph_is_learned():
    """Both paragraphs share the title, and the title is in every query: a question must go where its own
    words are, in whatever form ("fire" / "fired"), even when the word is one a long stop-word list drops."""
    memory = index([VENN_WORK, VENN_ESTATE])
    assert memory.route("Orla Venn Who did she fire?") == 0
    assert memory.route("Orla Venn Why did she fire the clerk?") == 0
    assert memory.route("Orla Venn Where did her nephew ship the presses?") == 1
