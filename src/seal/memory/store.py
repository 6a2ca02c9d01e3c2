"""A Memory's directory: immutable versions, adapters and documents, and one atomically replaced pointer.

    memory.json            the creating config (model, strategy, adapter shape) and the probe chosen then
    ACTIVE                 the active version's name ("base" before anything is learned)
    versions/<name>.json   a version: its parent, the adapters folded into the weights (in order), the
                           adapters kept apart per document (router), the documents it holds, its scores
    adapters/<id>/         PEFT adapters (adapter_config.json + adapter_model.safetensors), never modified
    documents/<id>.json    a learned document: text, quiz, training sequences (what replay and consolidation reuse)
    learns.jsonl           the journal: one record per learn attempt, accepted or not, written as soon as the
                           update is committed or rejected; a consolidation after it, a line of its own; a
                           rollback or roll forward, a line of its own
    staging/               work in progress; emptied when a learn starts

Kill safety: everything is written under staging/ and moved into place with a rename (atomic on POSIX),
files and directories fsynced first; the pointer is written to a temporary file and os.replace'd. A
version file is written only after its adapters and documents are in place, its journal line (naming the
version to activate) only after the version file, and the pointer only after the journal line: the line is
the commit point. A kill before it leaves the previous active version intact and complete (the new version's
file, unnamed by the journal, is never activated); a kill between the line and the pointer's move is finished
by whoever next takes the learner's lock or opens the memory (`recover`), so a version is never active without
its learn on record, nor on record without becoming active.
Learning takes an exclusive lock (fcntl) on `learn.lock`, so two learners never interleave; answering
takes no lock and reads whatever the pointer names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

BASE = "base"


class MemoryDirError(ValueError):
    """Misuse of a memory directory (unknown version, wrong model, another learner running)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically and durably: a reader sees the old content or the new, never half."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


