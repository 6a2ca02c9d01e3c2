"""One thread owns the model and answers chat requests in batches.

Requests that arrive while an answer is being generated wait in a queue; the next pass takes all of them and
answers those that share a version and retrieved passages together (`Memory.answer_many`: one batched
generation), so that N concurrent clients cost far less than N generations one after another. On a CPU,
batch 8 generates ~4x the tokens per second of batch 1 (DESIGN.md's model table).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

Context = tuple[tuple[str, str], ...]


class AnswerBatcher:
    def __init__(self, memory, max_batch: int, on_batch=None):
        self.memory, self.max_batch, self.on_batch = memory, max_batch, on_batch or (lambda size: None)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True, name="answers")
        self._thread.start()

    def answer(self, question: str, context: Context, version: str | None) -> tuple[str, str]:
        """(answer, the version that gave it); blocks until the answer is written."""
        done: Future = Future()
        self._queue.put(((version, context), question, done))
        return done.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            waiting = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # close after this pass
                    break
                waiting.append(item)
            groups: dict = {}
            for key, question, done in waiting:
                groups.setdefault(key, []).append((question, done))
            for (version, context), items in groups.items():
                for start in range(0, len(items), self.max_batch):
                    self._answer(version, context, items[start:start + self.max_batch])

    def _answer(self, version: str | None, context: Context, items: list[tuple[str, Future]]) -> None:
        try:
            used = version or self.memory.active
            answers = self.memory.answer_many([q for q, _ in items], context=list(context) or None, version=used)
        except Exception as e:  # handed to each waiting request, which answers 500 with the message
            for _, done in items:
                done.set_exception(e)
            return
        self.on_batch(len(items))
        for (_, done), answer in zip(items, answers):
            done.set_result((answer, used))
