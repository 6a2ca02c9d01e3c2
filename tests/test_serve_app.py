"""The application in process: a failure inside the server is a JSON 500 with its message, logged and
counted, never an empty answer; a streamed answer reaches the client while it is still being generated."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import httpx
import uvicorn
from fastapi.testclient import TestClient
from serve_helpers import WRITE_KEY, free_port

from seal.config import ModelConfig
from seal.serve.app import create_app
from seal.serve.auth import Keys
from seal.serve.config import ServeConfig


def _app(model_dir, data, max_new_tokens: int = 6):
    cfg = ServeConfig()
    cfg.memory.model = ModelConfig(name=str(model_dir))
    cfg.memory.probe.candidates = 2
    cfg.memory.eval.max_new_tokens = max_new_tokens
    return create_app(data, cfg, Keys(WRITE_KEY))


@contextlib.contextmanager
def serving(app):
    """`app` on uvicorn in a thread, on loopback: a real HTTP server whose objects the test can reach."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_a_failure_inside_is_a_json_500_and_counted(tiny_model_dir, tmp_path, capsys):
    app = _app(tiny_model_dir, tmp_path / "data")

    def broken(*args, **kwargs):
        raise RuntimeError("the model is gone")

    app.state.service.memory.answer_many = broken
    with TestClient(app, headers={"Authorization": f"Bearer {WRITE_KEY}"}) as client:
        r = client.post("/v1/chat/completions", json={"model": "seal", "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 500
        assert r.json()["error"]["message"] == "RuntimeError: the model is gone"
        counted = 'seal_requests_total{method="POST",route="/v1/chat/completions",status="500"} 1.0'
        assert counted in client.get("/metrics").text
        assert client.get("/healthz").status_code == 200  # the server goes on
    assert "the model is gone" in capsys.readouterr().err


def test_a_streamed_answer_is_sent_while_it_is_generated(scrambled_model_dir, tmp_path):
    """The generation is held after its first piece until the client has received that piece: a server
    that sent the answer only once complete would never release it (the hold times out, and the test fails)."""
    app = _app(scrambled_model_dir, tmp_path / "data", max_new_tokens=24)
    memory = app.state.service.memory
    answer_stream, released, held = memory.answer_stream, threading.Event(), []

    def held_after_the_first_piece(*args, **kwargs):
        pieces = answer_stream(*args, **kwargs)
        with contextlib.closing(pieces):
            for n, piece in enumerate(pieces):
                yield piece
                if n == 0:
                    held.append(released.wait(timeout=20))

    memory.answer_stream = held_after_the_first_piece
    question = "Tell me about the harbour of Lune."  # the scrambled model answers it in several words
    body = {"model": "seal", "stream": True, "messages": [{"role": "user", "content": question}]}
    with serving(app) as url, httpx.Client(base_url=url, timeout=60,
                                           headers={"Authorization": f"Bearer {WRITE_KEY}"}) as client:
        pieces = []
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    content = json.loads(line[6:])["choices"][0]["delta"].get("content")
                    if content:
                        pieces.append(content)
                        released.set()  # the first piece is here while the generation is still held
        whole = client.post("/v1/chat/completions", json=body | {"stream": False}).json()
    assert held == [True]
    assert len(pieces) > 1 and "".join(pieces) == whole["choices"][0]["message"]["content"]
