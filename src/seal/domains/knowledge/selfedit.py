"""Turn a free-text self-edit into the short sequences a knowledge-incorporation update trains on.

A self-edit is whatever the model wrote: implications, rewrites, question-answer pairs, or reasoning
followed by a list. `split_self_edit` cuts it into items, one per statement, and throws away the
parts that carry no knowledge of the passage:

- list markers ("1.", "1)", "(1)", "-", "*", "•", "Rewrite 2:"), markdown emphasis and headers;
- polite filler before and after the content ("Sure! Here are...", "Let me know if..."), and claims that
  there is nothing to list ("The passage does not derive any implications");
- "Sources:"/"References:" sections and everything after them: the citations are invented, and
  training on them teaches the model false facts that no question about the passage asks for;
- run-ons where the model starts writing a new prompt ("You are an AI assistant...");
- the reasoning before a final "Implications:" / "Final answer:" line (and any <think> block);
- a last item cut short by the token limit when it is too short to say anything (< 4 words).

Items are split at list markers, blank lines and headers; an unmarked line joins the item above it
when it is indented or the item above does not end a sentence (hard-wrapped text). A question and
its answer stay one item, written "Question: ...\\nAnswer: ...".

`training_sequences` always puts the passage itself first: the self-edit is a lossy, sometimes
wrong restatement, so an update never trains on it alone, and a useless self-edit degrades to the
paper's "train on the passage" baseline instead of to nothing. Every sequence starts with the title
because closed-book questions name the topic, which ties each short statement to its subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Where the useful text ends: invented sources, or the model starting a new prompt.
_STOP = re.compile(
    r"^#*\s*(?:(?:sources?|references?|citations?|bibliography|works cited|further reading)\s*(?::|$)"
    r"|you are an? (?:ai|helpful)|let['’]s read the following|(?:human|user)\s*:|<\|)",
    re.I,
)
# After reasoning, the final list starts at such a line; everything before it is dropped.
_FINAL = re.compile(
    r"^#*\s*(?:final (?:answer|list|output|implications|rewrites?|self[- ]edit)|implications)\s*(?::|$)", re.I
)
_MARKER = re.compile(
    r"^\s*(?:[-*•‣◦▪●○·–—+>](?=\s)|\(?\d{1,3}[.)\]:](?!\d)|\[\d{1,3}\]|\(?[a-z]\)|#\d+[.:)]?"
    r"|(?:rewrite|implication|paraphrase|version|restatement|statement|fact|point|item)"
    r"\s*(?:#?\d+\s*(?:[:.)\-–]|$)|:))\s*",
    re.I,
)
_QUESTION = re.compile(r"^(?:q|question)\s*#?\d*\s*[:.)]\s*", re.I)
_ANSWER = re.compile(r"^(?:a|answer)\s*#?\d*\s*:\s*", re.I)
_INLINE_ANSWER = re.compile(r"\s(?:a|answer)\s*\d*\s*:\s*", re.I)
_FILLER = re.compile(
    r"^\(?(?:(?:sure|certainly|of course|absolutely|okay|ok|alright|great)(?:[!.,:]|$)"
    r"|(?:here|below)(?:\s+(?:is|are)|['’]s)\b|the following (?:is|are)\b"
    r"|(?:i )?hope (?:this|these|that)\b|(?:please )?let me know\b|feel free\b|would you like\b"
    r"|if you (?:need|want|would|have|['’]d)|is there anything\b|i can also\b|note\s*:"
    r"|(?:these|the above|all (?:of )?these|each of these) (?:implications|rewrites|points|statements|items"
    r"|questions|facts|inferences)\b"
    # a claim that there is nothing to list ("The passage does not derive any implications"): no knowledge
    r"|[\w,'’ ]{0,80}?\b(?:there (?:are|is) no|no|does not|do not|doesn['’]t|did not)(?:\s+\w+){0,6}?\s+implications?\b)",
    re.I,
)
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_LETTER = re.compile(r"[^\W\d_]")
_SENTENCE_END = tuple(".!?…。！？\"'”’)]")
_MIN_TRUNCATED_WORDS = 4


@dataclass
class _Item:
    """A plain statement (`question` None), or a question whose answer is `text` (None until one is given)."""

    text: str | None
    indent: int
    question: str | None = None

    def add(self, line: str) -> None:
        if self.text is None:
            self.question = f"{self.question} {line}"
        else:
            self.text = f"{self.text} {line}"

    def ends_sentence(self) -> bool:
        return (self.question if self.text is None else self.text).endswith(_SENTENCE_END)

    def render(self) -> str:
        text = " ".join((self.text or "").split())
        question = " ".join((self.question or "").split())
        if not question:
            return text
        return f"Question: {question}\nAnswer: {text}" if text else f"Question: {question}"


def _clean(line: str) -> str:
    """The line without markdown emphasis and zero-width characters."""
    line = line.replace("**", "").replace("\u200b", "").replace("\ufeff", "")
    return _ITALIC.sub(r"\1", line).rstrip()


def _relevant_lines(text: str) -> list[str]:
    """The lines of the answer proper: no <think> block, nothing from a stop line on, nothing before a final marker."""
    text = text.rpartition("</think>")[2].split("<think>")[0]
    lines = [_clean(line) for line in text.splitlines()]
    stop = next((i for i, line in enumerate(lines) if _STOP.match(line.strip())), len(lines))
    lines = lines[:stop]
    for i in range(len(lines) - 1, -1, -1):
        if final := _FINAL.match(lines[i].strip()):
            return [lines[i].strip()[final.end():], *lines[i + 1:]]
    return lines


def _parse(lines: list[str]) -> list[_Item]:
    items: list[_Item] = []
    open_item = False  # whether the last item may still take continuation lines
    for line in lines:
        indent = len(line) - len(line.lstrip())
        line = " ".join(line.split())  # single spaces also keep the regexes linear
        marker = _MARKER.match(line)
        body = line[marker.end():] if marker else line
        if not _LETTER.search(body):  # blank line, separator, lone number or bullet
            open_item = False
            continue
        last = items[-1] if items else None
        if question := _QUESTION.match(body):
            asked, *reply = _INLINE_ANSWER.split(body[question.end():], maxsplit=1)
            items.append(_Item(reply[0] if reply else None, indent, asked))
        elif answer := _ANSWER.match(body):
            reply = body[answer.end():]
            if last is not None and last.text is None:  # answers the labelled question above
                last.text = reply
            elif last is not None and last.question is None:  # the question's label was in the prompt
                last.question, last.text = last.text, reply
            else:
                items.append(_Item(reply, indent))
        elif _FILLER.match(body) or (not marker and (body.startswith("#") or body.endswith(":"))):
            open_item = False  # filler or a header
            continue
        elif open_item and not marker and (indent > last.indent or not last.ends_sentence()):
            last.add(body)  # a wrapped line of the item above
        else:
            items.append(_Item(body, indent))
        open_item = True
    return items


def split_self_edit(text: str) -> list[str]:
    """Items of a self-edit: one string per implication / rewrite / Q-A pair (a Q/A pair stays one item,
    'Question: ...\\nAnswer: ...' normalised), markers and bullets stripped, filler and sources dropped,
    whitespace normalised inside single-line items, exact duplicates removed (order kept).
    Never raises on any str input; '' or pure filler -> []."""
    items = [rendered for item in _parse(_relevant_lines(text)) if _LETTER.search(rendered := item.render())]
    if items and not items[-1].endswith(_SENTENCE_END) and len(items[-1].split()) < _MIN_TRUNCATED_WORDS:
        items.pop()  # cut off by the token limit before it said anything
    return list(dict.fromkeys(items))


def training_sequences(title: str, passage: str, items: list[str], max_sequences: int | None) -> list[str]:
    """The finetuning corpus for one update: the passage itself always first as f"{title}\\n{passage}",
    then each item prefixed with the title (f"{title}\\n{item}"), capped so that the total is at most
    max_sequences (None = no cap; max_sequences < 1 -> ValueError). Title empty -> no prefix line."""
    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences must be at least 1 or None, got {max_sequences}")
    prefix = f"{title}\n" if title else ""
    sequences = [prefix + passage] + [prefix + item for item in items]
    return sequences if max_sequences is None else sequences[:max_sequences]


_QA_ITEM = re.compile(r"Question: (.+)\nAnswer: (.+)", re.S)


def qa_pair(item: str) -> tuple[str, str] | None:
    """(question, answer) of an item that `split_self_edit` wrote as a question with its answer, else None."""
    match = _QA_ITEM.fullmatch(item)
    return (match[1].strip(), match[2].strip()) if match else None