class Store:
    """Reads and writes one memory directory; knows nothing of models."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.versions_dir = self.path / "versions"
        self.adapters_dir = self.path / "adapters"
        self.documents_dir = self.path / "documents"
        self.staging = self.path / "staging"

    # ---- creation and metadata

    def exists(self) -> bool:
        return (self.path / "memory.json").is_file()

    def create(self, meta: dict[str, Any]) -> None:
        """Lay out a new memory; memory.json is written last, so a half-created directory is not a memory."""
        for d in (self.versions_dir, self.adapters_dir, self.documents_dir, self.staging):
            d.mkdir(parents=True, exist_ok=True)
        if not (self.path / "ACTIVE").exists():
            write_durably(self.path / "ACTIVE", BASE + "\n")
        write_durably(self.path / "memory.json", json.dumps(meta, indent=2) + "\n")

    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / "memory.json").read_text(encoding="utf-8"))

    # ---- versions and the pointer

    def active(self) -> str:
        return (self.path / "ACTIVE").read_text(encoding="utf-8").strip()

    def set_active(self, name: str) -> None:
        """Move the pointer to a version whose journal line is already written (see the module docstring)."""
        self.version(name)  # unknown names are refused before the pointer moves
        write_durably(self.path / "ACTIVE", name + "\n")

    def activate(self, name: str) -> None:
        """A rollback or roll forward: on the journal first, so that `recover` finishes it rather than undoing it."""
        self.log({}, activate=name)

    def recover(self) -> None:
        """Finish the pointer move that a kill cut short: the last journal line naming a version to activate is
        the truth, the pointer its copy. Journals from before the lines named one hold none, and are left as they are."""
        named = [r["activate"] for r in self._journal() if "activate" in r]
        if named and named[-1] != self.active():
            self.set_active(named[-1])

    def version(self, name: str) -> dict[str, Any]:
        """A version's record; the implicit `base` holds nothing."""
        if name == BASE:
            return {"name": BASE, "created": self.meta()["created"], "parent": None, "merged": [], "routed": [],
                    "documents": [], "scores": {}}
        path = self.versions_dir / f"{name}.json"
        if not path.is_file():
            known = ", ".join([BASE] + self.version_names())
            raise MemoryDirError(f"no version {name!r} in {self.path}; versions: {known}")
        return json.loads(path.read_text(encoding="utf-8"))

    def version_names(self) -> list[str]:
        return sorted(p.stem for p in self.versions_dir.glob("v*.json"))

    def next_version_name(self) -> str:
        names = self.version_names()
        return f"v{int(names[-1][1:]) + 1 if names else 1:04d}"

    def write_version(self, record: dict[str, Any]) -> None:
        """Add a version (its adapters and documents must already be in place); never overwrites one."""
        path = self.versions_dir / f"{record['name']}.json"
        if path.exists():
            raise MemoryDirError(f"version {record['name']} already exists")
        write_durably(path, json.dumps(record, indent=2) + "\n")

    # ---- immutable pieces, moved into place from staging

    def new_staging_dir(self, kind: str) -> Path:
        path = self.staging / f"{kind}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path

    def commit_adapter(self, staged: Path) -> str:
        """Move a staged adapter directory into adapters/; returns its id."""
        _fsync_tree(staged)
        adapter_id = staged.name
        staged.rename(self.adapters_dir / adapter_id)
        _fsync_dir(self.adapters_dir)
        return adapter_id

    def adapter_path(self, adapter_id: str) -> Path:
        return self.adapters_dir / adapter_id

    def commit_document(self, doc_id: str, record: dict[str, Any]) -> None:
        write_durably(self.documents_dir / f"{doc_id}.json", json.dumps(record, indent=2) + "\n")

    def document(self, doc_id: str) -> dict[str, Any]:
        return json.loads((self.documents_dir / f"{doc_id}.json").read_text(encoding="utf-8"))

    def log(self, record: dict[str, Any], activate: str | None = None) -> None:
        """Append a line to the journal, durably (a line a kill cut short is ended first). With `activate`, the
        line names that version and the pointer then moves to it: the line is the commit point (module docstring)."""
        if activate is not None:
            self.version(activate)  # unknown names are refused before anything is written
            record = {**record, "activate": activate}
        path = self.path / "learns.jsonl"
        cut = path.exists() and path.stat().st_size and path.read_bytes()[-1:] != b"\n"
        with path.open("a", encoding="utf-8") as f:
            f.write(("\n" if cut else "") + json.dumps({"time": round(time.time(), 3), **record}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if activate is not None:
            self.set_active(activate)

    def log_consolidation(self, version: str, record: dict[str, Any]) -> None:
        """The outcome of the consolidation that followed the learn which made `version`; a line of its own, as
        the learn is on record before the consolidation starts. A kept one activates its version (None: rejected)."""
        self.log({"consolidation_of": version, "consolidation": record}, activate=record["version"])

    def learn_records(self) -> list[dict[str, Any]]:
        """The learns on the journal, each consolidation put into the record of the learn it followed (its
        seconds added to the learn's); rollbacks are not learns."""
        records: list[dict[str, Any]] = []
        for record in self._journal():
            record.pop("activate", None)
            if "consolidation_of" in record:
                learn = next(r for r in reversed(records) if r["version"] == record["consolidation_of"])
                learn["consolidation"] = record["consolidation"]
                learn["seconds"] += record["consolidation"]["seconds"]
            elif "accepted" in record:
                records.append(record)
        return records

    def _journal(self) -> list[dict[str, Any]]:
        """The lines of learns.jsonl; a last line cut by a kill is not one."""
        path = self.path / "learns.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(lines) - 1:
                    raise
        return records

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    # ---- the learner's lock

    @contextlib.contextmanager
    def learning(self, wait: bool = True) -> Iterator[None]:
        """Exclusive right to add versions; on entry a killed learner's pointer move is finished and its staging/
        emptied; on exit staging/ is emptied again (a rejected update's adapter)."""
        with (self.path / "learn.lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise MemoryDirError(f"another process is learning into {self.path}") from None
            try:
                self.recover()
                self._empty_staging()
                yield
                self._empty_staging()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def settle(self) -> None:
        """What a learner does on taking the lock (see `learning`), unless one holds it: it did so on taking it."""
        with contextlib.suppress(MemoryDirError), self.learning(wait=False):
            pass

    def _empty_staging(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir()
