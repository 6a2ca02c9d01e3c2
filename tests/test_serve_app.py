"""The application in process (FastAPI's TestClient): a failure inside the server is a JSON 500 with its
message, logged and counted, never an empty answer."""

from __future__ import annotations

from fastapi.testclient import TestClient
from serve_helpers import WRITE_KEY

from seal.config import ModelConfig
from seal.serve.app import create_app
from seal.serve.auth import Keys
from seal.serve.config import ServeConfig


def test_a_failure_inside_is_a_json_500_and_counted(tiny_model_dir, tmp_path, capsys):
    cfg = ServeConfig()
    cfg.memory.model = ModelConfig(name=str(tiny_model_dir))
    cfg.memory.probe.candidates = 2
    app = create_app(tmp_path / "data", cfg, Keys(WRITE_KEY))

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
