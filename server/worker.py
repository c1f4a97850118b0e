"""The batching model worker: one model instance per process, faces of concurrent requests
cloaked together.

    request ─► admit (bounded: full -> 503 + Retry-After)
            ─► prepare on the CPU pool: decode, detect, align        (per request)
            ─► queue of face crops ─► batcher: up to `batch_size` faces, waiting at most
               `max_wait_ms` after the first ─► ONE model call on the model thread
            ─► finish on the CPU pool: paste back, encode           (per request)

Work whose client went away (or whose request timed out) is dropped before the model sees
it: the batcher skips items whose future is cancelled or whose connection is closed.
The model thread is the only thread that runs the cloak model, so the model needs no lock.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import ApiError
from .metrics import Metrics

log = logging.getLogger("faceprov.server.worker")


class QueueFull(ApiError):
    def __init__(self, retry_after: int):
        super().__init__(503, "queue_full", "the server is busy; try again shortly",
                         headers={"Retry-After": str(retry_after)})


class KeyBusy(ApiError):
    def __init__(self, cap: int):
        super().__init__(429, "too_many_in_flight",
                         f"this API key already has {cap} requests in progress on this server; wait for one",
                         headers={"Retry-After": "1"})


@dataclass
class _Item:
    crops: np.ndarray
    strengths: list[str]
    refine: int
    fut: asyncio.Future
    alive: Callable[[], bool]
    t: float = field(default_factory=time.perf_counter)


class CloakWorker:
    def __init__(self, protector, *, batch_size: int = 16, max_wait_ms: float = 10.0,
                 queue_size: int = 32, cpu_threads: int | None = None, metrics: Metrics | None = None,
                 max_per_key: int | None = None):
        self.protector = protector
        self.batch_size = max(1, int(batch_size))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.queue_size = max(1, int(queue_size))
        # one key may hold at most this many places in the pipeline, so a single client cannot
        # fill the queue and starve the others (default: half of it, at least 2)
        self.max_per_key = max(1, int(max_per_key)) if max_per_key else max(2, self.queue_size // 2)
        self._per_key: dict[str, int] = {}
        self.metrics = metrics or Metrics()
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="faceprov-model")
        n = cpu_threads or min(4, os.cpu_count() or 1)
        self.cpu_pool = ThreadPoolExecutor(n, thread_name_prefix="faceprov-cpu")
        self.inflight = 0
        self._q: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._avg_request_s = 1.0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._q = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="faceprov-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._q is not None:
            while not self._q.empty():
                it = self._q.get_nowait()
                if not it.fut.done():
                    it.fut.set_exception(ApiError(503, "shutting_down", "the server is shutting down"))
        self.model_pool.shutdown(wait=True, cancel_futures=True)
        self.cpu_pool.shutdown(wait=True, cancel_futures=True)

    @property
    def queued(self) -> int:
        return self._q.qsize() if self._q is not None else 0

    # ------------------------------------------------------------------ admission
    @asynccontextmanager
    async def admit(self, key: str | None = None):
        """A place in the pipeline, or QueueFull (503 + Retry-After), or KeyBusy (429) when `key`
        already holds `max_per_key` places."""
        if self.inflight >= self.queue_size:
            self.metrics.rejected.inc(reason="queue_full")
            # a rough wait: the queue drains about one request per average request time
            retry = max(1, min(60, int(self._avg_request_s * self.inflight / max(1, self.batch_size) + 1)))
            raise QueueFull(retry)
        if key is not None and self._per_key.get(key, 0) >= self.max_per_key:
            self.metrics.rejected.inc(reason="key_busy")
            raise KeyBusy(self.max_per_key)
        self.inflight += 1
        if key is not None:
            self._per_key[key] = self._per_key.get(key, 0) + 1
        t0 = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.inflight -= 1
            if key is not None:
                left = self._per_key.get(key, 1) - 1
                if left:
                    self._per_key[key] = left
                else:
                    self._per_key.pop(key, None)
            if ok:
                self._avg_request_s = 0.8 * self._avg_request_s + 0.2 * (time.perf_counter() - t0)

    # ------------------------------------------------------------------ stages
    async def run_cpu(self, fn: Callable, *args, stage: str = "cpu", **kw) -> Any:
        t0 = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.cpu_pool, lambda: fn(*args, **kw))
        finally:
            self.metrics.stage_seconds.observe(time.perf_counter() - t0, stage=stage)

    async def run_model(self, fn: Callable, *args, stage: str = "model_other", **kw) -> Any:
        """Anything else that uses the model thread's models (report, embeddings)."""
        t0 = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.model_pool, lambda: fn(*args, **kw))
        finally:
            self.metrics.stage_seconds.observe(time.perf_counter() - t0, stage=stage)

    async def cloak(self, crops: np.ndarray, strength: str, refine: int = 0,
                    alive: Callable[[], bool] = lambda: True) -> np.ndarray:
        """Queue one photo's aligned crops; wait for them, cloaked, from a batched model call."""
        if self._q is None:
            raise ApiError(503, "not_ready", "the model worker is not running")
        fut = asyncio.get_running_loop().create_future()
        self._q.put_nowait(_Item(crops, [strength] * len(crops), refine, fut, alive))
        return await fut

    # ------------------------------------------------------------------ batcher
    async def _collect(self) -> list[_Item]:
        assert self._q is not None
        first = await self._q.get()
        items, n = [first], len(first.crops)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while n < self.batch_size:
            try:
                it = self._q.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    it = await asyncio.wait_for(self._q.get(), left)
                except (asyncio.TimeoutError, TimeoutError):
                    break
            items.append(it)
            n += len(it.crops)
        return items

    def _live(self, items: list[_Item]) -> list[_Item]:
        live = []
        for it in items:
            if it.fut.done():  # cancelled: the handler was cancelled (disconnect or timeout)
                self.metrics.dropped.inc(stage="queued")
                continue
            try:
                ok = it.alive()
            except Exception:  # noqa: BLE001
                ok = False
            if not ok:
                it.fut.cancel()
                self.metrics.dropped.inc(stage="queued")
                continue
            live.append(it)
        return live

    async def _run_group(self, group: list[_Item], refine: int) -> None:
        crops = np.concatenate([it.crops for it in group]) if len(group) > 1 else group[0].crops
        strengths = [s for it in group for s in it.strengths]
        arg = strengths[0] if len(set(strengths)) == 1 else strengths
        t0 = time.perf_counter()
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                self.model_pool, self.protector.cloak_crops, crops, arg, refine)
        except Exception as e:  # noqa: BLE001 - handed to every waiting request
            log.error("model call failed: %s", type(e).__name__)
            for it in group:
                if not it.fut.done():
                    it.fut.set_exception(e)
            return
        dt = time.perf_counter() - t0
        self.metrics.model_seconds.observe(dt)
        self.metrics.batch_faces.observe(len(crops))
        self.metrics.batch_requests.observe(len(group))
        k = 0
        for it in group:
            n = len(it.crops)
            if not it.fut.done():
                it.fut.set_result(out[k:k + n])
            k += n

    async def _loop(self) -> None:
        while True:
            try:
                items = self._live(await self._collect())
                if not items:
                    continue
                plain = [it for it in items if it.refine == 0]
                if plain:
                    await self._run_group(plain, 0)
                for it in items:  # refinement is per photo (its own optimisation)
                    if it.refine > 0 and self._live([it]):
                        await self._run_group([it], it.refine)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the batcher must survive anything
                log.error("batcher error: %s", type(e).__name__)
