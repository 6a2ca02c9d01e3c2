"""ARC prompts: the answer prompt (demonstrations, then a test input), TTT examples, and the self-edit prompt.

The answer prompt is one user turn; the model replies with the output grid alone. Test-time training
examples use the very same turn, so the model trains on the format it is later asked in. Which tokens
carry the loss is decided by the tokenizer's chat template, never by hard-coded token ids: for the
`output` strategy the prompt is the templated user turn up to and including the assistant header
(`apply_chat_template(..., add_generation_prompt=True)`) and only the grid after it is learned; for
`all` the same text is learned whole.
"""

from __future__ import annotations

import json

from seal.domains.arc.grids import DEFAULT_FORMAT, Grid, GridFormat, grid_to_text, text_to_grid
from seal.domains.arc.selfedit import SelfEditLimits, Strategy
from seal.domains.arc.tasks import ArcTask
from seal.domains.base import Example
from seal.generation import chat_prompt

ANSWER_INSTRUCTIONS = (
    "Find the rule that turns each input grid into its output grid, then apply it to the test input. "
    "A grid is written as rows of digits 0-9, one digit per cell."
)


def demonstrations_text(task: ArcTask, fmt: GridFormat = DEFAULT_FORMAT) -> str:
    return "\n\n".join(
        f"Example {n}\nInput:\n{grid_to_text(ex.input, fmt)}\nOutput:\n{grid_to_text(ex.output, fmt)}"
        for n, ex in enumerate(task.train, 1)
    )


def answer_prompt(task: ArcTask, test_index: int = 0, fmt: GridFormat = DEFAULT_FORMAT) -> str:
    """The user turn asking for the output of `task.test_inputs[test_index]` (never shows a test output)."""
    return (
        f"{ANSWER_INSTRUCTIONS}\n\n{demonstrations_text(task, fmt)}\n\n"
        f"Test input:\n{grid_to_text(task.test_inputs[test_index], fmt)}\n"
        "Reply with the test output grid only."
    )


def training_examples(
    tokenizer, tasks: list[ArcTask], strategy: Strategy, fmt: GridFormat = DEFAULT_FORMAT
) -> list[Example]:
    """One TTT example per test of each (augmented, leave-out) task, masked according to `strategy`."""
    examples = []
    for task in tasks:
        for i, output in enumerate(task.test_outputs or ()):
            prompt = chat_prompt(tokenizer, answer_prompt(task, i, fmt))
            answer = grid_to_text(output, fmt)
            examples.append(Example(answer, prompt) if strategy == "output" else Example(prompt + answer))
    return examples


def read_answer(text: str, fmt: GridFormat = DEFAULT_FORMAT) -> Grid | None:
    """The first grid in a model's reply, skipping lines before it (e.g. 'Output:'); None if there is none."""
    lines = text.split(fmt.row_sep)
    for start in range(len(lines)):
        grid = text_to_grid(fmt.row_sep.join(lines[start:]), fmt)
        if grid is not None:
            return grid
    return None


_KEYS = (
    ("use_basic_augmentations", "true or false: also train on rotated, flipped, transposed and shifted copies "
     "of the examples."),
    ("use_size_augmentations", "true or false: also train on copies whose cells are enlarged in height, width "
     "or both."),
    ("use_chain_augmentations", "true or false: also train on copies that are rotated or flipped and then "
     "enlarged."),
    ("use_repeat_augmentations", "true or false: also train on copies in which every grid is tiled, or joined "
     "to its mirror image."),
    ("strategy", '"train_using_output_tokens" to learn only the answers, or "train_using_all_tokens" to learn '
     "the whole examples, inputs included."),
)
_EXAMPLE_EDIT = {
    "use_basic_augmentations": True, "use_size_augmentations": False, "use_chain_augmentations": False,
    "use_repeat_augmentations": False, "strategy": "train_using_output_tokens", "learning_rate": 0.0001,
    "num_train_epochs": 2,
}


def self_edit_prompt(task: ArcTask, limits: SelfEditLimits, fmt: GridFormat = DEFAULT_FORMAT) -> str:
    """The user turn asking for a JSON self-edit that configures test-time training on `task`."""
    keys = "\n".join(f'- "{key}": {what}' for key, what in _KEYS)
    return (
        "Before solving the puzzle below you will train yourself on examples made from its demonstrations. "
        "Decide how those training examples are made and how you train on them.\n\n"
        f"{demonstrations_text(task, fmt)}\n\n"
        f"Reply with one JSON object with these keys:\n{keys}\n"
        f'- "learning_rate": a number from {limits.min_learning_rate:g} to {limits.max_learning_rate:g}.\n'
        f'- "num_train_epochs": a whole number from {limits.min_epochs} to {limits.max_epochs}.\n'
        "More augmentations and more epochs make training longer; a choice that would take too long is "
        f"rejected. The reply must look like this, with values that suit this puzzle:\n{json.dumps(_EXAMPLE_EDIT)}"
    )
