"""Consolidation on a schedule, the generated key file, and config errors before anything is written."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest
from serve_helpers import Server

from seal.cli import main
from seal.config import ConfigError
from seal.serve.config import ScheduleConfig
from seal.serve.jobs import seconds_to_next


def test_schedule_times():
    noon = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp()
    assert seconds_to_next(ScheduleConfig(), noon, noon) is None
    assert seconds_to_next(ScheduleConfig(interval_minutes=10), noon - 60, noon) == 540
    assert seconds_to_next(ScheduleConfig(daily_at="13:30"), noon, noon) == 5400
    assert seconds_to_next(ScheduleConfig(daily_at="02:00"), noon, noon) == 14 * 3600  # tomorrow
    assert seconds_to_next(ScheduleConfig(interval_minutes=120, daily_at="12:30"), noon, noon) == 1800
    with pytest.raises(ConfigError, match="HH:MM"):
        ScheduleConfig(daily_at="25:99").daily_time()


def test_bad_schedule_is_refused_before_anything_is_written(tmp_path, capsys):
    assert main(["serve", "--data", str(tmp_path / "data"), "--set", "schedule.daily_at=noon"]) == 2
    assert "schedule.daily_at" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_scheduled_consolidation_and_generated_key(tiny_model_dir, tmp_path):
    server = Server(tmp_path / "data", tiny_model_dir, "--set", "schedule.interval_minutes=0.05", keys=False).start()
    try:
        key_file = tmp_path / "data" / "api_key"
        assert key_file.stat().st_mode & 0o777 == 0o600 and str(key_file) in server.log()
        assert httpx.get(server.url + "/v1/documents").status_code == 401
        with server.client(key_file.read_text().strip()) as api:
            doc = api.post("/v1/documents", json={"title": "Lune", "text": "Lune is a harbour town."}).json()
            deadline = time.monotonic() + 240
            while api.get(f"/v1/documents/{doc['id']}").json()["state"] == "pending" and time.monotonic() < deadline:
                time.sleep(0.5)
            jobs = api.get("/v1/jobs").json()["jobs"]
            assert [j["trigger"] for j in jobs] == ["schedule"] and jobs[0]["state"] == "done"
            assert api.get(f"/v1/documents/{doc['id']}").json()["state"] == "consolidated"
    finally:
        server.stop()
