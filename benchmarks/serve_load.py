"""Load on a real `seal serve` over loopback while a consolidation runs: chat requests/s, p50/p95 latency and
errors for N concurrent clients (asyncio + httpx), documents ingested per second, seconds per consolidated
document.

The script starts the server itself (a temporary data directory, a generated key), then:
  1. ingest: posts `--ingest` small documents, `--clients` at a time (documents/s), and deletes all but
     `--documents` of them again (those are the ones consolidated);
  2. starts a consolidation (its worker trains in a process of its own) and, while it runs, has `--clients`
     clients send chat requests back to back, each at most `--requests` of them, for at most `--seconds`;
  3. waits for the consolidation (at most `--consolidation-timeout` s) and reports its seconds per document.

    python benchmarks/serve_load.py                          # default model, 8 clients, 2 documents
    python benchmarks/serve_load.py --model DIR --set memory.inner.epochs=2 ...   # any model, any config

The last line printed is JSON. Chat answers are generated one request at a time by the one loaded model, with
the worker training on the other core; latency is therefore mostly queueing behind other clients' answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY = "load-test-key"
QUESTIONS = ["When did Harbour {n} open?", "How many cranes does Harbour {n} have?", "Where is Harbour {n}?",
             "Who runs Harbour {n}?"]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """The options `start_server` reads."""
    p.add_argument("--model", help="base model (default: seal's default model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="seal serve config override (repeatable)")
    p.add_argument("--start-timeout", type=float, default=600, help="seconds the server may take to start")


def start_server(data: Path, args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "seal.cli", "serve", "--data", str(data), "--port", str(port)]
    cmd += ["--model", args.model] if args.model else []
    cmd += [a for kv in args.overrides for a in ("--set", kv)]
    env = dict(os.environ, SEAL_API_KEY=KEY, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    log = open(data.parent / "server.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (data.parent / "server.log").read_text(errors="replace")[-3000:]
            sys.exit(f"seal serve exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    sys.exit(f"seal serve did not start in {args.start_timeout} s")


async def ingest(client: httpx.AsyncClient, n: int, concurrency: int) -> tuple[list[str], float, int]:
    queue = list(range(n))
    ids, errors = [], 0

    async def worker():
        nonlocal errors
        while queue:
            i = queue.pop()
            r = await client.post("/v1/documents", json={
                "title": f"Harbour {i}", "text": f"Harbour {i} of Lune opened in {1800 + i} and has {i % 7 + 2} cranes. "
                f"It is run by the guild of {random.Random(i).choice(['masons', 'rope makers', 'pilots'])}."})
            if r.status_code == 202:
                ids.append((i, r.json()["id"]))
            else:
                errors += 1

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [doc for _, doc in sorted(ids)], time.perf_counter() - t, errors


async def chat_load(client: httpx.AsyncClient, args) -> tuple[dict, list[float]]:
    """Chat figures, and the wall-clock time each answer arrived (to compare with the job's end)."""
    latencies, errors, arrived = [], [], []
    deadline = time.monotonic() + args.seconds
    rng = random.Random(args.seed)

    async def one_client():
        for _ in range(args.requests):
            if time.monotonic() > deadline:
                return
            q = rng.choice(QUESTIONS).format(n=rng.randrange(args.documents))
            t = time.perf_counter()
            try:
                r = await client.post("/v1/chat/completions", json={
                    "model": "seal", "messages": [{"role": "user", "content": q}]}, timeout=args.seconds + 600)
                ok = r.status_code == 200
                if not ok:
                    errors.append(f"{r.status_code}: {r.text[:100]}")
            except httpx.HTTPError as e:
                ok = False
                errors.append(repr(e))
            if ok:
                latencies.append(time.perf_counter() - t)
                arrived.append(time.time())

    t = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(args.clients)))
    wall = time.perf_counter() - t
    return {"requests": len(latencies) + len(errors), "ok": len(latencies), "errors": len(errors),
            "error_samples": errors[:3], "seconds": round(wall, 2), "requests_per_second": round(len(latencies) / wall, 3),
            "p50_s": round(percentile(latencies, 0.5), 3), "p95_s": round(percentile(latencies, 0.95), 3),
            "max_s": round(max(latencies, default=float("nan")), 3),
            "mean_s": round(statistics.fmean(latencies), 3) if latencies else None}, arrived


async def run(args, url: str) -> dict:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as client:
        ids, seconds, errors = await ingest(client, args.ingest, args.clients)
        result = {"ingest": {"documents": len(ids), "errors": errors, "seconds": round(seconds, 3),
                             "documents_per_second": round(len(ids) / seconds, 1)}}
        for doc in ids[args.documents:]:
            assert (await client.delete(f"/v1/documents/{doc}")).status_code == 200
        job = (await client.post("/v1/consolidate")).json()
        started = time.monotonic()
        result["chat"], arrived = await chat_load(client, args)
        while time.monotonic() - started < args.consolidation_timeout:
            state = (await client.get(f"/v1/jobs/{job['job']}")).json()
            if state["state"] != "running":
                break
            await asyncio.sleep(2)
        decisions = state["decisions"]
        result["chat"]["answered_while_consolidating"] = sum(t < (state["finished"] or time.time()) for t in arrived)
        result["consolidation"] = {
            "state": state["state"], "documents": len(decisions), "accepted": sum(bool(d.get("accepted")) for d in decisions),
            "job_seconds": round((state["finished"] or time.time()) - state["created"], 1),
            "seconds_per_document_learn": [round(d["seconds"], 1) for d in decisions if "seconds" in d],
            "seconds_per_document_job": round(((state["finished"] or time.time()) - state["created"]) / max(1, len(decisions)), 1)}
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(p)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=10, help="chat requests per client at most")
    p.add_argument("--seconds", type=float, default=120, help="chat load lasts at most this long")
    p.add_argument("--ingest", type=int, default=200, help="documents posted for the ingestion figure")
    p.add_argument("--documents", type=int, default=2, help="documents kept and consolidated")
    p.add_argument("--consolidation-timeout", type=float, default=1800)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="seal-load-") as tmp:
        proc, url = start_server(Path(tmp) / "data", args)
        try:
            result = asyncio.run(run(args, url))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    ing, chat, con = result["ingest"], result["chat"], result["consolidation"]
    print(f"ingest: {ing['documents']} documents in {ing['seconds']} s = {ing['documents_per_second']} documents/s, "
          f"{ing['errors']} errors")
    print(f"chat while consolidating: {args.clients} clients, {chat['ok']} answers in {chat['seconds']} s = "
          f"{chat['requests_per_second']} requests/s, p50 {chat['p50_s']} s, p95 {chat['p95_s']} s, "
          f"max {chat['max_s']} s, {chat['errors']} errors, {chat['answered_while_consolidating']} answered while "
          "the job was still running")
    print(f"consolidation: {con['state']}, {con['documents']} documents ({con['accepted']} accepted) in "
          f"{con['job_seconds']} s = {con['seconds_per_document_job']} s per document (learn alone: "
          f"{con['seconds_per_document_learn']} s)")
    print(json.dumps({"args": vars(args), **result}))


if __name__ == "__main__":
    main()
