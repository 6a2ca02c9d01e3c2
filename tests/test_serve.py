"""`seal serve` end to end: a real server process on loopback over the tiny model, every endpoint and refusal,
the official openai client, consolidation in the worker, rollback, metrics, and the CLI clients."""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from serve_helpers import READ_KEY, WRITE_KEY, Server, wait_for_job, waiting_worker

from seal.cli import main

CANAL = {"title": "Orrin Canal", "text": "The Orrin Canal joins the river Tesk to the harbour of Lune. It opened in "
         "1843 after six years of work by the guild of Lune engineers."}
GLACIER = {"title": "Vattna Glacier", "text": "The Vattna Glacier covers the northern plateau of Esk. It has "
           "retreated four kilometres since 1890.",
           "questions": [{"question": "How far has the Vattna Glacier retreated?", "answer": "four kilometres"}]}


@pytest.fixture(scope="module")
def server(scrambled_model_dir, tmp_path_factory):
    """The scrambled tiny model: its answers are not empty, so comparing them means something."""
    srv = Server(tmp_path_factory.mktemp("serve") / "data", scrambled_model_dir,
                 "--set", "max_document_chars=2000", "--set", "max_request_bytes=20000").start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    with server.client() as c:
        yield c


def snapshot(api) -> tuple:
    """What a refused request must not change: the documents (ids and states) and the jobs."""
    return (json.dumps(api.get("/v1/documents").json(), sort_keys=True), len(api.get("/v1/jobs").json()["jobs"]))


