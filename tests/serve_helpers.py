"""A real `seal serve` process on 127.0.0.1 and a free port, for the service tests; stopped by the caller."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

import seal

WRITE_KEY, READ_KEY = "test-write-key", "test-read-key"


def tiny_memory_settings(model_dir: Path) -> list[str]:
    """`--set` overrides that make the tiny model's consolidation take seconds (gate off: every update kept)."""
    sets = {"memory.model.name": str(model_dir), "memory.gate": "false", "memory.sampling.max_new_tokens": 12,
            "memory.inner.rank": 2, "memory.inner.alpha": 4, "memory.inner.epochs": 2, "memory.inner.lr": 0.01,
            "memory.eval.max_new_tokens": 6, "memory.eval.grader": "containment", "memory.quiz.questions": 2,
            "memory.quiz.samples": 1, "memory.quiz.max_new_tokens": 24, "memory.probe.candidates": 4}
    return [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data: Path, model_dir: Path, *extra: str, keys: bool = True):
        self.data, self.port = Path(data), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "seal.cli", "serve", "--data", str(data), "--port", str(self.port),
                     *tiny_memory_settings(model_dir), *extra]
        self.env = dict(os.environ, PYTHONPATH=str(Path(seal.__file__).parents[1]), OMP_NUM_THREADS="1")
        self.env.pop("SEAL_API_KEY", None)
        self.env.pop("SEAL_READ_KEY", None)
        if keys:
            self.env.update(SEAL_API_KEY=WRITE_KEY, SEAL_READ_KEY=READ_KEY)
        self.log_path = self.data.parent / f"{self.data.name}-server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> Server:
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"seal serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"seal serve did not come up in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def client(self, key: str | None = WRITE_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, headers={"Authorization": f"Bearer {key}"} if key else {})


def job_workers(server: Server) -> set[int]:
    """The pids of the workers that ran the server's jobs so far (the store's record)."""
    with sqlite3.connect(server.data / "seal.db") as db:
        return {pid for (pid,) in db.execute("SELECT pid FROM jobs WHERE pid IS NOT NULL")}


def waiting_worker(server: Server, timeout: float = 120) -> int:
    """The pid of the consolidation worker the server starts ahead of its next job: its one worker child while
    no job runs (found in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):  # not a process, or gone since
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if (parent == server.proc.pid and b"seal.serve.worker" in (entry / "cmdline").read_bytes()
                        and int(entry.name) not in job_workers(server)):  # not a finished job's worker still exiting
                    return int(entry.name)
        time.sleep(0.2)
    raise TimeoutError(f"no waiting consolidation worker after {timeout} s")


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} still running after {timeout} s")
