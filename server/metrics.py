"""A small Prometheus registry (text exposition format 0.0.4) — counters, gauges, histograms.

One registry per app; no global state, so several apps in one process (tests) stay apart.
Labels hold route templates and status codes only, never user input.
"""
from __future__ import annotations

import math
import threading
from typing import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_esc(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        self.name, self.help, self.labelnames = name, help, tuple(labels)
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self._v: dict[tuple, float] = {}

    def inc(self, n: float = 1.0, **labels: str) -> None:
        key = tuple(str(labels.get(n_, "")) for n_ in self.labelnames)
        with self._lock:
            self._v[key] = self._v.get(key, 0.0) + n

    def value(self, **labels: str) -> float:
        return self._v.get(tuple(str(labels.get(n_, "")) for n_ in self.labelnames), 0.0)

    def header(self) -> list[str]:
        # text format 0.0.4: the family is named like its samples (with _total)
        return [f"# HELP {self.name}_total {self.help}", f"# TYPE {self.name}_total counter"]

    def render(self) -> list[str]:
        lines = self.header()
        items = sorted(self._v.items()) or ([((), 0.0)] if not self.labelnames else [])
        for key, v in items:
            lines.append(f"{self.name}_total{_labels(self.labelnames, key)} {_num(v)}")
        return lines


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help: str, fn: Callable[[], float] | None = None):
        super().__init__(name, help)
        self.fn, self._v = fn, 0.0

    def set(self, v: float) -> None:
        self._v = float(v)

    def render(self) -> list[str]:
        v = self.fn() if self.fn is not None else self._v
        return self.header() + [f"{self.name} {_num(float(v))}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, labels: Iterable[str] = (), buckets=LATENCY_BUCKETS):
        super().__init__(name, help, labels)
        self.buckets = tuple(sorted(buckets))
        self._v: dict[tuple, list] = {}  # key -> [counts per bucket..., sum, count]

    def observe(self, x: float, **labels: str) -> None:
        key = tuple(str(labels.get(n_, "")) for n_ in self.labelnames)
        with self._lock:
            row = self._v.setdefault(key, [0] * len(self.buckets) + [0.0, 0])
            for i, b in enumerate(self.buckets):
                if x <= b:
                    row[i] += 1
            row[-2] += x
            row[-1] += 1

    def count(self, **labels: str) -> int:
        row = self._v.get(tuple(str(labels.get(n_, "")) for n_ in self.labelnames))
        return row[-1] if row else 0

    def render(self) -> list[str]:
        lines = self.header()
        for key, row in sorted(self._v.items()):
            for b, c in zip(self.buckets, row):
                le = 'le="' + _num(b) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {c}")
            inf = 'le="+Inf"'
            lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, inf)} {row[-1]}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_num(row[-2])}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {row[-1]}")
        return lines


class Metrics:
    """Every metric the server exports."""

    def __init__(self) -> None:
        self.requests = Counter("faceprov_http_requests", "HTTP requests by route, method and status",
                                ("route", "method", "status"))
        self.latency = Histogram("faceprov_http_request_duration_seconds", "request latency by route",
                                 ("route",))
        self.rejected = Counter("faceprov_rejected_requests",
                                "requests refused before work: queue_full, rate_limited, timeout",
                                ("reason",))
        self.dropped = Counter("faceprov_dropped_jobs",
                               "queued work dropped because the client disconnected or timed out",
                               ("stage",))
        self.photos = Counter("faceprov_photos_cloaked", "photos cloaked and recorded")
        self.faces = Counter("faceprov_faces_cloaked", "faces cloaked")
        self.batch_faces = Histogram("faceprov_model_batch_faces", "faces per model call", (),
                                     buckets=SIZE_BUCKETS)
        self.batch_requests = Histogram("faceprov_model_batch_requests", "requests per model call", (),
                                        buckets=SIZE_BUCKETS)
        self.model_seconds = Histogram("faceprov_model_seconds", "time of one batched model call")
        self.stage_seconds = Histogram("faceprov_stage_seconds", "pipeline stage time", ("stage",))
        self.gauges: list[Gauge] = []

    def gauge(self, name: str, help: str, fn: Callable[[], float]) -> Gauge:
        g = Gauge(name, help, fn)
        self.gauges.append(g)
        return g

    def render(self) -> str:
        lines: list[str] = []
        for m in (self.requests, self.latency, self.rejected, self.dropped, self.photos, self.faces,
                  self.batch_faces, self.batch_requests, self.model_seconds, self.stage_seconds,
                  *self.gauges):
            lines += m.render()
        return "\n".join(lines) + "\n"
