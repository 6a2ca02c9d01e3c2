"""Self-edits a benchmark samples up front, logged chunk by chunk so that a killed run resumes where it stopped.

Sampling for every passage or task at once fills generation batches best, but on a 2-core CPU it runs for
tens of minutes in which a log shows nothing and a kill loses everything. A few items per call keep the
batches full enough (structured self-QA asks one prompt per sentence), move a progress bar and log as
they go. Chunks are fixed by item index and seeded by their number, so a resumed run samples exactly what
an uninterrupted one would.
"""

from __future__ import annotations

import time
from typing import Sequence

from seal.generation import sample_self_edits
from seal.progress import progress_bar
from seal.runs import Run

SAMPLING_CHUNK = 4


def sampled_self_edits(cfg, run: Run, condition: str, key: str, model, tokenizer, domain,
                       items: Sequence) -> list[list[str]]:
    """`cfg.k` self-edits of each item (a benchmark's config: `sampling`, `k`, `seed`) for `condition`: those
    `run` logged already, then sampled from `model` for each chunk that lacks some, logged as
    `{"event": "self_edits", key: index, "texts", "seconds"}`."""
    logged = {r[key]: r["texts"] for r in run.records(event="self_edits", condition=condition)}
    chunks = [range(start, min(start + SAMPLING_CHUNK, len(items))) for start in range(0, len(items), SAMPLING_CHUNK)]
    todo = [(n, chunk) for n, chunk in enumerate(chunks) if any(i not in logged for i in chunk)]
    if todo:
        with progress_bar() as bar:
            task = bar.add_task(f"{condition}: sampling self-edits", status="",
                                total=sum(len(chunk) for _, chunk in todo))
            for n, chunk in todo:
                start = time.perf_counter()
                texts = sample_self_edits(model, tokenizer, domain, [items[i] for i in chunk], cfg.sampling, cfg.k,
                                          seed=cfg.seed + n)
                seconds = (time.perf_counter() - start) / len(chunk)
                for i, t in zip(chunk, texts):
                    if i not in logged:
                        logged[i] = t
                        run.log({"event": "self_edits", "condition": condition, key: i, "texts": t, "seconds": seconds})
                bar.advance(task, len(chunk))
    return [logged[i] for i in range(len(items))]
