"""The closed-book answer protocol: which text is graded, recitation and repetition, and the labelled cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seal.domains.knowledge.answers import (MAX_ANSWER_WORDS, copied_share, credit, graded_answer, recites, score_answers,
                                            summary)
from seal.config import EvalConfig
from seal.domains.base import SelfEditError
from seal.domains.knowledge.data import Passage, Question
from seal.domains.knowledge.domain import KnowledgeDomain
from seal.domains.knowledge.grading import DEFAULT_GRADER, get_grader

CASES = [json.loads(line) for line in (Path(__file__).parent / "data" / "recitation_cases.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("text, expected", [
    ("Lina Marsk.", "Lina Marsk."),
    ("  \n\nMount Teral\nThe observatory was founded in 1902.", "Mount Teral"),
    ("It opened in 1902. It closed in 1999.", "It opened in 1902."),
    ("The reflector is 60.5 centimetres wide. It was built by Corvin.", "The reflector is 60.5 centimetres wide."),
    ("", ""),
])
def test_graded_answer_is_the_first_sentence_of_the_first_line(text, expected):
    assert graded_answer(text) == expected


def test_graded_answer_is_capped_in_words():
    assert graded_answer(" ".join(["word"] * 100)).split() == ["word"] * MAX_ANSWER_WORDS


def test_recitation_is_a_long_run_of_the_document():
    doc = "The Brennock Ferry crosses the Salle estuary between Port Ivy and the island of Caddow every day."
    assert recites("the brennock ferry crosses the Salle estuary, between Port Ivy and the island", doc)
    assert not recites("The Salle estuary.", doc)  # a short answer copied from the document is not a recitation
    assert not recites("The ferry goes from Port Ivy to the island of Caddow across the Salle estuary.", doc)
    gold = "between Port Ivy and the island of Caddow every day"  # a long gold quoted word for word is an answer
    assert not recites("It sails between Port Ivy and the island of Caddow every day.", doc, gold)
    assert recites("It crosses the Salle estuary between Port Ivy and the island of Caddow every day.", doc, gold)


def test_copied_share_counts_the_words_in_long_runs_of_the_document():
    doc = "The Brennock Ferry crosses the Salle estuary between Port Ivy and the island of Caddow every day."
    copy = "The Brennock Ferry crosses the Salle estuary between Port Ivy and the island."  # 13 words, one run
    restated = "A daily boat links Caddow with Port Ivy."  # 8 words of its own
    assert copied_share([copy], doc) == 1.0
    assert copied_share([restated], doc) == 0.0
    assert copied_share([copy, restated], doc) == pytest.approx(13 / 21)
    assert copied_share(["Ferry crosses the Salle estuary between Port Ivy and"], doc) == 0.0  # 9 words: no run
    assert copied_share([], doc) == 0.0


def test_a_parsed_self_edit_notes_what_it_copies():
    plan = KnowledgeDomain(eval=EvalConfig(grader="containment")).parse(
        FERRY, f"1. {FERRY.context}\n2. Islanders can reach the mainland by boat.")
    assert plan.notes == {"items": 2, "copied": pytest.approx(24 / 31)}  # the passage's 24 words, then 7 of its own


def test_drop_copied_trains_only_the_items_in_the_self_edits_own_words():
    domain = KnowledgeDomain(eval=EvalConfig(grader="containment"), drop_copied=True)
    plan = domain.parse(FERRY, f"1. {FERRY.context}\n2. Islanders can reach the mainland by boat.")
    assert plan.notes == {"items": 2, "copied": pytest.approx(24 / 31), "dropped": 1}
    assert len(plan.examples) == 2 and "Islanders" in plan.examples[1].completion  # the passage, then the own item
    assert plan.examples[0].completion.count(FERRY.context) == 1  # the passage itself is still trained
    with pytest.raises(SelfEditError, match="all 1 statements .* copy the passage"):
        domain.parse(FERRY, f"1. {FERRY.context}")


def test_a_text_given_to_questions_with_other_answers_is_credited_for_none():
    assert credit([True, False, True], ["A", "a.", "B"], ["a", "c", "b"]) == [False, False, True]
    assert credit([True, True], ["1958", "1958"], ["1958", "1958."]) == [True, True]  # the same gold: stays
    # one sentence holding both golds, given to both questions: it says the same thing whatever is asked
    assert credit([True, True], ["Fire took 4,000 books in 1958."] * 2, ["1958", "4,000"]) == [False, False]
    # two questions asking the same fact, one gold holding the other: one answer, credited for both
    assert credit([True, True], ["It was founded in 1852."] * 2, ["It was founded in 1852", "1852"]) == [True, True]
    assert credit([True, False], ["It was founded in 1852."] * 2, ["1852", "1852"]) == [False, False]


@pytest.mark.parametrize("grader", sorted({DEFAULT_GRADER, "lenient", "learned"}))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["case"][:50])
def test_protocol_credits_the_labelled_cases_as_labelled(case, grader):
    passage = Passage(case["title"], case["document"],
                      tuple(Question(q["question"], q["gold"]) for q in case["questions"]))
    score = KnowledgeDomain(eval=EvalConfig(grader=grader)).score(passage, [q["generation"] for q in case["questions"]])
    assert [d["correct"] for d in score.details] == [q["credited"] for q in case["questions"]]


@pytest.mark.parametrize("grader", sorted({DEFAULT_GRADER, "lenient"}))
def test_the_no_model_recitation_control_scores_zero_on_the_labelled_documents(grader):
    for case in (c for c in CASES if c["kind"] == "recitation" and len({q["generation"] for q in c["questions"]}) == 1):
        questions = [Question(q["question"], q["gold"]) for q in case["questions"]]
        details = score_answers(get_grader(grader), case["document"], questions,
                                [case["document"][:180]] * len(questions))
        assert not any(d["correct"] for d in details)
        assert all(d["identical"] for d in details)


# a passage and two right answers to its questions, the first of them recited
FERRY = Passage("Brannock ferry", "The Brannock ferry crossed the grey estuary twice a day from the old stone pier at "
                "Hollin Quay until the bridge opened in 1974.",
                (Question("When did the bridge open?", "1974"), Question("Where did the ferry leave from?", "Hollin Quay")))
FERRY_ANSWERS = ["The Brannock ferry crossed the grey estuary twice a day from the old stone pier, until 1974.",
                 "From Hollin Quay."]


def test_unrecited_accuracy_leaves_out_credited_answers_that_recite():
    details = score_answers(lambda question, gold, answer: gold in answer, FERRY.context, list(FERRY.questions),
                            FERRY_ANSWERS)
    assert [(d["correct"], d["recites"]) for d in details] == [(True, True), (True, False)]
    assert summary(details) == pytest.approx({"accuracy": 1.0, "f1": summary(details)["f1"], "em": 0.0,
                                              "recitation": 0.5, "identical": 0.0, "unrecited": 0.5})


def test_a_domain_scored_by_unrecited_accuracy_earns_nothing_for_a_recitation():
    by_accuracy = KnowledgeDomain(eval=EvalConfig(grader="containment")).score(FERRY, FERRY_ANSWERS)
    by_unrecited = KnowledgeDomain(eval=EvalConfig(grader="containment"), score_by="unrecited").score(FERRY, FERRY_ANSWERS)
    assert (by_accuracy.value, by_unrecited.value) == (1.0, 0.5)
    assert by_unrecited.metrics == by_accuracy.metrics  # the same answers, graded the same: only the value differs
    with pytest.raises(ValueError, match="score_by"):
        KnowledgeDomain(score_by="f1")


def test_score_reports_the_protocol_metrics():
    case = CASES[0]
    passage = Passage(case["title"], case["document"],
                      tuple(Question(q["question"], q["gold"]) for q in case["questions"]))
    score = KnowledgeDomain().score(passage, [q["generation"] for q in case["questions"]])
    assert score.metrics == {"accuracy": 0.0, "f1": pytest.approx(score.metrics["f1"]), "em": 0.0,
                             "recitation": 1.0, "identical": 1.0, "unrecited": 0.0}
    # the grader alone credits the recitation where its first sentence holds the gold; the protocol does not
    assert [d["judged"] for d in score.details] == [False, True, False, False, False]
