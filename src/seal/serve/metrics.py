"""Prometheus metrics (prometheus_client): requests and latency by route, documents by state, consolidations by
outcome, the active version. The counts are read from the store at scrape time, so they are right after a
restart too."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily


class _StoreCollector:
    def __init__(self, counts: Callable[[], dict], job_counts: Callable[[], dict], active: Callable[[], str]):
        self.counts, self.job_counts, self.active = counts, job_counts, active

    def collect(self):
        docs = GaugeMetricFamily("seal_documents", "Documents by state", labels=["state"])
        for state, n in self.counts().items():
            docs.add_metric([state], n)
        jobs = GaugeMetricFamily("seal_consolidations", "Consolidation jobs by state", labels=["state"])
        for state, n in self.job_counts().items():
            jobs.add_metric([state], n)
        active = GaugeMetricFamily("seal_active_version", "The memory version chat answers from", labels=["version"])
        active.add_metric([self.active()], 1)
        return [docs, jobs, active]


class Metrics:
    def __init__(self, counts, job_counts, active):
        self.registry = CollectorRegistry()
        self.requests = Counter("seal_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("seal_request_seconds", "HTTP request latency", ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.chat_batch = Histogram("seal_chat_batch_size", "Chat requests answered per batched generation",
                                    registry=self.registry, buckets=(1, 2, 4, 8, 16, 32))
        self.registry.register(_StoreCollector(counts, job_counts, active))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
