"""ArcDomain: self-edit text -> UpdatePlan (or SelfEditError with the reason), and evaluation on a model."""

import json

import pytest
from test_arc_prompts import recolour_task

from seal.domains.arc import domain as domain_mod
from seal.domains.arc.domain import ArcConfig, ArcDomain
from seal.domains.arc.selfedit import ArcSelfEdit, render_self_edit
from seal.domains.base import SelfEditError

EDIT = ArcSelfEdit(True, False, False, False, "output", 3e-4, 2)


def test_valid_self_edit_becomes_a_deterministic_plan(tiny):
    _, tok = tiny
    domain = ArcDomain(tok, ArcConfig(max_examples=10, max_steps=100))
    plan = domain.parse(recolour_task(), render_self_edit(EDIT))
    assert plan.lr == 3e-4 and plan.epochs == 2
    assert plan.notes == {"groups": ["basic"], "strategy": "output"}
    assert len(plan.examples) == 10  # 3 leave-one-out tasks x 9 views, capped
    assert all(ex.prompt.startswith("<|im_start|>user\n") and ex.completion for ex in plan.examples)
    assert domain.parse(recolour_task(), render_self_edit(EDIT)).examples == plan.examples
    other_seed = ArcDomain(tok, ArcConfig(max_examples=10, max_steps=100, seed=1)).parse(recolour_task(),
                                                                                        render_self_edit(EDIT))
    assert other_seed.examples != plan.examples


def test_all_strategy_and_no_augmentation(tiny):
    _, tok = tiny
    bare = ArcSelfEdit(False, False, False, False, "all", 1e-3, 1)
    plan = ArcDomain(tok).parse(recolour_task(), render_self_edit(bare))
    assert len(plan.examples) == 3 and all(ex.prompt == "" for ex in plan.examples)


@pytest.mark.parametrize("text, reason", [
    ("I think rotations would help.", "no JSON object"),
    ('{"use_basic_augmentations": true,', "malformed JSON"),
    (json.dumps({"strategy": "output"}), "missing keys"),
    (render_self_edit(EDIT).replace("0.0003", "0.5"), "outside"),
    (render_self_edit(ArcSelfEdit(True, False, False, False, "output", 3e-4, 9)), "too expensive"),
])
def test_unusable_self_edits_raise_with_the_reason(tiny, text, reason):
    _, tok = tiny
    domain = ArcDomain(tok, ArcConfig(max_examples=10, max_steps=50))
    with pytest.raises(SelfEditError, match=reason):
        domain.parse(recolour_task(), text)


def test_examples_longer_than_the_inner_loop_allows_are_dropped(tiny):
    _, tok = tiny
    with pytest.raises(SelfEditError, match="fits in 20 tokens"):
        ArcDomain(tok, max_tokens=20).parse(recolour_task(), render_self_edit(EDIT))


def test_limits_come_from_the_config(tiny):
    _, tok = tiny
    domain = ArcDomain(tok, ArcConfig(max_epochs=1, max_learning_rate=1e-4))
    assert "from 1 to 1" in domain.self_edit_prompt(recolour_task())
    with pytest.raises(SelfEditError, match="num_train_epochs 2 is outside"):
        domain.parse(recolour_task(), render_self_edit(ArcSelfEdit(False, False, False, False, "all", 1e-4, 2)))
    with pytest.raises(ValueError, match="views"):
        ArcDomain(tok, ArcConfig(views=["sideways"]))


def test_evaluate_on_the_tiny_model_reads_the_rendered_prompts(tiny, monkeypatch):
    """Generation is replaced by a reader of the prompt's test input that applies the rule: the domain's
    prompts, grid parsing, inverse views and voting then have to agree on the gold answer."""
    model, tok = tiny
    from test_arc_bench import rule_follower

    monkeypatch.setattr(domain_mod, "generate", rule_follower(adapted_only=False))
    score = ArcDomain(tok).evaluate(model, tok, recolour_task())
    assert score.value == 1.0 and score.details[0]["votes"] == [{"grid": "23|20", "count": 8}]


def test_evaluate_with_the_real_tiny_generation(tiny):
    model, tok = tiny
    score = ArcDomain(tok, ArcConfig(views=["identity", "rot90"])).evaluate(model, tok, recolour_task())
    assert score.value == 0.0 and score.details[0]["correct"] is False
