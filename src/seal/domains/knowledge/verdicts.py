"""GPT-4.1's verdicts on closed-book answers, and the split by title that graders are tuned and measured on.

Each line of the verdicts file is {title, question, gold, prediction, gpt41_correct}. The split hashes
the passage title, so one passage (and so one question) never lands on both sides: the "tune" half
trains and tunes graders, the "held-out" half measures them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HALVES = ("tune", "held-out")


def split_half(title: str) -> str:
    return "tune" if hashlib.sha256(title.encode()).digest()[-1] % 2 == 0 else "held-out"


def load_verdicts(path: Path) -> dict[str, list[dict]]:
    """The verdicts of `path` by half, in file order."""
    halves: dict[str, list[dict]] = {half: [] for half in HALVES}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            halves[split_half(row["title"])].append(row)
    return halves
