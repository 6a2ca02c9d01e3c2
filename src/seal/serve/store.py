"""The service's state in SQLite (WAL): documents with their state, consolidation jobs with their records.

The server and the consolidation worker are separate processes that both write here; WAL lets readers go on
while one of them writes, and every change is one transaction, so a kill leaves each row either before or
after a change, never half-way. A document is committed before its POST is answered: once the client has
its id, the document survives any crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    questions TEXT,                 -- JSON list of {question, answer}, or NULL: the memory writes its own quiz
    digest TEXT NOT NULL UNIQUE,    -- the same title and text twice is one document, not a duplicate fact
    state TEXT NOT NULL,            -- pending | consolidated | rejected
    reason TEXT,
    version TEXT,                   -- the memory version that learned it
    job TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,            -- running | done | failed | interrupted
    trigger TEXT NOT NULL,          -- request | schedule
    documents TEXT NOT NULL,        -- JSON list of the document ids it set out to learn
    decisions TEXT NOT NULL,        -- JSON list, one record per document learned (or skipped)
    progress TEXT,                  -- JSON: where the job is now
    current TEXT,                   -- the document being learned, with the versions that existed before it
    error TEXT,
    pid INTEGER,
    created REAL NOT NULL,
    finished REAL
);
"""

class ConflictError(RuntimeError):
    """The change clashes with the current state (a consolidation already running, ...): HTTP 409."""


def document_digest(title: str, text: str) -> str:
    return hashlib.sha256(json.dumps([title, text]).encode()).hexdigest()


def _document(row: sqlite3.Row, with_text: bool = True) -> dict:
    doc = {k: row[k] for k in ("id", "title", "state", "reason", "version", "job", "created", "updated")}
    if with_text:
        doc["text"] = row["text"]
        doc["questions"] = json.loads(row["questions"]) if row["questions"] else None
    return doc


def _job(row: sqlite3.Row) -> dict:
    job = {k: row[k] for k in ("id", "state", "trigger", "error", "created", "finished")}
    for k in ("documents", "decisions", "progress", "current"):
        job[k] = json.loads(row[k]) if row[k] else None
    return job


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # persistent: set once per database file
            db.executescript(SCHEMA)
        finally:
            db.close()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per operation: safe from any thread or process; a transaction per `with`."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # documents

    def add_document(self, title: str, text: str, questions: list[dict] | None) -> tuple[dict, bool]:
        """Store a pending document; returns (document, created). The same title and text again returns the
        stored one (created False), so a client that retries a POST never makes a duplicate."""
        digest = document_digest(title, text)
        now = time.time()
        with self._connect() as db:
            row = db.execute("SELECT * FROM documents WHERE digest = ?", (digest,)).fetchone()
            if row is not None:
                return _document(row, with_text=False), False
            doc_id = "doc-" + uuid.uuid4().hex[:16]
            db.execute("INSERT INTO documents (id, title, text, questions, digest, state, created, updated) "
                       "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                       (doc_id, title, text, json.dumps(questions) if questions else None, digest, now, now))
            row = db.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
            return _document(row, with_text=False), True

    def document(self, doc_id: str) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return _document(row) if row else None

    def documents(self, state: str | None = None, with_text: bool = False) -> list[dict]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM documents" + (" WHERE state = ?" if state else "") + " ORDER BY created",
                              (state,) if state else ()).fetchall()
        return [_document(r, with_text) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM documents GROUP BY state").fetchall()
        return {"pending": 0, "consolidated": 0, "rejected": 0} | {r[0]: r[1] for r in rows}

    def delete_document(self, doc_id: str) -> bool:
        """Remove a pending or rejected document; False if there is none. A consolidated one is in the weights
        (activate an earlier version to forget it), and the one a job is learning cannot go either: 409."""
        with self._connect() as db:
            row = db.execute("SELECT state FROM documents WHERE id = ?", (doc_id,)).fetchone()
            if row is None:
                return False
            if row["state"] == "consolidated":
                raise ConflictError(f"document {doc_id} is consolidated into the weights; activate a version "
                                    "from before it to forget it")
            for job in db.execute("SELECT current FROM jobs WHERE state = 'running'"):
                if job["current"] and json.loads(job["current"])["document"] == doc_id:
                    raise ConflictError(f"document {doc_id} is being consolidated right now")
            db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
            return True

    # jobs

    def start_job(self, trigger: str) -> dict:
        """A new running job over the pending documents; ConflictError when one is running already (checked and
        inserted in one transaction, so two requests at once cannot both start one)."""
        with self._connect() as db:
            running = db.execute("SELECT id FROM jobs WHERE state = 'running'").fetchone()
            if running:
                raise ConflictError(f"consolidation {running['id']} is already running")
            ids = [r["id"] for r in db.execute("SELECT id FROM documents WHERE state = 'pending' ORDER BY created")]
            job_id = "job-" + uuid.uuid4().hex[:12]
            db.execute("INSERT INTO jobs (id, state, trigger, documents, decisions, progress, created) "
                       "VALUES (?, 'running', ?, ?, '[]', ?, ?)",
                       (job_id, trigger, json.dumps(ids), json.dumps({"done": 0, "total": len(ids)}), time.time()))
            return _job(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def job(self, job_id: str) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self) -> list[dict]:
        with self._connect() as db:
            return [_job(r) for r in db.execute("SELECT * FROM jobs ORDER BY created")]

    def running_job(self) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchone()
        return _job(row) if row else None

    def update_job(self, job_id: str, **fields) -> None:
        """Set job columns; dicts and lists are stored as JSON."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        values = [json.dumps(v) if isinstance(v, (dict, list)) else v for v in fields.values()]
        with self._connect() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values, job_id))

    def record_decision(self, job_id: str, decision: dict, doc_state: tuple[str, str, str | None] | None) -> None:
        """Append a per-document decision to the job and set the document's state, in one transaction: a kill
        leaves both or neither."""
        with self._connect() as db:
            row = db.execute("SELECT decisions, documents FROM jobs WHERE id = ?", (job_id,)).fetchone()
            decisions = json.loads(row["decisions"]) + [decision]
            progress = {"done": len(decisions), "total": len(json.loads(row["documents"]))}
            db.execute("UPDATE jobs SET decisions = ?, current = NULL, progress = ? WHERE id = ?",
                       (json.dumps(decisions), json.dumps(progress), job_id))
            if doc_state is not None:
                state, reason, version = doc_state
                db.execute("UPDATE documents SET state = ?, reason = ?, version = ?, job = ?, updated = ? "
                           "WHERE id = ? AND state = 'pending'",
                           (state, reason, version, job_id, time.time(), decision["document"]))

    def job_counts(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {"running": 0, "done": 0, "failed": 0, "interrupted": 0} | {r[0]: r[1] for r in rows}
