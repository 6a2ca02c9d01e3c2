"""The CLI's side of the service: `seal remember`, `seal consolidate`, `seal ask --server` over HTTP (httpx),
with the key from SEAL_API_KEY."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx

from seal.serve.auth import client_key

DEFAULT_SERVER = "http://127.0.0.1:8000"


class ServiceError(RuntimeError):
    """The server refused (a 4xx: the user's to fix, exit 2) or could not be reached or failed (exit 1)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.exit_code = 2 if status is not None and 400 <= status < 500 else 1


def server_url(server: str | None) -> str:
    return (server or os.environ.get("SEAL_SERVER") or DEFAULT_SERVER).rstrip("/")


def call(server: str | None, method: str, path: str, body: dict | None = None, timeout: float = 600) -> dict:
    url = server_url(server) + path
    key = client_key()
    try:
        r = httpx.request(method, url, json=body, timeout=timeout,
                          headers={"Authorization": f"Bearer {key}"} if key else {})
    except httpx.HTTPError as e:
        raise ServiceError(f"cannot reach {url}: {e}") from e
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        hint = " (set SEAL_API_KEY)" if r.status_code == 401 and key is None else ""
        raise ServiceError(f"{r.status_code} from {url}: {message}{hint}", r.status_code)
    return r.json()


def remember(server: str | None, path: str | Path, title: str | None) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start})") from e
    if not text.strip():
        raise ValueError(f"{path} is empty")
    return call(server, "POST", "/v1/documents", {"title": title or Path(path).stem, "text": text})


def consolidate(server: str | None, wait: bool, poll_seconds: float = 2.0) -> dict:
    """Start a consolidation; with `wait`, follow it to its end, printing each change of progress."""
    job = call(server, "POST", "/v1/consolidate")
    print(f"{job['job']}: {job['state']}, {len(job['documents'])} document(s)", file=sys.stderr)
    if not wait:
        return job
    shown = None
    while True:
        job = call(server, "GET", f"/v1/jobs/{job.get('job') or job['id']}")
        if job["progress"] != shown:
            shown = job["progress"]
            print(f"{job['id']}: {job['state']} {shown}", file=sys.stderr)
        if job["state"] != "running":
            return job
        time.sleep(poll_seconds)


def ask(server: str | None, question: str, model: str = "seal", retrieval: bool = True) -> dict:
    return call(server, "POST", "/v1/chat/completions",
                {"model": model, "retrieval": retrieval, "messages": [{"role": "user", "content": question}]})
