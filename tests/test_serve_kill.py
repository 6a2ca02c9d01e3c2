"""kill -9 of a real server in the middle of a consolidation, then a restart on the same directory: no document
lost or duplicated, the last complete version active, the job reported as interrupted and rerun."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest
from serve_helpers import Server, wait_for_job, waiting_worker

from seal.serve.jobs import recover
from seal.serve.store import ConflictError, Store

DOCS = [{"title": f"Harbour {n}", "text": f"Harbour {n} of Lune has {n + 2} cranes and opened in {1840 + n}."}
        for n in range(4)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by init) counts as dead
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_kill_during_consolidation_then_restart(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    # many more epochs than the other tests: each update trains for seconds, long enough to be caught training
    server = Server(data, tiny_model_dir, "--set", "memory.inner.epochs=300").start()
    try:
        with server.client() as api:
            ids = [api.post("/v1/documents", json=d).json()["id"] for d in DOCS]
            job_id = api.post("/v1/consolidate").json()["job"]
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # kill once the first document is decided and the next one training
                job = api.get(f"/v1/jobs/{job_id}").json()
                if job["decisions"] and job["current"] and job["progress"].get("stage") == "train":
                    break
                assert job["state"] == "running", job
                time.sleep(0.05)
            else:
                pytest.fail("the consolidation never reached its second document")
        server.kill9()
    finally:
        server.stop()

    with sqlite3.connect(data / "seal.db") as db:
        worker = db.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker), "the consolidation worker outlived its server"

    server = Server(data, tiny_model_dir).start()
    try:
        with server.client() as api:
            job = api.get(f"/v1/jobs/{job_id}").json()
            assert job["state"] == "interrupted" and "still pending" in job["error"]
            docs = {d["id"]: d for d in api.get("/v1/documents").json()["documents"]}
            assert sorted(docs) == sorted(ids)  # none lost, none added
            done = [d for d in ids if docs[d]["state"] == "consolidated"]
            assert 1 <= len(done) < len(ids) and all(docs[d]["state"] == "pending" for d in ids if d not in done)
            versions = api.get("/v1/versions").json()
            names = [v["name"] for v in versions["versions"]]
            assert names == ["base"] + [f"v{n:04d}" for n in range(1, len(done) + 1)]
            assert versions["active"] == names[-1]  # the last complete version, nothing half-written
            assert versions["versions"][-1]["documents"] == [docs[d]["title"] for d in done]

            rerun = api.post("/v1/consolidate").json()
            assert rerun["documents"] == [d for d in ids if d not in done]
            assert wait_for_job(api, rerun["job"])["state"] == "done"
            docs = {d["id"]: d for d in api.get("/v1/documents").json()["documents"]}
            assert all(d["state"] == "consolidated" for d in docs.values())
            final = api.get("/v1/versions").json()["versions"][-1]
            assert final["active"] and final["documents"] == [d["title"] for d in DOCS]  # each learned exactly once
        standby = waiting_worker(server)
        server.kill9()
        deadline = time.monotonic() + 120  # one still importing notices when it is done (die_with_parent)
        while alive(standby) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(standby), "the waiting worker outlived its server"
    finally:
        server.stop()


class FakeMemory:
    """Versions and a pointer, as recovery sees a memory."""

    def __init__(self, names: list[str], active: str):
        self.names, self.active = names, active

    def versions(self) -> list[dict]:
        return [{"name": n, "active": n == self.active} for n in self.names]

    def activate(self, version: str) -> None:
        self.active = version


@pytest.mark.parametrize("active", ["v0001", "base"])
def test_recover_records_a_version_made_just_before_the_kill(tmp_path, active):
    """The one window a kill can fall in between the memory and the store: the new version exists, the
    decision was not yet written. Recovery credits the document with that version instead of learning it twice;
    when the kill also came before the memory moved its pointer (active still `base`), recovery moves it, or
    the document would be in neither the weights nor retrieval."""
    (tmp_path / "data").mkdir()
    store = Store(tmp_path / "data" / "seal.db")
    first, _ = store.add_document("A", "text a", None)
    second, _ = store.add_document("B", "text b", None)
    job = store.start_job("request")
    with pytest.raises(ConflictError):
        store.start_job("request")
    store.update_job(job["id"], current={"document": first["id"], "versions_before": ["base"]})
    memory = FakeMemory(["base", "v0001"], active)
    assert recover(store, tmp_path / "data", memory) == [job["id"]]
    assert memory.active == "v0001"
    job = store.job(job["id"])
    assert job["state"] == "interrupted" and job["current"] is None and "1 document(s)" in job["error"]
    assert store.document(first["id"])["state"] == "consolidated" and store.document(first["id"])["version"] == "v0001"
    assert store.document(second["id"])["state"] == "pending"
    assert json.loads(json.dumps(job["decisions"]))[0]["version"] == "v0001"
    assert store.start_job("request")["documents"] == [second["id"]]  # the rerun takes only what is left


def test_recover_leaves_the_pointer_when_the_job_made_no_version(tmp_path):
    (tmp_path / "data").mkdir()
    store = Store(tmp_path / "data" / "seal.db")
    doc, _ = store.add_document("A", "text a", None)
    job = store.start_job("request")
    store.update_job(job["id"], current={"document": doc["id"], "versions_before": ["base", "v0001", "v0002"]})
    memory = FakeMemory(["base", "v0001", "v0002"], "v0001")  # a rollback to v0001 before this job
    assert recover(store, tmp_path / "data", memory) == [job["id"]]
    assert memory.active == "v0001" and store.document(doc["id"])["state"] == "pending"
