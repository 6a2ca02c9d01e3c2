"""ReST-EM's E-step on Ray workers: the same records as the local path, and no episode lost or counted
twice when a worker is killed mid-round. One local Ray instance serves the whole module (starting Ray
takes seconds)."""

from __future__ import annotations

import pytest
import ray

from seal import models
from seal.config import ModelConfig
from seal.cli import main
from seal.distributed.episodes import EpisodeWorker, RayEpisodes
from seal.rl.restem import ContextJob, local_episodes, restem
from seal.runs import Run
from test_restem import PASSAGES, domain, episodes, small_config


def config(model_dir):
    """One context: a baseline, then 4 episodes in one batched chunk. The backend is named: the suite's pin of
    `auto` to hf holds in this process only, and a worker with llama.cpp installed would generate with it."""
    return small_config(model_dir, k=4, generator=ModelConfig(name=str(model_dir), backend="hf"))


@pytest.fixture(scope="module")
def pool(tiny_model_dir):
    """Two workers on one local Ray instance, shared by the tests (each worker takes seconds to start)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    workers = RayEpisodes(domain(), PASSAGES, config(tiny_model_dir), workers=2)
    yield workers
    workers.close()
    ray.shutdown()


def comparable(records: list[dict]) -> list[tuple]:
    """Records without their timings, in a fixed order (workers finish in any order)."""
    return sorted((r["event"], r["context"], r.get("sample", -1), r.get("text"), r["score"], r.get("reward"))
                  for r in records)


def each_once(records: list[dict], k: int) -> bool:
    """Every context's baseline and k episodes among the records, none twice."""
    keys = [(r["event"], r["context"], r.get("sample")) for r in records if r["event"] in ("baseline", "episode")]
    return len(keys) == len(set(keys)) == len(PASSAGES) * (1 + k)


def test_ray_rounds_equal_the_local_rounds(tiny_model_dir, tmp_path, pool):
    cfg = config(tiny_model_dir)
    local = Run(tmp_path / "local", cfg)
    restem(domain(), PASSAGES, cfg, local)
    remote = Run(tmp_path / "remote", cfg)
    summaries = restem(domain(), PASSAGES, cfg, remote, remote=pool)
    assert not pool.owns_ray  # it joined the running instance and leaves it running
    assert [s["episodes"] for s in summaries] == [8, 8]
    assert sorted(episodes(remote)) == sorted(episodes(local))  # round 2 ran on round 1's saved generator
    for event in ("baseline", "episode"):
        assert comparable(remote.records(event=event)) == comparable(local.records(event=event))


def test_workers_live_for_one_round(tiny_model_dir, pool):
    """The M-step runs in the driver between two rounds: idle workers would take its memory (README)."""
    started = []
    for _ in pool([ContextJob(1, 0, None, [0])], str(tiny_model_dir)):  # the first context's baseline and sample 0
        started = started or list(pool.actors)
    assert len(started) == 1  # one job: no second worker started to sit idle
    assert pool.actors == []
    with pytest.raises(ray.exceptions.RayActorError):  # its process is gone, and the memory with it
        ray.get(started[0].__ray_call__.remote(lambda worker: worker.source))


def test_a_killed_worker_loses_no_episode_and_repeats_none(tiny_model_dir, pool):
    cfg = config(tiny_model_dir)
    jobs = [ContextJob(1, i, None, list(range(cfg.k))) for i in range(len(PASSAGES))]
    model, tokenizer = models.load(str(tiny_model_dir))
    expected = list(local_episodes(domain(), PASSAGES, cfg, model, tokenizer, model, tokenizer)(jobs))
    records = []
    for record in pool(jobs, str(tiny_model_dir)):
        if not records:
            ray.kill(pool.actors[0])  # mid-round: both workers are busy with a context (its baseline, then 4 episodes)
        records.append(record)
    assert pool.deaths == 1
    assert pool.retried and all(job.samples or job.baseline is None for job in pool.retried)
    assert each_once(records, cfg.k)
    assert comparable(records) == comparable(expected)  # the retried work gives what the local path gives


def test_a_worker_stopped_by_the_memory_monitor_is_replaced(tiny_model_dir, tmp_path, pool, monkeypatch):
    """Ray's memory monitor stops a worker with an OutOfMemoryError rather than an actor error (a ReST-EM run on
    Qwen died of it): its job is redone elsewhere like a killed worker's."""
    stopped = tmp_path / "stopped"

    class StoppedOnce(EpisodeWorker):
        def run(self, job, source):
            if not stopped.exists():  # the first job any worker is given
                stopped.touch()
                raise ray.exceptions.OutOfMemoryError("stands in for Ray's memory monitor")
            yield from super().run(job, source)

    monkeypatch.setattr(pool, "actor_class", ray.remote(num_cpus=1)(StoppedOnce))
    monkeypatch.setattr(pool, "deaths", 0)
    cfg = config(tiny_model_dir)
    jobs = [ContextJob(1, i, None, list(range(cfg.k))) for i in range(len(PASSAGES))]
    records = list(pool(jobs, str(tiny_model_dir)))
    assert stopped.exists() and pool.deaths == 1
    assert each_once(records, cfg.k)


def test_a_killed_local_run_resumes_on_ray_workers_without_redoing_work(tiny_model_dir, tmp_path, pool, monkeypatch):
    import dataclasses

    from seal.rl import restem as restem_mod

    cfg = dataclasses.replace(config(tiny_model_dir), rounds=1)
    real, calls = restem_mod.score_self_edits, []

    def dying(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt  # killed once the first context's episodes were logged
        calls.append(args[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(restem_mod, "score_self_edits", dying)
    with pytest.raises(KeyboardInterrupt):
        restem(domain(), PASSAGES, cfg, Run(tmp_path / "run", cfg))
    monkeypatch.setattr(restem_mod, "score_self_edits", real)
    run = Run(tmp_path / "run", cfg)
    restem(domain(), PASSAGES, cfg, run, remote=pool)
    assert each_once(run.records(), cfg.k)  # nothing redone, nothing missing
    fresh = Run(tmp_path / "fresh", cfg)
    restem(domain(), PASSAGES, cfg, fresh)
    assert sorted(episodes(run)) == sorted(episodes(fresh))


def test_workers_must_be_positive(capsys, tmp_path):
    assert main(["train", "knowledge", "--workers", "0", "--out", str(tmp_path / "run")]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_workers_reserve_a_gpu_each_only_on_cuda():
    from seal.distributed.episodes import gpus_per_worker

    assert gpus_per_worker("cpu", cluster_gpus=8, workers=2) == 0
    assert gpus_per_worker("auto", cluster_gpus=0, workers=2) == 0  # a CPU cluster: auto means the CPU
    assert gpus_per_worker("auto", cluster_gpus=2, workers=2) == 1
    assert gpus_per_worker("cuda:1", cluster_gpus=4, workers=3) == 1
    with pytest.raises(ValueError, match="need 3 GPUs; the Ray cluster has 2"):
        gpus_per_worker("cuda", cluster_gpus=2, workers=3)


def test_more_workers_than_cpus_is_refused_not_left_waiting(tiny_model_dir, pool):
    with pytest.raises(ValueError, match="need 3 CPUs; the Ray cluster has 2"):
        RayEpisodes(domain(), PASSAGES, config(tiny_model_dir), workers=3)
    assert ray.is_initialized()  # the shared instance it joined is left running