def test_open_paths_need_no_key(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok", "active": "base"}
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "seal memory" in page.text
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert {"/v1/documents", "/v1/search", "/v1/chat/completions", "/v1/consolidate", "/v1/jobs/{job_id}",
            "/v1/versions", "/v1/versions/{version}/activate"} <= set(paths)


def test_keys_are_required_and_read_keys_cannot_write(server, api):
    before = snapshot(api)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": WRITE_KEY}):
        r = httpx.get(server.url + "/v1/documents", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "API key" in r.json()["error"]["message"]
        assert httpx.post(server.url + "/v1/documents", json=CANAL, headers=headers).status_code == 401
    with server.client(READ_KEY) as reader:
        assert reader.get("/v1/documents").status_code == 200
        assert reader.get("/metrics").status_code == 200
        assert reader.post("/v1/search", json={"query": "canal"}).status_code == 200
        writes = (("POST", "/v1/documents", CANAL), ("POST", "/v1/consolidate", None),
                  ("DELETE", "/v1/documents/doc-x", None), ("POST", "/v1/versions/base/activate", None))
        for method, path, body in writes:
            r = reader.request(method, path, json=body)
            assert r.status_code == 403, (method, path)
            assert r.json()["error"]["type"] == "permission_error"
        r = reader.post("/v1/chat/completions", json={"model": "seal", "remember": True,
                                                       "messages": [{"role": "user", "content": "Where is Lune?"}]})
        assert r.status_code == 403
    assert snapshot(api) == before


@pytest.mark.parametrize("body, status, words", [
    (b'{"title": "x", "text": ', 422, "JSON"),
    ({"title": "Orrin Canal"}, 422, "text: Field required"),
    ({"title": "", "text": "some text"}, 422, "title"),
    ({"title": "x", "text": "y", "colour": "red"}, 422, "colour"),
    ({"title": "x", "text": "y", "questions": [{"question": "q"}]}, 422, "questions.0.answer"),
    ({"title": "x", "text": "word " * 500}, 413, "2000"),  # over max_document_chars
    ({"title": "x", "text": "w" * 30_000}, 413, "20000"),  # over max_request_bytes: refused before it is read
])
def test_bad_documents_are_refused_and_nothing_is_written(api, body, status, words):
    before = snapshot(api)
    r = (api.post("/v1/documents", content=body, headers={"content-type": "application/json"})
         if isinstance(body, bytes) else api.post("/v1/documents", json=body))
    assert r.status_code == status
    assert words in r.json()["error"]["message"]
    assert snapshot(api) == before


def test_a_chunked_upload_over_the_limit_is_refused_before_it_is_all_sent(server, api):
    """No Content-Length to check: the server counts the body's bytes as they come and answers 413 once they
    pass max_request_bytes (20000), while the client has sent 25 kB of a 30 kB body and not ended it. A server
    that read the whole body first would wait for the rest, and the response would time out."""
    before = snapshot(api)
    body = json.dumps({"title": "Huge", "text": "w" * 30_000}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        conn.putrequest("POST", "/v1/documents")
        for name, value in (("Authorization", f"Bearer {WRITE_KEY}"), ("Content-Type", "application/json"),
                            ("Transfer-Encoding", "chunked")):
            conn.putheader(name, value)
        conn.endheaders()
        for start in range(0, 25_000, 1000):
            conn.send(b"%x\r\n%s\r\n" % (1000, body[start:start + 1000]))
        r = conn.getresponse()
        assert r.status == 413 and "20000 bytes" in json.loads(r.read())["error"]["message"]
    finally:
        conn.close()
    assert snapshot(api) == before
    small = json.dumps({"title": "Chunked", "text": "Sent in pieces of forty bytes."}).encode()
    r = api.post("/v1/documents", content=iter([small[i:i + 40] for i in range(0, len(small), 40)]),
                 headers={"content-type": "application/json"})  # an iterator is sent chunked, with no length
    assert r.status_code == 202 and api.get(f"/v1/documents/{r.json()['id']}").json()["title"] == "Chunked"
    api.delete(f"/v1/documents/{r.json()['id']}")


def test_unknown_things_are_404(api):
    for method, path in (("GET", "/v1/documents/doc-nope"), ("DELETE", "/v1/documents/doc-nope"),
                         ("GET", "/v1/jobs/job-nope"), ("POST", "/v1/versions/v9999/activate"), ("GET", "/v1/nothing")):
        r = api.request(method, path)
        assert r.status_code == 404, path
        assert r.json()["error"]["type"] == "not_found_error"
    r = api.post("/v1/chat/completions", json={"model": "v9999", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and "v9999" in r.json()["error"]["message"]


def test_document_lifecycle(api):
    r = api.post("/v1/documents", json=CANAL)
    assert r.status_code == 202
    doc = r.json()
    assert doc["state"] == "pending" and doc["duplicate"] is False
    again = api.post("/v1/documents", json=CANAL)  # a retried POST: the same document, not a second one
    assert again.status_code == 200 and again.json() == {"id": doc["id"], "state": "pending", "duplicate": True}
    listed = api.get("/v1/documents").json()["documents"]
    assert [d["id"] for d in listed].count(doc["id"]) == 1
    full = api.get(f"/v1/documents/{doc['id']}").json()
    assert full["text"] == CANAL["text"] and full["questions"] is None and full["state"] == "pending"

    temp = api.post("/v1/documents", json={"title": "Scratch", "text": "A note to be deleted."}).json()
    assert api.delete(f"/v1/documents/{temp['id']}").json() == {"id": temp["id"], "deleted": True}
    assert api.get(f"/v1/documents/{temp['id']}").status_code == 404
    assert api.delete(f"/v1/documents/{temp['id']}").status_code == 404


def test_search_ranks_pending_passages(api):
    api.post("/v1/documents", json=CANAL)
    api.post("/v1/documents", json=GLACIER)
    results = api.post("/v1/search", json={"query": "When did the Orrin Canal open?", "k": 5}).json()["results"]
    assert results[0]["title"] == "Orrin Canal" and "1843" in results[0]["text"]
    assert all(a["score"] >= b["score"] > 0 for a, b in zip(results, results[1:]))
    assert api.post("/v1/search", json={"query": "zebra xylophone"}).json()["results"] == []
    assert api.post("/v1/search", json={"query": "canal", "k": 0}).status_code == 422


def test_openai_client_streaming_and_not(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=WRITE_KEY, max_retries=0)
    assert "seal" in [m.id for m in client.models.list().data]
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "When did the Orrin Canal open?"}]
    reply = client.chat.completions.create(model="seal", messages=messages, temperature=0.2)
    assert reply.object == "chat.completion" and reply.model == "base"
    assert reply.choices[0].finish_reason == "stop" and isinstance(reply.choices[0].message.content, str)
    used = reply.model_extra["seal"]["documents"]
    assert used and used[0]["title"] == "Orrin Canal"  # the pending document was retrieved into the prompt

    chunks = list(client.chat.completions.create(model="seal", messages=messages, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(pieces) == reply.choices[0].message.content  # greedy: the same answer, in pieces
    assert len(pieces) > 1  # sent word by word as it is generated (test_serve_app: before it is complete)
    assert chunks[-1].model_extra["seal"]["documents"] == used

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="v9999", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="seal", messages=[])


def test_concurrent_requests_are_answered_as_if_alone(api):
    questions = ["When did the Orrin Canal open?", "How far has the Vattna Glacier retreated?", "Where is Lune?",
                 "Who built the canal?", "What covers the plateau of Esk?", "Hello"]
    ask = lambda q: api.post("/v1/chat/completions", json={  # noqa: E731
        "model": "seal", "messages": [{"role": "user", "content": q}]}).json()["choices"][0]["message"]["content"]
    alone = [ask(q) for q in questions]
    assert len(set(alone)) > 1 and all(alone)
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(ask, questions))
    assert together == alone  # batched generation (serve.answers) gives each request its own answer


def test_remember_stores_the_exchange_as_a_pending_document(api):
    r = api.post("/v1/chat/completions", json={"model": "seal", "remember": True, "retrieval": False, "messages": [
        {"role": "user", "content": "Remember that the Lune lighthouse is painted green."}]}).json()
    assert r["seal"]["documents"] == []  # retrieval off
    doc = api.get(f"/v1/documents/{r['seal']['remembered']}").json()
    assert doc["state"] == "pending" and "painted green" in doc["text"]
    assert doc["text"].endswith("assistant: " + r["choices"][0]["message"]["content"])


def test_consolidation_runs_in_the_worker_while_chat_answers(api):
    pending = [d["id"] for d in api.get("/v1/documents", params={"state": "pending"}).json()["documents"]]
    assert len(pending) == 3  # canal, glacier, the remembered exchange
    r = api.post("/v1/consolidate")
    assert r.status_code == 202
    job = r.json()
    assert job["state"] == "running" and job["documents"] == pending
    assert api.post("/v1/consolidate").status_code == 409  # two at once: refused, not interleaved
    assert api.post("/v1/versions/base/activate").status_code == 409
    t = time.perf_counter()
    chat = api.post("/v1/chat/completions", json={"model": "seal", "messages": [{"role": "user", "content": "Hi"}]})
    assert chat.status_code == 200 and time.perf_counter() - t < 30  # answered while the worker trains

    done = wait_for_job(api, job["job"])
    assert done["state"] == "done" and done["error"] is None
    assert done["progress"]["done"] == done["progress"]["total"] == 3
    assert [d["document"] for d in done["decisions"]] == pending
    glacier = next(d for d in done["decisions"] if d["title"] == "Vattna Glacier")
    assert glacier["quiz"][0]["question"] == GLACIER["questions"][0]["question"]  # the user's quiz was used
    assert all(d["accepted"] and isinstance(d["quiz_before"], float) and "perplexity" in d["probe_after"]
               for d in done["decisions"])  # the tiny memory runs with its gate off: every update is kept

    docs = {d["id"]: d for d in api.get("/v1/documents").json()["documents"]}
    versions = api.get("/v1/versions").json()
    names = [v["name"] for v in versions["versions"]]
    assert names == ["base", "v0001", "v0002", "v0003"] and versions["active"] == "v0003"
    assert [docs[i]["version"] for i in pending] == names[1:]
    assert all(docs[i]["state"] == "consolidated" for i in pending)
    assert versions["versions"][-1]["report"]["document"] == pending[-1]
    assert api.delete(f"/v1/documents/{pending[0]}").status_code == 409  # in the weights: only rollback forgets it

    reply = api.post("/v1/chat/completions", json={"model": "seal", "messages": [
        {"role": "user", "content": "When did the Orrin Canal open?"}]}).json()
    assert reply["model"] == "v0003" and reply["seal"]["documents"] == []  # consolidated: not retrieved any more

    assert api.post("/v1/versions/base/activate").json() == {"active": "base"}  # rollback
    assert api.get("/healthz").json()["active"] == "base"
    old = api.post("/v1/chat/completions", json={"model": "v0002", "messages": [{"role": "user", "content": "Hi"}]})
    assert old.json()["model"] == "v0002"

    empty = api.post("/v1/consolidate")  # nothing pending: a job that is done at once
    assert empty.status_code == 202 and empty.json()["documents"] == [] and empty.json()["state"] == "done"


def test_metrics_in_prometheus_text(server, api):
    text = api.get("/metrics").text
    assert 'seal_requests_total{method="POST",route="/v1/documents",status="202"}' in text
    assert 'seal_request_seconds_bucket{le="0.1",route="/v1/search"}' in text
    assert 'seal_documents{state="consolidated"} 3.0' in text
    assert 'seal_consolidations{state="done"} 2.0' in text
    assert 'seal_active_version{version="base"} 1.0' in text
    assert 'seal_chat_batch_size_count' in text
    assert 'status="500"' not in text  # no request of this module failed inside the server


def test_cli_clients(server, api, tmp_path, monkeypatch, capsys):
    note = tmp_path / "harbour-note.txt"
    note.write_text("The harbour of Lune has a red crane called Old Mabel.", encoding="utf-8")
    monkeypatch.delenv("SEAL_API_KEY", raising=False)
    assert main(["remember", str(note), "--server", server.url]) == 2
    assert "401" in capsys.readouterr().err

    monkeypatch.setenv("SEAL_API_KEY", WRITE_KEY)
    assert main(["remember", str(note), "--title", "Lune harbour", "--server", server.url]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert api.get(f"/v1/documents/{doc['id']}").json()["title"] == "Lune harbour"

    assert main(["ask", "--server", server.url, "What is the crane of Lune called?"]) == 0
    out = capsys.readouterr()
    assert "retrieved documents: Lune harbour" in out.err and out.out.strip() is not None

    standby = waiting_worker(server)  # started when the last job ended: imported, waiting for the next job
    monkeypatch.setenv("SEAL_SERVER", server.url)
    assert main(["consolidate", "--wait"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["state"] == "done" and job["decisions"][0]["document"] == doc["id"]
    with sqlite3.connect(server.data / "seal.db") as db:  # the worker's pid is the server's record, not the API's
        assert db.execute("SELECT pid FROM jobs WHERE id = ?", (job["id"],)).fetchone()[0] == standby
    assert api.get(f"/v1/documents/{doc['id']}").json()["state"] == "consolidated"

    assert main(["ask", "--server", "http://127.0.0.1:9", "anything"]) == 1  # nothing listens there
    assert "cannot reach" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["remember", str(empty)]) == 2
