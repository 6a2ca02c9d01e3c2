"""ARC prompts: TTT examples are masked by the chat template, and the self-edit prompt describes a parsable config."""

import pytest

from seal.domains.arc.grids import GridFormat, make_grid
from seal.domains.arc.prompts import answer_prompt, read_answer, self_edit_prompt, training_examples
from seal.domains.arc.selfedit import ArcSelfEdit, SelfEditLimits, parse_self_edit
from seal.domains.arc.tasks import ArcTask, Example
from seal.inner.lora import IGNORE, tokenize_examples

G = make_grid


def recolour_task() -> ArcTask:
    """Colour 1 becomes 2; everything else stays."""
    demos = [([[1, 0], [0, 1]], [[2, 0], [0, 2]]), ([[0, 1, 1]], [[0, 2, 2]]), ([[3], [1]], [[3], [2]])]
    return ArcTask("recolour", tuple(Example(G(i), G(o)) for i, o in demos), (G([[1, 3], [1, 0]]),),
                   (G([[2, 3], [2, 0]]),))


def test_answer_prompt_shows_demonstrations_and_test_input_but_not_its_output():
    text = answer_prompt(recolour_task())
    assert "Example 3\nInput:\n3\n1\nOutput:\n3\n2" in text
    assert text.count("Input:") == 3 and "Test input:\n13\n10\n" in text
    assert "23\n20" not in text


def test_output_strategy_masks_exactly_the_templated_user_turn(tiny):
    _, tok = tiny
    task = recolour_task()
    (ex,) = training_examples(tok, [task], "output")
    user = answer_prompt(task)
    templated = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    assert ex.prompt == templated and ex.completion == "23\n20"
    (ids, labels), = tokenize_examples(tok, [ex], max_length=10_000)
    n_prompt = len(tok(templated, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and IGNORE not in labels[n_prompt:]
    # prompt + learned tokens are the template's rendering of the whole exchange, end-of-turn included
    full = tok.apply_chat_template([{"role": "user", "content": user}, {"role": "assistant", "content": "23\n20"}],
                                   tokenize=False)
    assert full.startswith(tok.decode(ids))
    assert ids[-1] == tok.eos_token_id


def test_all_strategy_learns_the_same_tokens_whole(tiny):
    _, tok = tiny
    out, whole = (training_examples(tok, [recolour_task()], s)[0] for s in ("output", "all"))
    assert whole.prompt == "" and whole.completion == out.prompt + out.completion
    (ids_out, _), (ids_all, labels_all) = tokenize_examples(tok, [out, whole], max_length=10_000)
    assert ids_all == ids_out and IGNORE not in labels_all


def test_one_example_per_held_out_test(tiny):
    _, tok = tiny
    task = recolour_task()
    two_tests = ArcTask("t", task.train[:1], (task.train[1].input, task.train[2].input),
                        (task.train[1].output, task.train[2].output))
    exs = training_examples(tok, [two_tests], "output")
    assert [e.completion for e in exs] == ["022", "3\n2"]


def test_self_edit_prompt_names_every_key_and_its_example_parses():
    limits = SelfEditLimits(max_learning_rate=1e-3, max_epochs=4)
    text = self_edit_prompt(recolour_task(), limits)
    for key in ("use_basic_augmentations", "use_size_augmentations", "use_chain_augmentations",
                "use_repeat_augmentations", "strategy", "learning_rate", "num_train_epochs"):
        assert f'"{key}"' in text
    assert "from 1e-06 to 0.001" in text and "from 1 to 4" in text
    assert "Example 2\nInput:\n011\nOutput:\n022" in text
    assert isinstance(parse_self_edit(text, limits), ArcSelfEdit)


@pytest.mark.parametrize("reply, grid", [
    ("12\n34", ((1, 2), (3, 4))),
    ("Output:\n12\n34\nThat is the answer.", ((1, 2), (3, 4))),
    ("\n\n7", ((7,),)),
    ("I do not know.", None),
    ("", None),
])
def test_read_answer(reply, grid):
    assert read_answer(reply) == grid


def test_grid_format_is_configurable():
    fmt = GridFormat(cell_sep=" ")
    assert "1 0\n0 1" in answer_prompt(recolour_task(), fmt=fmt)
    assert read_answer("Answer:\n1 2\n3 4", fmt) == ((1, 2), (3, 4))
