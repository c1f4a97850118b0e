"""The server's Prometheus metrics, through prometheus-client.

One process: each app has its own `CollectorRegistry` (several apps in one process, as in the
tests, stay apart). `faceprov serve --workers N`: `run_many` sets PROMETHEUS_MULTIPROC_DIR
before the workers start, prometheus-client then keeps every counter and histogram in files
there, and `/metrics` on any worker reports the sum over all of them (its multiprocess mode);
the live gauges (queue depth, in-flight requests) are per process and summed ("livesum"), so
a worker that died stops counting. Labels hold route templates and status codes only, never
user input.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

import prometheus_client as pc
from prometheus_client import CollectorRegistry, multiprocess

# generate_latest writes the text format 0.0.4 (newer clients call their default 1.0.0)
CONTENT_TYPE = pc.CONTENT_TYPE_PLAIN_0_0_4

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

# the *_created samples double the exposition and mean nothing to a dashboard here
pc.disable_created_metrics()
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class _Labelled:
    def __init__(self, metric, labelnames: tuple[str, ...]):
        self._m, self.labelnames = metric, labelnames

    def _child(self, labels: dict):
        if not self.labelnames:
            return self._m
        return self._m.labels(**{n: str(labels.get(n, "")) for n in self.labelnames})


class Counter(_Labelled):
    def __init__(self, registry, name: str, help: str, labels: Iterable[str] = ()):
        labels = tuple(labels)
        super().__init__(pc.Counter(name, help, labels, registry=registry), labels)

    def inc(self, n: float = 1.0, **labels: str) -> None:
        self._child(labels).inc(n)

    def value(self, **labels: str) -> float:
        """This process's count (tests)."""
        return float(self._child(labels)._value.get())


class Histogram(_Labelled):
    def __init__(self, registry, name: str, help: str, labels: Iterable[str] = (), buckets=LATENCY_BUCKETS):
        labels = tuple(labels)
        super().__init__(pc.Histogram(name, help, labels, registry=registry, buckets=tuple(buckets)), labels)

    def observe(self, x: float, **labels: str) -> None:
        self._child(labels).observe(x)

    def count(self, **labels: str) -> int:
        """Observations in this process (tests)."""
        child = self._child(labels)
        return int(sum(b.get() for b in child._buckets))


class Metrics:
    """Every metric the server exports."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        # In multiprocess mode the values live in files, not in a registry; metrics still need
        # a registry to be created in, and this one is never rendered.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(r, "faceprov_http_requests", "HTTP requests by route, method and status",
                                ("route", "method", "status"))
        self.latency = Histogram(r, "faceprov_http_request_duration_seconds", "request latency by route", ("route",))
        self.rejected = Counter(r, "faceprov_rejected_requests",
                                "requests refused before work: queue_full, rate_limited, timeout", ("reason",))
        self.dropped = Counter(r, "faceprov_dropped_jobs",
                               "queued work dropped because the client disconnected or timed out", ("stage",))
        self.photos = Counter(r, "faceprov_photos_cloaked", "photos cloaked and recorded")
        self.faces = Counter(r, "faceprov_faces_cloaked", "faces cloaked")
        self.batch_faces = Histogram(r, "faceprov_model_batch_faces", "faces per model call", (), buckets=SIZE_BUCKETS)
        self.batch_requests = Histogram(r, "faceprov_model_batch_requests", "requests per model call", (),
                                        buckets=SIZE_BUCKETS)
        self.model_seconds = Histogram(r, "faceprov_model_seconds", "time of one batched model call")
        self.stage_seconds = Histogram(r, "faceprov_stage_seconds", "pipeline stage time", ("stage",))
        self._gauges: list[tuple[pc.Gauge, Callable[[], float]]] = []

    def gauge(self, name: str, help: str, fn: Callable[[], float]) -> pc.Gauge:
        """A gauge read from `fn` whenever the metrics are rendered or `refresh` runs."""
        g = pc.Gauge(name, help, registry=self.registry, multiprocess_mode="livesum")
        if not self.multiprocess:
            g.set_function(fn)
        self._gauges.append((g, fn))
        return g

    def refresh(self) -> None:
        """Write this process's live gauges (multiprocess mode: other workers read the files)."""
        if self.multiprocess:
            for g, fn in self._gauges:
                g.set(float(fn()))

    def render(self) -> str:
        if not self.multiprocess:
            return pc.generate_latest(self.registry).decode()
        self.refresh()
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
        return pc.generate_latest(reg).decode()


def mark_process_dead(pid: int) -> None:
    """Multiprocess mode: forget a finished worker's live gauges (its counters stay counted)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)
