"""Self-edit prompts for knowledge incorporation (the paper's formats) and the closed-book answer prompt.

Each prompt asks the model to restate a passage in a form that is easier to learn from: implications
(short, long, very long, or after step-by-step reasoning), rewrites, or question-answer pairs. `none`
asks for nothing: the update then trains on the passage alone (the paper's "passage only" baseline).
"""

from __future__ import annotations

_READ = "Let's read the following passage and "
_PASSAGE = "\n\nPassage:\n{title}\n{context}\n\n"

SELF_EDIT_PROMPTS = {
    "implications": _READ + "produce a list of implications derived directly or indirectly from the content."
    + _PASSAGE + "Implications:\n",
    "implications-long": _READ + "produce a long list of implications derived directly or indirectly from the content."
    + _PASSAGE + "Implications:\n",
    "implications-very-long": _READ
    + "produce a very long list of implications derived directly or indirectly from the content."
    + _PASSAGE + "Implications:\n",
    "implications-cot": _READ
    + "think step by step about what it states and what follows from it. Write your reasoning first, then a "
    "list of implications derived directly or indirectly from the content after a line that says "
    "'Implications:'." + _PASSAGE + "Reasoning:\n",
    "rewrite": _READ + "rewrite it in a few different ways, each one separated by a newline."
    + _PASSAGE + "Rewritten passages:\n",
    "self-qa": _READ + "rewrite it in a question-answer format." + _PASSAGE + "Question 1: ",
    "none": "",
}


# The structured self-QA scaffold: one small prompt per sentence, the assistant's turn begun with "Question:".
# Asked for a whole passage at once, small models drift off (a translation, questions about the question);
# asked about one sentence, Qwen2.5-0.5B writes a question and a short answer that the sentence supports.
QA_SCAFFOLD = ("Topic: {title}\nSentence: {sentence}\n\n"
               "Write one question that this sentence answers, then the answer in a few words.")
QA_SCAFFOLD_QUESTION = "Question:"
QA_SCAFFOLD_ANSWER = "\nAnswer:"


def self_edit_prompt(kind: str, title: str, context: str) -> str:
    """The user-turn text asking for a self-edit of one passage; '' for `none`."""
    try:
        template = SELF_EDIT_PROMPTS[kind]
    except KeyError:
        raise ValueError(f"unknown self-edit prompt {kind!r}; choose one of {', '.join(SELF_EDIT_PROMPTS)}") from None
    return template.format(title=title, context=context)


def answer_prompt(title: str, question: str, support: tuple[str, str] | None = None) -> str:
    """Closed-book question: the topic is given, the passage is not, and a short, direct answer is asked
    for (only its first sentence is graded: see `answers.graded_answer`).

    With `support` = (title, text) of a passage, the question becomes open-book (the passage precedes it):
    the ceiling that updating the weights is chasing.
    """
    question = f"Topic: {title}\nAnswer the question in a few words.\nQuestion: {question}"
    return f"Passage:\n{support[0]}\n{support[1]}\n\n{question}" if support else question
