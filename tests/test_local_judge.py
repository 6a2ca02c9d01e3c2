"""The local yes/no judge on the tiny random model: it reads a verdict from the yes/no probabilities
of the first reply token, on any prompt, and its bias moves the decision."""

import math

import pytest
import torch

from seal.domains.knowledge.grading import JUDGE_PROMPT, get_grader
from seal.domains.knowledge.local_judge import LocalJudge
from seal.generation import chat_prompt
from seal.models import ModelError

CASE = ("In which year did the canal open?", "1843", "The canal opened in 1843.")


def test_verdict_follows_the_yes_no_margin(tiny):
    judge = LocalJudge(loaded=tiny)
    margin = judge.margin(*CASE)
    assert math.isfinite(margin)
    assert judge(*CASE) is (margin > 0)
    assert LocalJudge(loaded=tiny, bias=margin + 1)(*CASE) is False
    assert LocalJudge(loaded=tiny, bias=margin - 1)(*CASE) is True


@torch.no_grad()
def test_margin_is_the_yes_no_log_odds_of_the_first_reply_token(tiny):
    model, tok = tiny
    judge = LocalJudge(loaded=tiny)
    ids = tok(chat_prompt(tok, JUDGE_PROMPT.format(question=CASE[0], gold=CASE[1], prediction=CASE[2])),
              add_special_tokens=False, return_tensors="pt")["input_ids"]
    logprobs = torch.log_softmax(model(ids).logits[0, -1], -1)
    yes, no = (torch.logsumexp(logprobs[judge._ids[v]], 0).item() for v in (True, False))
    assert judge.margin(*CASE) == pytest.approx(yes - no, abs=1e-5)


def test_margin_depends_on_the_answer(tiny):
    judge = LocalJudge(loaded=tiny)
    assert judge.margin(*CASE) != judge.margin(CASE[0], CASE[1], "It opened in 1920, long after.")


def test_empty_answer_is_wrong_without_asking(tiny):
    assert LocalJudge(loaded=tiny, bias=-1e9)(CASE[0], CASE[1], "  ") is False


def test_registry_loads_a_model_by_path(tiny_model_dir):
    judge = get_grader("local-judge", model=str(tiny_model_dir))
    assert judge.name == "local-judge" and judge.version.startswith(str(tiny_model_dir))
    assert isinstance(judge(*CASE), bool)


def test_unknown_model_is_refused():
    with pytest.raises(ModelError, match="unknown model"):
        get_grader("local-judge", model="no-such-model")
