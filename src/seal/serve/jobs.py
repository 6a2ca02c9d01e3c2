"""Consolidation jobs seen from the server: start one worker process at a time, watch it, recover after a
kill, and start jobs on the configured schedule."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

from seal.serve.config import ScheduleConfig
from seal.serve.store import ConflictError, Store
from seal.serve.worker import acquire_lock

_LOCK_WAIT_SECONDS = 30


class Versions(Protocol):
    """What recovery needs of the memory: its versions (with their `active` flag) and the pointer."""

    def versions(self) -> list[dict]: ...

    def activate(self, version: str) -> None: ...


def recover(store: Store, data: Path, memory: Versions) -> list[str]:
    """Mark jobs left 'running' by a killed server or worker as interrupted; returns their ids.

    The lock is taken first, so no worker is still running (it dies with its server, and the kernel frees the
    lock with it). A document whose update had already produced a new memory version when the kill came, but
    whose decision had not yet been written, is recorded as consolidated under that version (the first new
    one: the `consolidate` strategy may add a second), so it is neither lost nor learned twice; every other
    unfinished document is simply still pending. Only the worker adds versions, under the memory's own lock.

    The memory writes a version file only once its adapters and documents are in place, then its learn record
    (the memory's own commit point, which it finishes on opening), then moves the pointer; a kill before the
    record leaves a complete version that is not active, and a document recorded under it would be in neither
    the weights nor retrieval. Recovery finishes that commit here too: no one else can
    have moved the pointer while the job ran (activation is refused then), so the job's newest version is
    the one it was about to activate.
    """
    lock = None
    deadline = time.monotonic() + _LOCK_WAIT_SECONDS
    while lock is None and time.monotonic() < deadline:
        lock = acquire_lock(data, blocking=False)
        if lock is None:
            time.sleep(0.2)
    if lock is None:
        raise RuntimeError(f"a consolidation worker still holds {data}/consolidate.lock after {_LOCK_WAIT_SECONDS} s")
    interrupted = []
    try:
        while (job := store.running_job()) is not None:
            current = job["current"]
            if current:
                doc = store.document(current["document"])
                new = [v for v in memory.versions() if v["name"] not in current["versions_before"]]
                if new and not new[-1]["active"]:
                    memory.activate(new[-1]["name"])
                if doc is not None and doc["state"] == "pending" and new:
                    reason = "learned just before the interruption; recorded on restart"
                    version = new[0]["name"]
                    store.record_decision(job["id"], {"document": doc["id"], "title": doc["title"], "accepted": True,
                                                      "version": version, "reason": reason},
                                          ("consolidated", reason, version))
            left = len(job["documents"]) - len(store.job(job["id"])["decisions"])
            store.update_job(job["id"], state="interrupted", current=None, finished=time.time(),
                             error=f"interrupted (server or worker killed); {left} document(s) not consolidated are "
                                   "still pending: POST /v1/consolidate reruns them")
            interrupted.append(job["id"])
    finally:
        lock.close()
    return interrupted


class Consolidator:
    """Starts the worker for a new job (409 if one runs) and closes the job if the worker dies without doing so.

    A worker process spends ~6 CPU seconds importing torch, transformers and peft before it can learn anything
    (benchmarks/worker_start.py); so once a job has ended, the next job's worker is started at once and waits,
    imported, for its job id on stdin. It holds no model and no lock while it waits."""

    def __init__(self, store: Store, data: Path, memory: Versions):
        self.store, self.data, self.memory = store, data, memory
        self._worker: subprocess.Popen | None = None
        self._standby: subprocess.Popen | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    def start(self, trigger: str) -> dict:
        """Call from the event loop's thread: the worker's die-with-parent signal is tied to the thread that
        started it, and that one lives as long as the server."""
        job = self.store.start_job(trigger)
        if not job["documents"]:
            self.store.update_job(job["id"], state="done", finished=time.time())
            return self.store.job(job["id"])
        self._loop = asyncio.get_running_loop()
        proc, self._standby = self._standby, None
        if proc is None or not _hand_over(proc, job["id"]):  # none waiting, or it died since
            proc = self._spawn()
            _hand_over(proc, job["id"])
        self.store.update_job(job["id"], pid=proc.pid)
        self._worker = proc
        threading.Thread(target=self._watch, args=(job["id"], proc), daemon=True, name=f"watch-{job['id']}").start()
        return self.store.job(job["id"])

    def stop(self) -> None:
        """At shutdown: stop a waiting worker, and a running one, marking its job interrupted now rather than
        at the next start."""
        self._stopped = True
        if self._standby is not None:
            self._standby.terminate()
            self._standby.wait()
        if self._worker is not None and self._worker.poll() is None:
            self._worker.terminate()
            self._worker.wait()
            recover(self.store, self.data, self.memory)

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        command = [sys.executable, "-m", "seal.serve.worker", str(self.data), str(os.getpid())]
        return subprocess.Popen(command, env=env, stdin=subprocess.PIPE)

    def _prepare_next(self) -> None:
        if self._standby is None and not self._stopped:
            self._standby = self._spawn()

    def _watch(self, job_id: str, proc: subprocess.Popen) -> None:
        code = proc.wait()
        if self.store.job(job_id)["state"] == "running":  # the worker died without closing its job (killed, OOM)
            print(f"seal serve: consolidation worker of {job_id} exited with {code}", file=sys.stderr, flush=True)
            recover(self.store, self.data, self.memory)
        try:
            self._loop.call_soon_threadsafe(self._prepare_next)  # spawned by the loop's thread, as `start` says
        except RuntimeError:  # the loop has closed: the server is gone
            pass


def _hand_over(proc: subprocess.Popen, job_id: str) -> bool:
    """Give a waiting worker its job; False if it is no longer there to take it."""
    if proc.poll() is not None:
        return False
    try:
        proc.stdin.write(f"{job_id}\n".encode())
        proc.stdin.close()
    except OSError:
        return False
    return True


def seconds_to_next(schedule: ScheduleConfig, last: float, now: float) -> float | None:
    """Seconds until the schedule is next due (`last`: when it last fired or the server started); None: never."""
    due = []
    if schedule.interval_minutes:
        due.append(last + 60 * schedule.interval_minutes - now)
    if (at := schedule.daily_time()) is not None:
        today = dt.datetime.fromtimestamp(now, dt.timezone.utc).replace(hour=at.hour, minute=at.minute, second=0,
                                                                         microsecond=0)
        nxt = today if today.timestamp() > now + 1 else today + dt.timedelta(days=1)
        due.append(nxt.timestamp() - now)
    return max(0.0, min(due)) if due else None


async def run_schedule(schedule: ScheduleConfig, consolidator: Consolidator, pending: Callable[[], int]) -> None:
    """Start a consolidation whenever the schedule is due and enough documents wait; one already running
    simply defers to the next time."""
    last = time.time()
    while (wait := seconds_to_next(schedule, last, time.time())) is not None:
        await asyncio.sleep(wait)
        last = time.time()
        if pending() >= schedule.min_pending:
            try:
                job = consolidator.start("schedule")
                print(f"seal serve: scheduled consolidation {job['id']} started", file=sys.stderr, flush=True)
            except ConflictError:
                pass
