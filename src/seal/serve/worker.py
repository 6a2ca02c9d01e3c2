"""The consolidation worker: `python -m seal.serve.worker DATA PARENT_PID`, started by the server, which writes
the job's id to its stdin (at once, or, for a worker started ahead of its job, when the job comes).

It learns the job's pending documents one by one into the memory (`Memory.learn`: self-edit, self-quiz, LoRA
update, gate) and records each decision in the store as soon as it is made. It runs in a process of its own
so that chat, served by the server process from the previous version, never waits for training; and it dies
with the server (SIGKILL on the parent's death), so a killed server never leaves a consolidation running
behind a restarted one. Progress goes to the job record and, one line per stage, to the server's log.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from seal.memory import Document, LearnResult, Memory, MemoryDirError, Question
from seal.serve.config import load_saved
from seal.serve.store import Store

LOCK_FILE = "consolidate.lock"
DB_FILE = "seal.db"
MEMORY_DIR = "memory"
_PR_SET_PDEATHSIG = 1
_PROGRESS_EVERY_SECONDS = 1.0


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the server dies; exit at once if it already has."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        sys.exit(1)


def acquire_lock(data: Path, blocking: bool) -> object | None:
    """The consolidation lock (flock: released by the kernel when its holder dies, however it dies)."""
    handle = open(data / LOCK_FILE, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.close()
        return None
    return handle


# what a job records of each `Memory.learn` (its per-question answers stay in the memory's own log)
RECORDED = ("accepted", "reason", "version", "parent", "quiz", "quiz_before", "quiz_after", "probe_before",
            "probe_after", "self_edit", "self_edit_usable", "sequences", "seconds", "consolidation")


def as_record(result: LearnResult) -> dict:
    record = {k: v for k, v in result.to_dict().items() if k in RECORDED}
    return json.loads(json.dumps(record, default=str))


def log(message: str) -> None:
    print(f"seal consolidate: {message}", file=sys.stderr, flush=True)


def consolidate(data: Path, job_id: str) -> None:
    store = Store(data / DB_FILE)
    memory = Memory.open(data / MEMORY_DIR, load_saved(data).memory)
    job = store.job(job_id)
    total = len(job["documents"])
    log(f"{job_id}: {total} pending document(s)")
    for done, doc_id in enumerate(job["documents"]):
        doc = store.document(doc_id)
        if doc is None or doc["state"] != "pending":  # deleted (or decided) since the job started
            store.record_decision(job_id, {"document": doc_id, "skipped": "no longer pending"}, None)
            continue
        where = {"done": done, "total": total, "document": doc_id, "title": doc["title"]}
        before = [v["name"] for v in memory.versions()]
        store.update_job(job_id, current={"document": doc_id, "versions_before": before},
                         progress=where | {"stage": "starting"})
        log(f"{job_id}: [{done + 1}/{total}] learning {doc['title']!r}")
        last, last_stage = 0.0, ""

        def on_progress(stage: str, step: int, steps: int) -> None:
            # a new stage is shown at once (a short training would otherwise appear only at its last step)
            nonlocal last, last_stage
            if stage != last_stage or time.monotonic() - last >= _PROGRESS_EVERY_SECONDS or step == steps:
                last, last_stage = time.monotonic(), stage
                store.update_job(job_id, progress=where | {"stage": stage, "step": step, "steps": steps})
                log(f"{job_id}: [{done + 1}/{total}] {stage} {step}/{steps}")

        questions = tuple(Question(q["question"], q["answer"]) for q in doc["questions"] or ()) or None
        try:
            record = as_record(memory.learn(Document(doc["title"], doc["text"], questions), on_progress=on_progress))
        except MemoryDirError:
            raise  # the memory directory's fault, not the document's: the job fails
        except ValueError as e:  # the memory refused this document (e.g. too long): rejected, the job goes on
            record = {"accepted": False, "reason": f"refused: {e}", "version": None}
        state = "consolidated" if record.get("accepted") else "rejected"
        store.record_decision(job_id, {"document": doc_id, "title": doc["title"], **record},
                              (state, str(record.get("reason") or ""), record.get("version")))
        log(f"{job_id}: [{done + 1}/{total}] {state}: {record.get('reason')} (version {record.get('version')})")
    store.update_job(job_id, state="done", finished=time.time(), progress={"done": total, "total": total})
    log(f"{job_id}: done")


def main(argv: list[str]) -> int:
    data, parent = Path(argv[0]), int(argv[1])
    die_with_parent(parent)
    job_id = sys.stdin.readline().strip()
    if not job_id:  # stdin closed without a job: the server has stopped
        return 0
    lock = acquire_lock(data, blocking=False)
    store = Store(data / DB_FILE)
    if lock is None:
        store.update_job(job_id, state="failed", finished=time.time(), error="another consolidation holds the lock")
        return 1
    try:
        consolidate(data, job_id)
    except Exception as e:  # recorded in the job, and the traceback in the server log: never silent
        traceback.print_exc()
        store.update_job(job_id, state="failed", finished=time.time(), current=None,
                         error=f"{type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
