"""The self-edit parser reads messy model text, never raises, and explains every rejection."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seal.domains.arc.selfedit import (
    ArcSelfEdit,
    Rejection,
    SelfEditLimits,
    check_budget,
    estimate_steps,
    parse_self_edit,
    render_self_edit,
    self_edit_template,
)

EDIT = ArcSelfEdit(True, False, True, False, "output", 1e-4, 3)
FLAT = {
    "use_basic_augmentations": True,
    "use_size_augmentations": False,
    "use_chain_augmentations": True,
    "use_repeat_augmentations": False,
    "strategy": "train_using_output_tokens",
    "learning_rate": 1e-4,
    "num_train_epochs": 3,
}


def with_(**changes):
    return json.dumps({**FLAT, **changes})


def without(key):
    return json.dumps({k: v for k, v in FLAT.items() if k != key})


VALID = [
    json.dumps(FLAT),
    render_self_edit(EDIT),
    f"```json\n{json.dumps(FLAT, indent=2)}\n```",
    f"Here is my config:\n{json.dumps(FLAT)}\nThis should work because the task is symmetric.",
    f"Use {{braces}} carefully. {json.dumps(FLAT)} {{\"another\": 1}}",
    '{"Basic": true, "size-augmentations": false, "use chain": true, "repeat": false, '
    '"Training Strategy": "Output", "lr": 0.0001, "epochs": 3.0}',
    '{"data_generation": {"basic": true, "size": false, "chain": true, "repeat": false}, '
    '"training": {"strategy": "output", "learning_rate": 1e-4, "num_train_epochs": 3}, "comment": "hi"}',
]


@pytest.mark.parametrize("text", VALID)
def test_valid_texts_parse(text):
    assert parse_self_edit(text) == EDIT


REJECTED = [
    ("", "no JSON object"),
    ("I would use basic augmentations.", "no JSON object"),
    ('{"use_basic_augmentations": true,', "malformed JSON"),
    (json.dumps(FLAT)[:-1] + ",}", "malformed JSON"),
    ("{'use_basic_augmentations': True}", "malformed JSON"),
    ('{"data_generation": {"basic": true, "size": false, "chain": true, "repeat": false}, "training": {,}}', "malformed"),
    ("[1, 2, 3]", "no JSON object"),
    (without("learning_rate"), "missing keys: learning_rate"),
    (without("use_size_augmentations"), "missing keys: use_size_augmentations"),
    ("{}", "missing keys"),
    (with_(use_basic_augmentations="true"), "use_basic_augmentations must be true or false"),
    (with_(use_chain_augmentations=1), "use_chain_augmentations must be true or false"),
    (with_(strategy="sometimes"), "strategy must be one of"),
    (with_(strategy=3), "strategy must be one of"),
    (with_(learning_rate="1e-4"), "learning_rate must be a finite number"),
    (with_(learning_rate=True), "learning_rate must be a finite number"),
    (with_(learning_rate=float("nan")), "learning_rate must be a finite number"),
    (with_(learning_rate=0.5), "learning_rate 0.5 is outside"),
    (with_(learning_rate=0), "outside"),
    (with_(learning_rate=-1e-4), "outside"),
    (with_(num_train_epochs=2.5), "num_train_epochs must be an integer"),
    (with_(num_train_epochs="3"), "num_train_epochs must be an integer"),
    (with_(num_train_epochs=0), "num_train_epochs 0 is outside"),
    (with_(num_train_epochs=10**30), "outside"),
    (json.dumps({**FLAT, "epochs": 4}), "conflicting values for num_train_epochs"),
]


@pytest.mark.parametrize("text, reason", REJECTED)
def test_bad_texts_are_rejected_with_reason(text, reason):
    result = parse_self_edit(text)
    assert isinstance(result, Rejection)
    assert reason in result.reason


@given(st.text(max_size=200))
def test_parser_never_raises(text):
    assert isinstance(parse_self_edit(text), ArcSelfEdit | Rejection)


@given(st.text(alphabet='{}[]":,0123456789.etruflasn_ ', max_size=120))
def test_parser_never_raises_on_json_like_noise(text):
    assert isinstance(parse_self_edit(text), ArcSelfEdit | Rejection)


def test_text_the_decoder_cannot_hold_is_rejected_by_name_not_by_a_catch_all():
    assert parse_self_edit('{"lr": ' + "9" * 5000 + "}").reason == "undecodable JSON at character 0: ValueError"
    assert parse_self_edit('{"a": ' * 100_000).reason == "undecodable JSON at character 0: RecursionError"
    assert parse_self_edit(with_(learning_rate=10**400)).reason.startswith("learning_rate is a 401-digit integer")
    assert "is outside" in parse_self_edit(with_(num_train_epochs=10**400)).reason


def test_limits_are_configurable():
    assert isinstance(parse_self_edit(with_(num_train_epochs=3), SelfEditLimits(max_epochs=2)), Rejection)
    assert parse_self_edit(with_(learning_rate=0.05), SelfEditLimits(max_learning_rate=0.1)).learning_rate == 0.05


def test_step_budget():
    assert estimate_steps(EDIT, 10) == 30
    assert estimate_steps(EDIT, 10, batch_size=4) == 9
    limits = SelfEditLimits(max_steps=100, batch_size=2)
    assert check_budget(EDIT, 66, limits) == EDIT  # 33 batches x 3 epochs = 99 steps
    over = check_budget(EDIT, 68, limits)
    assert isinstance(over, Rejection) and "102 steps > budget of 100" in over.reason


def test_huge_epochs_exceed_budget_even_when_in_range():
    generous = SelfEditLimits(max_epochs=1000, max_steps=500)
    edit = parse_self_edit(with_(num_train_epochs=1000), generous)
    assert isinstance(edit, ArcSelfEdit)
    assert isinstance(check_budget(edit, 20, generous), Rejection)


def test_every_filling_of_the_template_parses_to_its_choices_and_round_trips():
    limits = SelfEditLimits(min_learning_rate=1e-5, max_learning_rate=1e-3, max_epochs=3)
    template = self_edit_template(limits)
    fillings = [""]
    for fixed, choices in template:
        fillings = [f + fixed + c for f in fillings for c in (choices or ("",))]
    assert len(fillings) == 16 * 2 * 5 * 3  # flags x strategies x rates in [1e-5, 1e-3] x epochs
    edits = [parse_self_edit(text, limits) for text in fillings]
    assert all(isinstance(e, ArcSelfEdit) for e in edits) and len(set(edits)) == len(edits)
    assert {e.learning_rate for e in edits} == {1e-5, 3e-5, 1e-4, 3e-4, 1e-3}
    for edit in edits:
        assert parse_self_edit(render_self_edit(edit)) == edit


def test_augmentation_groups():
    assert EDIT.augmentation_groups == ("basic", "chain")
    assert ArcSelfEdit(False, False, False, False, "all", 1e-4, 1).augmentation_groups == ()
