"""ReST-EM's E-step on Ray actors: each worker holds its own models and runs context jobs exactly as the
local path does (`seal.rl.restem.context_episodes`), so the same seed gives the same self-edits and rewards.

A job's records stream back one by one as the worker produces them (a Ray streaming generator), and
ReST-EM logs each as it arrives, as it does locally. When a worker dies mid-job (killed, out of memory,
its node gone), what it already delivered is kept, a fresh worker takes its place, and only the rest of
the job runs again: no episode is lost or counted twice.

Without `address` a local Ray instance is started for the pool (num_cpus = workers x threads, which
must not exceed the machine's cores; no dashboard) and shut down by `close()`; a Ray instance already
initialised in this process (e.g. the tests' one) is used as it is; too few CPUs is an error, not a
wait. Ray's own ports cannot be restricted to loopback; Ray guards them with the token authentication it
enables by default. With `address` (a cluster started with `ray start --head`), workers on other
machines need the embedded models prepared in their own cache and the run directory on a shared
filesystem (round N's generator is loaded from `round-N/`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from typing import Any, Iterator

from seal.rl.restem import ContextJob, RestEMConfig

MAX_WORKER_DEATHS = 8  # per pool: beyond this the cause is not a passing fault, and the round stops with it
STOP_WAIT_S = 60  # how long a round's end waits for its killed workers to be gone before it fails


def gpus_per_worker(device: str, cluster_gpus: float, workers: int) -> int:
    """GPUs each worker reserves: one when the models run on CUDA (device `cuda[:N]`, or `auto` on a
    cluster that has GPUs; Ray then shows each worker its own GPU as cuda:0), none on CPU."""
    if not (device.startswith("cuda") or (device == "auto" and cluster_gpus > 0)):
        return 0
    if workers > cluster_gpus:
        raise ValueError(f"{workers} workers on CUDA need {workers} GPUs; the Ray cluster has {cluster_gpus:g}")
    return 1


class EpisodeWorker:
    """A Ray actor (see `RayEpisodes`): loads a round's generator (and the fixed learner, if any) once and
    runs context jobs on it."""

    def __init__(self, domain, contexts: list[Any], cfg: RestEMConfig, threads: int):
        import torch

        from seal import models

        torch.set_num_threads(threads)
        self.domain, self.contexts, self.cfg = domain, contexts, cfg
        self.source: str | None = None
        self.student = models.load(dataclasses.replace(cfg.generator, name=cfg.learner)) if cfg.learner else None

    def run(self, job: ContextJob, source: str) -> Iterator[dict]:
        from seal import models
        from seal.rl.restem import context_episodes

        if self.source != source:
            self.model, self.tokenizer = models.load(dataclasses.replace(self.cfg.generator, name=source))
            self.source = source
        learner, learner_tok = self.student or (self.model, self.tokenizer)
        yield from context_episodes(self.domain, self.contexts[job.context], job, self.cfg, self.model,
                                    self.tokenizer, learner, learner_tok)


class RayEpisodes:
    """A pool of `workers` EpisodeWorker actors; `pool(jobs, source)` runs a round's jobs on them and
    yields the records as they arrive (the `RemoteEpisodes` of `seal.rl.restem.restem`).

    The actors live for one round: the M-step runs in the driver between two E-steps, and on Qwen2.5-0.5B it
    peaked at 23.4 GB of this 23.5 GB machine, while each idle worker still held 1.2 GB with its generator
    dropped (6 GB with it); Ray's memory monitor then killed one and the next round stopped. Fresh workers
    take seconds to start against an E-step's half hour."""

    def __init__(self, domain, contexts: list[Any], cfg: RestEMConfig, workers: int, address: str | None = None,
                 threads: int = 1):
        import ray

        if workers < 1 or threads < 1:
            raise ValueError(f"workers and threads per worker must be at least 1 (got {workers}, {threads})")
        cpus = workers * threads
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray and not address and cpus > (os.cpu_count() or 1):
            raise ValueError(f"{workers} workers x {threads} thread(s) need {cpus} cores; this machine has "
                             f"{os.cpu_count()}")
        if self.owns_ray:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            resources = ray.cluster_resources()
            if cpus > resources.get("CPU", 0):  # the workers would wait for CPUs forever
                raise ValueError(f"{workers} workers x {threads} thread(s) need {cpus} CPUs; the Ray cluster has "
                                 f"{resources.get('CPU', 0):g}")
            gpus = gpus_per_worker(cfg.generator.device, resources.get("GPU", 0), workers)
        except ValueError:
            if self.owns_ray:
                ray.shutdown()
            raise
        if gpus:  # each worker sees its own GPU only, as cuda:0
            cfg = dataclasses.replace(cfg, generator=dataclasses.replace(cfg.generator, device="cuda"))
        self.actor_class = ray.remote(num_cpus=threads, num_gpus=gpus)(EpisodeWorker)
        self.init_args = (domain, ray.put(contexts), cfg, threads)
        self.workers = workers
        self.actors: list = []  # this round's; started by the call that runs the round's jobs
        self.deaths = 0
        self.retried: list[ContextJob] = []  # what was left of jobs whose worker died, run again elsewhere

    def _new_actor(self):
        return self.actor_class.remote(*self.init_args)

    def __call__(self, jobs: list[ContextJob], source: str) -> Iterator[dict]:
        import ray
        from ray.exceptions import OutOfMemoryError, RayActorError

        self._stop_actors()  # any left by a round whose records were not all taken
        self.actors = [self._new_actor() for _ in range(min(self.workers, len(jobs)))]
        queue = deque(dataclasses.replace(job, samples=list(job.samples)) for job in jobs)
        idle = list(self.actors)
        running: dict[Any, tuple[Any, ContextJob]] = {}  # streaming generator -> (actor, what is left of its job)
        while queue or running:
            while queue and idle:
                actor, job = idle.pop(), queue.popleft()
                running[actor.run.remote(job, source)] = (actor, job)
            (stream,), _ = ray.wait(list(running), num_returns=1)
            actor, job = running[stream]
            try:
                record = ray.get(next(stream))
            except StopIteration:
                del running[stream]
                idle.append(actor)
                continue
            except (RayActorError, OutOfMemoryError):  # killed, crashed, or stopped by Ray's memory monitor
                del running[stream]
                self._replace(actor, idle)
                if job.baseline is None or job.samples:
                    self.retried.append(dataclasses.replace(job, samples=list(job.samples)))
                    queue.appendleft(job)
                continue
            if record["event"] == "baseline":
                job.baseline = record["score"]
            else:
                job.samples.remove(record["sample"])
            yield record
        self._stop_actors()

    def _stop_actors(self) -> None:
        """Kill this round's workers and wait until each is gone: `ray.kill` only asks, and the M-step that
        follows needs the memory they hold (a call made while the kill is on its way still runs)."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        for actor in self.actors:
            ray.kill(actor)
        deadline = time.monotonic() + STOP_WAIT_S
        for actor in self.actors:
            while True:
                try:
                    ray.get(actor.__ray_ready__.remote(), timeout=max(deadline - time.monotonic(), 0))
                except RayActorError:
                    break
                except GetTimeoutError:  # past the deadline a get times out at once
                    raise RuntimeError(f"a Ray worker killed {STOP_WAIT_S} s ago is still alive; see the Ray logs")
                time.sleep(0.05)
        self.actors = []

    def _replace(self, dead, idle: list) -> None:
        import ray

        self.deaths += 1
        if self.deaths > MAX_WORKER_DEATHS:
            raise RuntimeError(f"{self.deaths} Ray workers died in this run; see the Ray logs for the cause")
        ray.kill(dead)  # in case it is not quite gone: it would hold its CPUs from the worker replacing it
        self.actors.remove(dead)
        fresh = self._new_actor()
        self.actors.append(fresh)
        idle.append(fresh)

    def close(self) -> None:
        import ray

        self._stop_actors()  # those of a round left unfinished
        if self.owns_ray:
            ray.shutdown()
