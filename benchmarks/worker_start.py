"""What a consolidation spends before its first document: from `POST /v1/consolidate` until the worker is in
its document loop (process started, seal imported, memory opened), and until it begins the first document's
self-edit (the model loaded as well): wall seconds, and the CPU seconds the worker process used in that time
(read from Linux's /proc; they hold on a busy machine, where wall time is mostly waiting for a core). Measured
on a real `seal serve` over loopback, for `--rounds` jobs of one document each, one after another, every job
asked for `--idle` seconds after the previous one ended (the server's first job: after it started).

    python benchmarks/worker_start.py                        # default model, 2 rounds
    python benchmarks/worker_start.py --model DIR --set memory.inner.epochs=1 ...

The documents are learned to the end (each job must finish before the next one starts): `--set` overrides
that shorten a learn shorten the run without changing what is measured. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx
from serve_load import KEY, add_server_arguments, start_server


def worker_pid(data: Path, job: str) -> int:
    """The job's worker process, as the server recorded it in its store (the API does not show pids)."""
    with sqlite3.connect(data / "seal.db") as db:
        return db.execute("SELECT pid FROM jobs WHERE id = ?", (job,)).fetchone()[0]


def timed_job(client: httpx.Client, data: Path, n: int, timeout: float) -> dict:
    client.post("/v1/documents", json={"title": f"Harbour {n}", "text": f"Harbour {n} of Lune opened in {1800 + n} "
                                       f"and has {n % 7 + 2} cranes. It is run by the guild of pilots."})
    start = time.perf_counter()
    job = client.post("/v1/consolidate").json()["job"]
    pid = worker_pid(data, job)
    cpu_at_start = cpu_seconds(pid)
    ready = working = None
    while time.perf_counter() - start < timeout:
        state = client.get(f"/v1/jobs/{job}").json()
        stage, now = (state.get("progress") or {}).get("stage"), time.perf_counter() - start
        if ready is None and stage:
            ready = (now, cpu_seconds(pid) - cpu_at_start)
        if working is None and stage not in (None, "starting"):
            working = (now, cpu_seconds(pid) - cpu_at_start)
        if state["state"] != "running":
            break
        time.sleep(0.02)
    figures = {"job": job, "state": state["state"], "job_s": round(time.perf_counter() - start, 1)}
    for name, seen in (("worker_ready", ready), ("first_document_work", working)):
        figures[f"{name}_s"], figures[f"{name}_cpu_s"] = (round(seen[0], 2), round(seen[1], 2)) if seen else (None, None)
    return figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(p)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--idle", type=float, default=15, help="seconds between a job's end (or the start) and the next")
    p.add_argument("--job-timeout", type=float, default=1200)
    args = p.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="seal-worker-start-") as tmp:
        proc, url = start_server(Path(tmp) / "data", args)
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as client:
                for n in range(args.rounds):
                    time.sleep(args.idle)
                    rounds.append(timed_job(client, Path(tmp) / "data", n, args.job_timeout))
                    r = rounds[-1]
                    if r["state"] != "done":
                        print((Path(tmp) / "server.log").read_text(errors="replace")[-3000:])
                    print(f"job {n + 1}: worker ready after {r['worker_ready_s']} s ({r['worker_ready_cpu_s']} CPU s "
                          f"of the worker since the request), first document's self-edit begun after "
                          f"{r['first_document_work_s']} s ({r['first_document_work_cpu_s']} CPU s), job {r['state']} "
                          f"after {r['job_s']} s", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(json.dumps({"args": vars(args), "rounds": rounds}))


if __name__ == "__main__":
    main()
