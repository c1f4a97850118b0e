"""Vector search over identity embeddings, behind one interface.

* `PgVectorIndex` (PostgreSQL): the `identity_embeddings.embedding` column is a pgvector
  `vector`; every recognizer gets a partial HNSW index (cosine) on
  ``embedding::vector(dim) WHERE recognizer_id = id``, made when the recognizer is registered.
* `EmbeddedIndex` (SQLite, the default): SQLite on a stock Python cannot load sqlite-vec, so
  the embeddings are stored in SQLite as float32 bytes (the source of truth) and searched in
  memory: an exact numpy scan while a recognizer has fewer than `ANN_THRESHOLD` (200 k)
  embeddings — recall 1.0, nothing to build or persist — and a usearch HNSW graph above it,
  persisted beside the database file (``faceprov.db.vectors/r<id>.usearch`` + ``.json``).
  Either structure is a cache: it carries the recognizer's `generation`, and is caught up or
  rebuilt from SQL whenever another process (or a crash) left it behind. A graph that has to
  be built from scratch (first start without a saved file, or after a forget) is built in the
  background, in chunks, while searches are answered by the exact scan (at 1 M x 128-d a
  build takes minutes on 2 cores; searches must not wait for it). Candidates are
  re-scored with the exact float32 vectors from SQL, so a deleted (forgotten) embedding can
  never be returned; a forget drops the graph and its file (usearch keeps removed vectors'
  bytes), so erased biometric data does not linger on disk.

Both return `Hit`s: the best-scoring embedding per identity, cosine similarity, best first.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from sqlalchemy import func, select, text

from .models import IdentityEmbedding, Recognizer

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.ext.asyncio import AsyncSession

    from .db import Database

MAX_K = 1000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    identity_id: str
    score: float  # cosine similarity
    embedding_id: int


def as_unit(vec: Sequence[float] | np.ndarray, dim: int | None = None) -> np.ndarray:
    """Validated float32 unit vector (ValueError on wrong size, NaN/inf or zero norm)."""
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    if dim is not None and v.shape[0] != dim:
        raise ValueError(f"embedding has {v.shape[0]} dimensions, the recognizer has {dim}")
    if v.shape[0] == 0 or not np.all(np.isfinite(v)):
        raise ValueError("embedding must be a non-empty vector of finite numbers")
    n = float(np.linalg.norm(v))
    if n < 1e-12:
        raise ValueError("embedding has zero norm")
    return (v / n).astype(np.float32)


def _best_per_identity(rows, q: np.ndarray, k: int, threshold: float | None) -> list[Hit]:
    best: dict[str, Hit] = {}
    for emb_id, ident, vec in rows:
        v = np.asarray(vec, dtype=np.float32)
        s = float(v @ q / max(float(np.linalg.norm(v)), 1e-12))
        if threshold is not None and s < threshold:
            continue
        h = best.get(ident)
        if h is None or s > h.score:
            best[ident] = Hit(ident, s, int(emb_id))
    return sorted(best.values(), key=lambda h: (-h.score, h.identity_id))[:k]


class VectorIndex:
    """Interface; `Repo` calls `ensure_recognizer` inside the registering transaction,
    `added`/`removed` after a commit, and `search` inside a read session (or, where
    `needs_session` is false, with session None, after `recognizer(key)`)."""

    name = "base"
    needs_session = True

    async def recognizer(self, key: tuple[str, str]) -> "RecognizerRef | None":
        raise NotImplementedError

    async def ensure_recognizer(self, session: "AsyncSession", rec: Recognizer) -> None:
        pass

    async def added(self, rec_id: int, ids: Sequence[int], vectors: Sequence[np.ndarray]) -> None:
        pass

    async def removed(self, rec_id: int, ids: Sequence[int]) -> None:
        pass

    async def search(self, session: "AsyncSession", rec: Recognizer, q: np.ndarray, k: int,
                     threshold: float | None) -> list[Hit]:
        raise NotImplementedError

    async def rebuild(self, session: "AsyncSession", rec: Recognizer) -> None:
        pass

    async def suspend(self, session: "AsyncSession", rec: Recognizer) -> None:
        """Stop maintaining the recognizer's ANN index row by row (bulk load); searches stay
        correct (exact scan) until `rebuild`."""
        pass

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        await self.flush()


@dataclass(frozen=True)
class RecognizerRef:
    """What a search needs of a recognizer row (recognizers are never deleted or re-sized,
    so this can be cached once read from committed data)."""
    id: int
    dim: int
    generation: int = 0


class PgVectorIndex(VectorIndex):
    """pgvector HNSW. A search is ONE statement on a pooled connection in autocommit (no
    BEGIN/COMMIT, no ORM session, the recognizer's id/dim cached): on a busy 2-core host every
    extra client/server round trip is another chance to lose the CPU for a scheduler slice,
    which is what the p99 was made of. Exact cosine distances of the HNSW candidates come
    from PostgreSQL itself (the stored float32 vectors), so nothing is re-scored client-side."""

    name = "pgvector-hnsw"
    #: Repo.search may call `search(None, ...)`: this index opens its own connection.
    needs_session = False

    def __init__(self, db: "Database | None" = None, ef_search: int | None = None, m: int = 16,
                 ef_construction: int = 64):
        from .db import PG_EF_SEARCH

        self.db = db
        self.ef_search = int(PG_EF_SEARCH if ef_search is None else ef_search)
        self.m = int(m)
        self.ef_construction = int(ef_construction)
        self._recs: dict[tuple[str, str], RecognizerRef] = {}
        self._sql: dict[tuple[int, int, int], str] = {}

    @staticmethod
    def index_name(rec_id: int) -> str:
        return f"ix_emb_hnsw_r{int(rec_id)}"

    async def ensure_recognizer(self, session, rec) -> None:
        rid, dim = int(rec.id), int(rec.dim)
        await session.execute(text(
            f"CREATE INDEX IF NOT EXISTS {self.index_name(rid)} ON identity_embeddings "
            f"USING hnsw ((embedding::vector({dim})) vector_cosine_ops) "
            f"WITH (m = {self.m}, ef_construction = {self.ef_construction}) "
            f"WHERE recognizer_id = {rid}"
        ))

    async def recognizer(self, key: tuple[str, str]) -> RecognizerRef | None:
        """The recognizer's id and dim (cached; None, not cached, when it does not exist)."""
        ref = self._recs.get(key)
        if ref is None:
            async with self.db.sessions() as s:
                row = (await s.execute(select(Recognizer.id, Recognizer.dim)
                                       .where(Recognizer.name == key[0],
                                              Recognizer.version == key[1]))).first()
            if row is None:
                return None
            ref = self._recs[key] = RecognizerRef(int(row.id), int(row.dim))
        return ref

    def _query(self, rid: int, dim: int, fetch: int) -> str:
        key = (rid, dim, fetch)
        sql = self._sql.get(key)
        if sql is None:
            # Literal dim and recognizer id: the planner only uses the partial HNSW index when
            # the expression and the predicate match it textually. The query vector travels
            # as a binary float4[] (no 128-float text to format and parse).
            sql = self._sql[key] = (
                f"SELECT id, identity_id, (embedding::vector({dim})) <=> $1::real[]::vector({dim}) "
                f"FROM identity_embeddings WHERE recognizer_id = {rid} "
                f"ORDER BY (embedding::vector({dim})) <=> $1::real[]::vector({dim}) LIMIT {fetch}")
        return sql

    async def search(self, session, rec, q, k, threshold) -> list[Hit]:
        rid, dim = int(rec.id), int(rec.dim)
        fetch = min(max(4 * k, 40), MAX_K * 4)
        sql = self._query(rid, dim, fetch)
        qlist = np.asarray(q, dtype=np.float32).tolist()
        if session is None:
            # A pooled connection, used through asyncpg directly: one round trip, autocommit
            # (a single SELECT sees one snapshot anyway), asyncpg's prepared-statement cache.
            async with self.db.engine.connect() as c:
                raw = (await c.get_raw_connection()).driver_connection
                if fetch > self.ef_search:  # connections start with ef_search = self.ef_search
                    async with raw.transaction(readonly=True):
                        await raw.execute(f"SET LOCAL hnsw.ef_search = {int(fetch)}")
                        rows = await raw.fetch(sql, qlist)
                else:
                    rows = await raw.fetch(sql, qlist)
        else:  # inside the caller's transaction
            conn = await session.connection()
            if fetch > self.ef_search:
                await conn.execute(text(f"SET LOCAL hnsw.ef_search = {int(fetch)}"))
            rows = (await conn.exec_driver_sql(sql, (qlist,))).all()
        best: dict[str, Hit] = {}
        for emb_id, ident, dist in rows:
            sc = 1.0 - float(dist)
            if threshold is not None and sc < threshold:
                continue
            h = best.get(ident)
            if h is None or sc > h.score:
                best[ident] = Hit(ident, sc, int(emb_id))
        return sorted(best.values(), key=lambda h: (-h.score, h.identity_id))[:k]

    async def rebuild(self, session, rec) -> None:
        """Drop and re-create the recognizer's HNSW index (after a bulk load: building it in
        one go is an order of magnitude faster than maintaining it row by row)."""
        await session.execute(text(f"DROP INDEX IF EXISTS {self.index_name(int(rec.id))}"))
        # the graph of 1 M 128-d vectors is ~1 GB: a build that does not fit in
        # maintenance_work_mem spills and slows down by an order of magnitude
        await session.execute(text("SET LOCAL maintenance_work_mem = '1536MB'"))
        await self.ensure_recognizer(session, rec)

    async def suspend(self, session, rec) -> None:
        await session.execute(text(f"DROP INDEX IF EXISTS {self.index_name(int(rec.id))}"))


def _pg_vec(v) -> np.ndarray:
    if isinstance(v, str):
        return np.asarray(json.loads(v), dtype=np.float32)
    if hasattr(v, "to_numpy"):
        return v.to_numpy().astype(np.float32)
    return np.asarray(v, dtype=np.float32)


class _Graph:
    """One recognizer's in-memory ANN structure (usearch HNSW, or exact numpy)."""

    def __init__(self, dim: int, use_usearch: bool, dtype: str, expansion: int):
        self.dim = dim
        self.generation = -1
        self.max_id = 0
        self.count = 0
        self.dirty = False
        self.usearch = None
        if use_usearch:
            from usearch.index import Index

            self.usearch = Index(ndim=dim, metric="cos", dtype=dtype, connectivity=16,
                                 expansion_add=128, expansion_search=expansion)
        else:
            self.keys = np.zeros(0, dtype=np.int64)
            self.mat = np.zeros((0, dim), dtype=np.float32)
            self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        # searches read the exact arrays in worker threads while the event loop adds to them
        # (and a background build snapshots them): keys and mat change together, under this
        self._mu = threading.RLock()

    def _consolidate(self) -> None:
        with self._mu:
            if self.usearch is None and self._pending:
                keys = np.concatenate([self.keys] + [k for k, _ in self._pending])
                mat = np.concatenate([self.mat] + [m for _, m in self._pending])
                self.keys, self.mat, self._pending = keys, mat, []

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of an exact graph, consistent with each other. Never written into
        afterwards (changes replace the arrays), so they can be used without a copy."""
        with self._mu:
            self._consolidate()
            return self.keys, self.mat

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if self.usearch is not None:
            self.usearch.add(ids.astype(np.uint64), vecs.astype(np.float32),
                             threads=0 if len(ids) > 1000 else 1)
        else:  # appended lazily: one concatenate per search, not per insert
            with self._mu:
                self._pending.append((ids.astype(np.int64), vecs.astype(np.float32)))
        self.max_id = max(self.max_id, int(ids.max()))
        self.count += len(ids)
        self.dirty = True

    def remove(self, ids: Sequence[int]) -> None:
        ids = np.asarray(list(ids), dtype=np.int64)
        if ids.size == 0:
            return
        if self.usearch is not None:
            present = [i for i in ids if self.usearch.contains(int(i))]
            if present:
                self.usearch.remove(np.asarray(present, dtype=np.uint64), compact=True)
            self.count -= len(present)
        else:
            with self._mu:
                keys, mat = self.arrays()
                keep = ~np.isin(keys, ids)
                self.count -= int((~keep).sum())
                self.keys, self.mat = keys[keep], mat[keep]
        self.dirty = True

    def candidates(self, q: np.ndarray, n: int) -> list[int]:
        if self.count <= 0:
            return []
        if self.usearch is not None:
            m = self.usearch.search(q, count=min(n, len(self.usearch)))
            return [int(x) for x in m.keys]
        keys, mat = self.arrays()
        s = mat @ q
        n = min(n, s.shape[0])
        if n <= 0:
            return []
        top = np.argpartition(-s, n - 1)[:n]
        return [int(keys[i]) for i in top]


class EmbeddedIndex(VectorIndex):
    name = "numpy-exact / usearch-hnsw"

    #: below this many embeddings per recognizer the exact numpy scan is used (recall 1.0,
    #: no build time, ~15 ms at 100 k x 128-d on 2 busy cores); above it a usearch HNSW graph.
    ANN_THRESHOLD = 200_000
    #: usearch's search breadth: `ops/bench/store --n 1000000 --ef-sweep 200,400,800` measured
    #: recall@10 0.913 / 0.952 / 0.986 / 0.997 at 128 / 200 / 400 / 800, p99 under 10 ms for all
    #: (docs/benchmarks.md); 400 is the knee.
    EXPANSION_SEARCH = 400
    #: build a missing HNSW graph behind the exact scan rather than make searches wait for it
    BACKGROUND_BUILD = True
    #: vectors per build step: how long a cancel (close, forget) may wait for the build thread
    BUILD_CHUNK = 20_000

    def __init__(self, db: "Database", index_dir: Path | None, use_usearch: bool | None = None,
                 dtype: str = "f32", ann_threshold: int | None = None):
        self.db = db
        self.dir = index_dir
        self.ann_threshold = self.ANN_THRESHOLD if ann_threshold is None else int(ann_threshold)
        if use_usearch is None:
            try:
                import usearch.index  # noqa: F401

                use_usearch = True
            except Exception:  # pragma: no cover - stock Python without the wheel
                use_usearch = False
        self.use_usearch = use_usearch
        self.name = "numpy-exact / usearch-hnsw" if use_usearch else "numpy-exact"
        self.dtype = dtype
        self._expansion = self.EXPANSION_SEARCH
        self.graphs: dict[int, _Graph] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        self.background_build = self.BACKGROUND_BUILD
        self._builds: dict[int, asyncio.Task] = {}

    @property
    def expansion_search(self) -> int:
        return self._expansion

    @expansion_search.setter
    def expansion_search(self, ef: int) -> None:
        """Applies to loaded graphs and to graphs built or loaded later."""
        self._expansion = int(ef)
        for g in self.graphs.values():
            if g.usearch is not None:
                g.usearch.expansion_search = self._expansion

    # -- persistence -----------------------------------------------------------------
    def _paths(self, rid: int) -> tuple[Path, Path] | None:
        if self.dir is None or not self.use_usearch:
            return None
        return self.dir / f"r{rid}.usearch", self.dir / f"r{rid}.json"

    def _load(self, rid: int, dim: int, use_usearch: bool) -> _Graph:
        g = _Graph(dim, use_usearch, self.dtype, self._expansion)
        p = self._paths(rid)
        if use_usearch and p is not None and p[0].is_file() and p[1].is_file():
            try:
                meta = json.loads(p[1].read_text())
                if meta.get("dim") == dim and meta.get("dtype") == self.dtype:
                    g.usearch.load(str(p[0]))
                    g.generation = int(meta["generation"])
                    g.max_id = int(meta["max_id"])
                    g.count = len(g.usearch)
            except Exception:
                g = _Graph(dim, self.use_usearch, self.dtype, self._expansion)  # unreadable: rebuild
        if g.usearch is not None:  # a saved graph carries the breadth it was saved with
            g.usearch.expansion_search = self._expansion
        return g

    def _save(self, rid: int, g: _Graph) -> None:
        p = self._paths(rid)
        if p is None or not g.dirty or g.usearch is None:
            return
        from faceprov.config import ensure_private_dir

        ensure_private_dir(p[0].parent)  # embeddings: 0700 when made here, like the database's folder
        tmp = p[0].with_suffix(".usearch.tmp")
        g.usearch.save(str(tmp))
        os.replace(tmp, p[0])
        meta = {"generation": g.generation, "max_id": g.max_id, "count": g.count,
                "dim": g.dim, "dtype": self.dtype}
        tmpm = p[1].with_suffix(".json.tmp")
        tmpm.write_text(json.dumps(meta))
        os.replace(tmpm, p[1])
        g.dirty = False

    async def flush(self) -> None:
        """Persist changed graphs, after catching up with SQL (another process may have
        erased embeddings this process still holds: those must not be written back)."""
        dirty = [rid for rid, g in self.graphs.items() if g.dirty]
        if not dirty:
            return
        async with self.db.sessions() as s:
            async with s.begin():
                for rid in dirty:
                    rec = await s.get(Recognizer, rid)
                    if rec is None:
                        continue
                    g = await self._sync(s, rec)
                    await asyncio.to_thread(self._save, rid, g)

    # -- keeping up with SQL -------------------------------------------------------------
    async def _sync(self, session, rec: Recognizer) -> _Graph:
        rid = int(rec.id)
        lock = self.locks.setdefault(rid, asyncio.Lock())
        async with lock:
            g = self.graphs.get(rid)
            if g is None:
                n = (await session.execute(
                    select(func.count()).select_from(IdentityEmbedding)
                    .where(IdentityEmbedding.recognizer_id == rid))).scalar_one()
                use = self.use_usearch and n >= self.ann_threshold
                g = await asyncio.to_thread(self._load, rid, int(rec.dim), use)
                if g.usearch is not None and g.generation < 0 and self.background_build:
                    g = self._exact_while_building(rid, int(rec.dim))  # no usable saved graph
                self.graphs[rid] = g
            gen = int(rec.generation)  # read by the caller in this same transaction
            if g.generation == gen:
                return g
            # Catch up on rows added since the graph's watermark ...
            await self._add_from_sql(session, g, rid, after=g.max_id)
            n = (await session.execute(select(func.count()).select_from(IdentityEmbedding)
                                       .where(IdentityEmbedding.recognizer_id == rid))).scalar_one()
            if n != g.count:
                # ... rows were deleted elsewhere (forget): rebuild from SQL.
                if g.usearch is not None and self.background_build:
                    g = self._exact_while_building(rid, int(rec.dim))
                else:
                    g = _Graph(int(rec.dim), g.usearch is not None, self.dtype, self._expansion)
                await self._add_from_sql(session, g, rid, after=0)
                self.graphs[rid] = g
            g.generation = gen
            g.dirty = True
            return g

    async def _add_from_sql(self, session, g: _Graph, rid: int, after: int,
                            chunk: int = 20000) -> None:
        last = after
        while True:
            rows = (await session.execute(
                select(IdentityEmbedding.id, IdentityEmbedding.embedding)
                .where(IdentityEmbedding.recognizer_id == rid, IdentityEmbedding.id > last)
                .order_by(IdentityEmbedding.id).limit(chunk))).all()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.stack([r[1] for r in rows]).astype(np.float32)
            await asyncio.to_thread(g.add, ids, vecs)
            last = int(ids[-1])

    # -- background graph builds -------------------------------------------------------------
    def _exact_while_building(self, rid: int, dim: int) -> "_Graph":
        """An exact (numpy) graph to answer with now, and a task that builds the HNSW graph
        from it; the task waits for the recognizer's lock, so it starts from the caught-up
        exact graph (`_sync` fills it from SQL while holding the lock)."""
        g = _Graph(dim, False, self.dtype, self._expansion)
        old = self._builds.pop(rid, None)
        if old is not None:
            old.cancel()
        self._builds[rid] = asyncio.get_running_loop().create_task(self._build(rid, dim, g))
        return g

    async def _build(self, rid: int, dim: int, exact: "_Graph") -> None:
        lock = self.locks.setdefault(rid, asyncio.Lock())
        try:
            async with lock:
                if self.graphs.get(rid) is not exact:
                    return
                keys, mat = exact.arrays()  # a consistent snapshot, no copy
            ug = _Graph(dim, True, self.dtype, self._expansion)
            for i in range(0, len(keys), self.BUILD_CHUNK):
                await asyncio.to_thread(ug.add, keys[i:i + self.BUILD_CHUNK], mat[i:i + self.BUILD_CHUNK])
                if self.graphs.get(rid) is not exact:
                    return  # dropped (forget) or replaced (deleted elsewhere) meanwhile
            async with lock:
                if self.graphs.get(rid) is not exact:
                    return
                now_keys, now_mat = exact.arrays()
                # only additions can have happened meanwhile: every removal replaces `exact`
                newer = now_keys > (int(keys.max()) if len(keys) else 0)
                if newer.any():
                    await asyncio.to_thread(ug.add, now_keys[newer], now_mat[newer])
                ug.generation, ug.max_id, ug.dirty = exact.generation, exact.max_id, True
                self.graphs[rid] = ug
            log.info("vector index r%d: HNSW graph of %d embeddings ready", rid, ug.count)
            await self.flush()  # persist it (after catching up with SQL)
        except Exception:  # (not CancelledError: a BaseException) the exact graph keeps answering; the next cold start tries again
            log.exception("vector index r%d: background HNSW build failed; searches stay exact", rid)
        finally:
            if self._builds.get(rid) is asyncio.current_task():
                self._builds.pop(rid, None)

    async def wait_ready(self) -> None:
        """Wait until no graph is being built (benchmarks, tests; searches never need this)."""
        while self._builds:
            await asyncio.gather(*list(self._builds.values()), return_exceptions=True)

    def building(self) -> list[int]:
        """Recognizer ids whose HNSW graph is being built (answered exactly meanwhile)."""
        return [rid for rid, t in self._builds.items() if not t.done()]

    async def close(self) -> None:
        builds = list(self._builds.values())
        for t in builds:
            t.cancel()  # stops at the next chunk; the exact graph is not persisted
        await asyncio.gather(*builds, return_exceptions=True)
        self._builds.clear()
        await self.flush()

    # -- interface -----------------------------------------------------------------------
    async def added(self, rec_id, ids, vectors) -> None:
        g = self.graphs.get(int(rec_id))
        if g is None or len(ids) == 0:
            return  # first search loads it from SQL
        lock = self.locks.setdefault(int(rec_id), asyncio.Lock())
        async with lock:
            ids_a = np.asarray(list(ids), dtype=np.int64)
            new = ids_a > g.max_id
            if new.all():
                await asyncio.to_thread(g.add, ids_a, np.stack(list(vectors)))
            # generation is re-checked against SQL at the next search

    async def removed(self, rec_id, ids) -> None:
        """Erased embeddings must not linger anywhere: usearch keeps a removed vector's bytes
        (even with compact=True), so the graph is dropped, its file deleted, and the next
        search rebuilds it from SQL."""
        rid = int(rec_id)
        async with self.locks.setdefault(rid, asyncio.Lock()):
            self.graphs.pop(rid, None)
            p = self._paths(rid)
            if p is not None:
                for f in p:
                    f.unlink(missing_ok=True)

    async def rebuild(self, session, rec) -> None:
        await self.removed(int(rec.id), [])  # drop; the next search rebuilds from SQL

    async def search(self, session, rec, q, k, threshold) -> list[Hit]:
        g = await self._sync(session, rec)
        fetch = min(max(4 * k, 40), MAX_K * 4)
        cand = await asyncio.to_thread(g.candidates, q, fetch)
        if not cand:
            return []
        conn = await session.connection()
        rows = (await conn.execute(
            select(IdentityEmbedding.id, IdentityEmbedding.identity_id, IdentityEmbedding.embedding)
            .where(IdentityEmbedding.id.in_(cand)))).all()
        return _best_per_identity(rows, q, k, threshold)


def make_index(db: "Database", index_dir: Path | None = None,
               ef_search: int | None = None) -> VectorIndex:
    """`ef_search`: the ANN search breadth (pgvector's hnsw.ef_search, usearch's
    expansion_search); None = each index's default."""
    if db.backend == "postgresql":
        return PgVectorIndex(db, ef_search=ef_search)
    if index_dir is None:
        from .db import sqlite_path

        p = sqlite_path(db.url)
        index_dir = p.with_name(p.name + ".vectors") if p is not None else None
    idx = EmbeddedIndex(db, index_dir)
    if ef_search is not None:
        idx.expansion_search = int(ef_search)
    return idx
