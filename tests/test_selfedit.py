"""Self-edit splitting on the shapes real model output takes, and the training corpus built from it.

All example texts are written for these tests (about an invented canal), in the shapes seen in real
self-edits: numbered and bulleted lists, markdown, filler, sources, Q/A formats, reasoning, truncation.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seal.domains.knowledge.selfedit import split_self_edit, training_sequences

A = "The Marrow Canal opened in 1821."
B = "Coal was the main cargo on the canal."
C = "The canal fell out of use after the railway arrived."

PASSAGE = (
    "The Marrow Canal opened in 1821 and linked the coal pits of Dunholt to the port of Seabridge. "
    "Coal was its main cargo until the railway arrived in 1859, after which traffic declined."
)

CASES = {
    "numbered with dots": (f"1. {A}\n2. {B}\n3. {C}", [A, B, C]),
    "numbered with parens, preamble and closing filler": (
        f"Sure! Here are some implications of the passage:\n\n1) {A}\n2) {B}\n3) {C}\n\nI hope this helps!",
        [A, B, C],
    ),
    "numbers in parentheses": (f"(1) {A}\n(2) {B}\n(3) {C}", [A, B, C]),
    "mixed bullets": (f"- {A}\n* {B}\n• {C}", [A, B, C]),
    "markdown header and bold labels": (
        f"**Implications:**\n\n1. **Opening:** {A}\n\n2. **Cargo:** *{B}*\n\n3. **Decline**: {C}",
        [f"Opening: {A}", f"Cargo: {B}", f"Decline: {C}"],
    ),
    "fully bold items and direct/indirect headers": (
        f"Certainly! Here is a list of implications derived from the passage:\n\n"
        f"### Direct Implications:\n1. **{A}**\n2. **{B}**\n\n### Indirect Implications:\n3. **{C}**\n\n"
        "Let me know if you'd like these expanded!",
        [A, B, C],
    ),
    "rewrites under headers with separators": (
        f"### Rewrite 1\n{A} {B}\n\n---\n\n### Rewrite 2\n{B} {C}\n\n---\n\nRewrite 3: {C}",
        [f"{A} {B}", f"{B} {C}", C],
    ),
    "blank-line separated paragraphs": (f"{A} {B}\n\n{C} {A}\n\n\n{B}", [f"{A} {B}", f"{C} {A}", B]),
    "inline Q and A": (
        "Q: When did the Marrow Canal open? A: In 1821.\nQ: What did it carry? A: Mostly coal.",
        [
            "Question: When did the Marrow Canal open?\nAnswer: In 1821.",
            "Question: What did it carry?\nAnswer: Mostly coal.",
        ],
    ),
    "numbered questions with answers on the next line": (
        "Question 1: When did the Marrow Canal open?\nAnswer: In 1821.\n\n"
        "Question 2: What ended the canal's trade?\n\nAnswer: The railway, which arrived in 1859.",
        [
            "Question: When did the Marrow Canal open?\nAnswer: In 1821.",
            "Question: What ended the canal's trade?\nAnswer: The railway, which arrived in 1859.",
        ],
    ),
    "bold question and answer labels": (
        "**Question:** Which port did the canal reach?\n**Answer:** Seabridge.\n\n"
        "1. **Question:** Where were the coal pits? **Answer:** Dunholt.",
        [
            "Question: Which port did the canal reach?\nAnswer: Seabridge.",
            "Question: Where were the coal pits?\nAnswer: Dunholt.",
        ],
    ),
    "labels on their own lines": (
        "Question:\nWhich port did the canal reach?\nAnswer:\nThe port of\nSeabridge.",
        ["Question: Which port did the canal reach?\nAnswer: The port of Seabridge."],
    ),
    "first question label was in the prompt": (
        "When did the Marrow Canal open?\nAnswer: In 1821.\n\nQuestion 2: What did it carry?\nAnswer: Coal.",
        ["Question: When did the Marrow Canal open?\nAnswer: In 1821.", "Question: What did it carry?\nAnswer: Coal."],
    ),
    "reasoning then an Implications line": (
        "The passage is about a canal. It gives a date and a cargo, so the implications should\n"
        "mention both.\n\nImplications:\n1. " + A + "\n2. " + B,
        [A, B],
    ),
    "reasoning then a final answer": (
        f"Let me think step by step.\nFirst, the date.\nThen the cargo.\n\nFinal answer: {A}\n- {B}",
        [A, B],
    ),
    "think block": (f"<think>\nThe user wants implications.\n</think>\n\n- {A}\n- {B}", [A, B]),
    "sources section and everything after it": (
        f"1. {A}\n2. {B}\n\nSources:\n1. Doe, J. (2004). Canals of the North. Riverside Press.\n2. {C}",
        [A, B],
    ),
    "single source line": (f"1. {A}\n\nSource: (n.d.). Marrow Canal. Retrieved from https://example.org", [A]),
    "references heading in markdown": (f"- {A}\n\n## References\n- Smith (1999), p. 4.", [A]),
    "run-on into a new prompt": (
        f"1. {A}\n2. {B}\nYou are an AI assistant. Follow the instructions carefully.\n1. Not about the canal.",
        [A, B],
    ),
    "run-on that repeats the task": (
        f"1. {A}\n\nLet's read the following passage and produce a list of implications.\n\nPassage:\nOther text.\n\n"
        "Implications:\n1. Something unrelated.",
        [A],
    ),
    "whitespace-only lines and lone numbers": (f"1. {A}\n   \n\t\n2.\n{B}\n3\n \u00a0\n{C}", [A, B, C]),
    "repeated items": (f"1. {A}\n2. {B}\n3. {A}\n4.   {B}  \n5. {C}", [A, B, C]),
    "truncated last item long enough to keep": (
        f"1. {A}\n2. The railway arrived in 1859 and took",
        [A, "The railway arrived in 1859 and took"],
    ),
    "truncated last item too short": (f"1. {A}\n2. {B}\n3. The lock", [A, B]),
    "crlf line endings": (f"Here are the implications:\r\n\r\n1. {A}\r\n2. {B}\r\n", [A, B]),
    "unicode text and dashes as bullets": (
        "– Der Kanal wurde 1821 eröffnet.\n— 运河于1821年开通。\n"
        "– Ships passed\u00a0through  Ærø and Škofja.",
        ["Der Kanal wurde 1821 eröffnet.", "运河于1821年开通。", "Ships passed through Ærø and Škofja."],
    ),
    "hard-wrapped items": (
        f"1. The Marrow Canal opened in 1821 and\nlinked Dunholt to Seabridge.\n"
        f"2. {B}\n    It was mined nearby.\n3. {C}",
        ["The Marrow Canal opened in 1821 and linked Dunholt to Seabridge.", f"{B} It was mined nearby.", C],
    ),
    "closing commentary and notes": (
        f"1. {A}\n2. {B}\n\nThese implications follow from the passage.\nNote: some are inferred.\n"
        "Feel free to ask for more.",
        [A, B],
    ),
    "filler without a colon": (f"Here is a list of rewrites of the passage.\n{A}\n{B}", [A, B]),
    "labelled implications": (
        f"Implication 1: {A}\nImplication 2 - {B}\nVersion 2 of the plan was never built.",
        [A, B, "Version 2 of the plan was never built."],
    ),
    "numbers inside sentences are not markers": (
        "3.5 million tonnes of coal moved in 1840.\n1,200 boats used the canal.",
        ["3.5 million tonnes of coal moved in 1840.", "1,200 boats used the canal."],
    ),
    "the passage repeated": (f"{PASSAGE}\n\n{PASSAGE}", [PASSAGE]),
    "empty": ("", []),
    "only filler": ("Sure! Here is a list of implications:\n\n\nLet me know if you need anything else!", []),
    "only whitespace and separators": ("  \n---\n\t\n***\n1.\n", []),
    "claims that there is nothing to list": (
        "The passage does not directly or indirectly derive any implications.\n\n"
        "Based on the passage, there are no direct or indirect implications derived from it.\n\n"
        "No implications derived directly or indirectly from the content.", []),
    "an empty claim beside real items; negations that state facts stay": (
        f"The passage does not derive any new implications.\n1. {A}\n2. The canal did not carry passengers.",
        [A, "The canal did not carry passengers."]),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=list(CASES))
def test_split_self_edit_shapes(text, expected):
    assert split_self_edit(text) == expected


def test_mixture_of_shapes():
    text = (
        "Okay, here is my self-edit.\n\n**Implications:**\n"
        f"1. {A}\n• {B}\n\n"
        "**Questions and answers:**\nQ1: What did the canal carry?\nA1: Coal.\n\n"
        f"Rewrite: {C}\n\nI hope this helps!\n\nReferences:\n[1] Made-up Journal, 2020."
    )
    assert split_self_edit(text) == [
        A,
        B,
        "Question: What did the canal carry?\nAnswer: Coal.",
        C,
    ]


def test_very_long_single_paragraph_is_one_item():
    text = " ".join([A, B, C] * 2000)
    assert split_self_edit("  " + text.replace(". ", ".   ") + "\n") == [text]


@pytest.mark.parametrize("text", ["Q" + " " * 50_000 + "x", "1." + "\t" * 50_000, "a *" * 20_000, "#" * 50_000 + "x"])
def test_long_runs_do_not_backtrack(text):
    split_self_edit(text)  # finishes at once: a quadratic regex would take minutes here


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(text):
    items = split_self_edit(text)
    assert all(isinstance(item, str) and item.strip() for item in items)
    assert len(set(items)) == len(items)


FRAGMENTS = [
    "1. ", "2) ", "(3) ", "- ", "* ", "• ", "**", "*", "### ", "---", "\n", "\r\n", "\n\n", "   ", ":", "?", ".",
    "Q: ", "A: ", "Question 1: ", "Answer: ", "Implications:", "Final answer:", "Sources:", "<think>", "</think>",
    "Sure! Here are", "Let me know if", "Rewrite 2", "You are an AI assistant", "The canal", "coal", "1821",
    "é", "运河", "\u00a0",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=40).map("".join))
def test_never_raises_on_self_edit_like_text(text):
    items = split_self_edit(text)
    assert all(isinstance(item, str) and item.strip() == item and item for item in items)
    assert len(set(items)) == len(items)


def test_training_sequences_put_the_passage_first_with_title_prefix():
    assert training_sequences("Marrow Canal", PASSAGE, [A, B], None) == [
        f"Marrow Canal\n{PASSAGE}",
        f"Marrow Canal\n{A}",
        f"Marrow Canal\n{B}",
    ]


def test_training_sequences_without_title_or_items():
    assert training_sequences("", PASSAGE, [A], None) == [PASSAGE, A]
    assert training_sequences("Marrow Canal", PASSAGE, [], 5) == [f"Marrow Canal\n{PASSAGE}"]


@pytest.mark.parametrize(("cap", "count"), [(1, 1), (2, 2), (3, 3), (4, 4), (10, 4)])
def test_training_sequences_cap_counts_the_passage(cap, count):
    sequences = training_sequences("T", PASSAGE, [A, B, C], cap)
    assert len(sequences) == count
    assert sequences == training_sequences("T", PASSAGE, [A, B, C], None)[:count]
    assert sequences[0] == f"T\n{PASSAGE}"


@pytest.mark.parametrize("cap", [0, -1])
def test_training_sequences_reject_a_cap_below_one(cap):
    with pytest.raises(ValueError):
        training_sequences("T", PASSAGE, [A], cap)


def test_question_answer_items_train_as_the_closed_book_chat_turn_with_the_loss_on_the_answer(tiny_model_dir):
    from seal import models
    from seal.domains.base import Example
    from seal.domains.knowledge.data import Passage
    from seal.domains.knowledge.domain import KnowledgeDomain
    from seal.domains.knowledge.prompts import answer_prompt
    from seal.generation import chat_prompt
    from seal.inner.lora import IGNORE, tokenize_examples

    passage = Passage("Orrin Canal", "The Orrin Canal opened in 1843.")
    self_edit = "Question: When did the Orrin Canal open?\nAnswer: In 1843.\n\n- The canal is old."
    chat = KnowledgeDomain(prompt="self-qa", qa_format="chat").parse(passage, self_edit).examples
    assert chat == [Example("Orrin Canal\nThe Orrin Canal opened in 1843."),
                    Example("In 1843.", answer_prompt("Orrin Canal", "When did the Orrin Canal open?"), chat=True),
                    Example("Orrin Canal\nThe canal is old.")]
    text = KnowledgeDomain(prompt="self-qa").parse(passage, self_edit).examples
    assert text[1] == Example("Orrin Canal\nQuestion: When did the Orrin Canal open?\nAnswer: In 1843.")

    _, tokenizer = models.load(str(tiny_model_dir))
    (ids, labels), = tokenize_examples(tokenizer, chat[1:2], max_length=512)
    prompt = tokenizer(chat_prompt(tokenizer, chat[1].prompt), add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [IGNORE] * len(prompt)
    assert tokenizer.decode(ids[len(prompt):]) == "In 1843." + tokenizer.eos_token  # the loss covers the answer
