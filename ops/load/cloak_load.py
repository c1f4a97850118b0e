#!/usr/bin/env python
"""Load benchmark of the HTTP server: POST /v1/cloak with one-face photos at several concurrency
levels, on loopback only, bounded in time. Writes the table between `<!-- load:begin -->` and
`<!-- load:end -->` in docs/benchmarks.md and the raw numbers to docs/results/load.json.

    .venv/bin/python ops/load/cloak_load.py                       # CPU, 1/8/32 clients, 20 s each
    .venv/bin/python ops/load/cloak_load.py --device cuda --model PATH --duration 30
    .venv/bin/python ops/load/cloak_load.py --replicas 1,2 --threads 1 --concurrency 16 --sizes native

`--replicas 1,2` measures each count in turn: that many `faceprov serve` processes (each on its
own port, `--threads` torch threads each) on one PostgreSQL (ops/pg.py), the client spreading
requests over them round-robin, and reports the photos/s of each against one replica.

It starts `faceprov serve` itself (a subprocess on 127.0.0.1, a scratch SQLite database) with
the given cloak model, or with an untrained model of the default architecture when none is
given (the cost of a forward pass does not depend on training). Photos: LFW, one face each.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

import common  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[k]


def resize_all(data: list[bytes], long_side: int) -> list[bytes]:
    """The same photos upscaled so the long side is `long_side` px (JPEG q90): phone-sized uploads
    cost more to decode, detect and encode than LFW's 250 px."""
    import io

    from PIL import Image

    out = []
    for d in data:
        im = Image.open(io.BytesIO(d)).convert("RGB")
        k = long_side / max(im.size)
        im = im.resize((round(im.width * k), round(im.height * k)), Image.LANCZOS)
        b = io.BytesIO()
        im.save(b, "JPEG", quality=90)
        out.append(b.getvalue())
    return out


def photos(n: int) -> list[bytes]:
    from faceprov.config import settings

    root = settings().lfw_root / "images"
    people = sorted(p for p in root.iterdir() if p.is_dir())
    out = []
    for p in people[::37]:
        f = p / f"{p.name}_0001.jpg"
        if f.exists():
            out.append(f.read_bytes())
        if len(out) >= n:
            break
    if not out:
        raise SystemExit(f"no LFW photos under {root} (set FACEPROV_LFW)")
    return out


async def level(urls: list[str], key: str, data: list[bytes], conc: int, duration: float, warmup: int) -> dict:
    import aiohttp

    lat: list[float] = []
    codes: dict[int, int] = {}
    faces = 0
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, headers={"X-API-Key": key}) as s:
        async def one(i: int, record: bool) -> None:
            nonlocal faces
            t0 = time.perf_counter()
            try:
                async with s.post(urls[i % len(urls)] + "/v1/cloak", data=data[i % len(data)]) as r:
                    await r.read()
                    st = r.status
                    nf = int(r.headers.get("X-Faceprov-Faces", "0") or 0)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                st, nf = 599, 0
            if record:
                lat.append(time.perf_counter() - t0)
                codes[st] = codes.get(st, 0) + 1
                if st == 200:
                    faces += nf

        await asyncio.gather(*(one(i, False) for i in range(warmup * len(urls))))
        end = time.perf_counter() + duration
        t_start = time.perf_counter()

        async def client(c: int) -> None:
            i = c
            while time.perf_counter() < end:
                await one(i, True)
                i += conc

        await asyncio.gather(*(client(c) for c in range(conc)))
        wall = time.perf_counter() - t_start
    ok = codes.get(200, 0)
    ok_lat = lat  # every request is counted; errors are reported next to them
    return {"concurrency": conc, "seconds": round(wall, 2), "requests": len(lat), "ok": ok,
            "errors": len(lat) - ok, "status": {str(k): v for k, v in sorted(codes.items())},
            "photos_per_s": round(ok / wall, 3), "faces": faces,
            "p50_s": round(pct(ok_lat, 50), 3), "p99_s": round(pct(ok_lat, 99), 3),
            "max_s": round(max(ok_lat), 3) if ok_lat else None}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc), 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, /proc/stat), 0 elsewhere."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def proc_mem(pid: int) -> dict:
    """VmRSS / VmHWM of a process in MB (Linux /proc), {} elsewhere."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = round(int(v.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def start_servers(n: int, model_dir: Path, db: str, a, tmp: Path) -> list[tuple[subprocess.Popen, str, object]]:
    env = {**os.environ, "FACEPROV_DB": db}
    if a.threads:
        env["FACEPROV_THREADS"] = str(a.threads)
    out = []
    for i in range(n):
        port = free_port()
        log = open(tmp / f"serve{n}-{i}.log", "wb")
        cmd = [sys.executable, "-m", "faceprov.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--model", str(model_dir), "--device", a.device, "--batch-size", str(a.batch_size),
               "--max-wait-ms", str(a.max_wait_ms), "--queue-size", "256", "--rate-limit", "0",
               "--workers", str(a.workers), "--timeout", "120"]
        pre = None
        if a.pin_cores:  # replica i on core i (mod cores): what a `cpu: 1` container limit gives it
            cores = sorted(os.sched_getaffinity(0))
            core = cores[i % len(cores)]
            pre = lambda core=core: os.sched_setaffinity(0, {core})  # noqa: E731
        out.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     preexec_fn=pre),
                    f"http://127.0.0.1:{port}", log))
    return out


def wait_ready(servers, tmp: Path) -> None:
    import requests

    t0 = time.time()
    for proc, url, log in servers:
        while True:
            if proc.poll() is not None:
                raise SystemExit("server exited: " + Path(log.name).read_text()[-2000:])
            try:
                if requests.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() - t0 > 300:
                raise SystemExit("server not ready after 300 s")
            time.sleep(0.5)


def stop_servers(servers) -> None:
    for proc, _, _ in servers:
        proc.terminate()
    for proc, _, log in servers:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="cloak model folder (default: untrained, default architecture)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per level (bounded)")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--replicas", default="1",
                    help="comma-separated replica counts to measure (> 1 or several: on one PostgreSQL)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per server process")
    ap.add_argument("--pin-cores", action="store_true",
                    help="pin replica i to CPU core i (mod cores), one core per replica like a container CPU limit")
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--sizes", default="native,1024",
                    help="photo long sides to test: 'native' (LFW 250x250) and/or pixels, e.g. 1024")
    ap.add_argument("--section", default=None, help="docs section (default: load, or load-replicas)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    a = ap.parse_args()
    levels = [int(x) for x in a.concurrency.split(",")]
    sizes = [x.strip() for x in a.sizes.split(",") if x.strip()]
    counts = [int(x) for x in a.replicas.split(",") if x.strip()]
    if a.duration > 120 or max(levels) > 64 or len(sizes) > 3 or max(counts) > 8:
        raise SystemExit("bounded benchmark: --duration <= 120 s, concurrency <= 64, replicas <= 8")
    section = a.section or ("load-replicas" if counts != [1] else "load")

    import torch

    from faceprov.cloak.model import CloakConfig, CloakModel

    tmp = Path(tempfile.mkdtemp(prefix="faceprov-load-"))
    if a.model is None:
        torch.manual_seed(0)
        m = CloakModel(CloakConfig())
        m.save_pretrained(tmp / "model")
        model_dir, model_desc = tmp / "model", (f"untrained CloakConfig() (width {m.config.width}, "
                                                f"{m.config.size}px, {m.num_parameters() / 1e6:.2f} M params)")
    else:
        model_dir = a.model
        m = CloakModel.from_pretrained(a.model)
        model_desc = f"{a.model.name} (width {m.config.width}, {m.config.size}px)"
    pg_srv = None
    if counts == [1]:
        db, db_desc = f"sqlite:///{tmp / 'load.db'}", "SQLite"
    else:  # replicas share one PostgreSQL, as in production
        import importlib.util

        spec = importlib.util.spec_from_file_location("faceprov_ops_pg", ROOT / "ops" / "pg.py")
        pg = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(pg)
        _, pg_srv = pg.start(tmp / "pg")  # fsync on: the durability a deployment pays for
        db, db_desc = pg.create_database(pg_srv, "load"), "PostgreSQL (ops/pg.py, pgvector)"

    from faceprov.store import db as dbmod
    from faceprov.store.repo import open_repo

    dbmod.upgrade(db)

    async def mk() -> str:
        repo = await open_repo(db)
        try:
            acc = await repo.get_or_create_account("load", "user")
            return await repo.create_api_key(acc["id"])
        finally:
            await repo.db.close()

    key = asyncio.run(mk())
    base = photos(a.photos)
    rows, mem, verify_loaded = [], {}, False
    import requests

    try:
        for n in counts:
            servers = start_servers(n, model_dir, db, a, tmp)
            try:
                wait_ready(servers, tmp)
                time.sleep(2.0)  # let the optional verification models finish loading too
                urls = [u for _, u, _ in servers]
                ready = [proc_mem(p.pid).get("VmRSS") for p, _, _ in servers]
                for size in sizes:
                    data = base if size == "native" else resize_all(base, int(size))
                    label = "250x250 (LFW)" if size == "native" else f"{size} px long side"
                    for c in levels:
                        # CPU actually used while measuring: the servers' own and the machine's
                        # (client, PostgreSQL and anything else included) -- on a 2-core machine
                        # the ceiling for replica scaling is 2 / (cores one replica uses)
                        pids = [p.pid for p, _, _ in servers]
                        s0, m0, t0 = sum(cpu_seconds(q) for q in pids), machine_busy_seconds(), time.perf_counter()
                        r = asyncio.run(level(urls, key, data, c, a.duration, a.warmup))
                        wall = time.perf_counter() - t0
                        r["server_cores"] = round((sum(cpu_seconds(q) for q in pids) - s0) / wall, 2)
                        r["machine_cores_busy"] = round((machine_busy_seconds() - m0) / wall, 2)
                        r["photo"], r["replicas"] = label, n
                        rows.append(r)
                        print(json.dumps(r), flush=True)
                metrics = requests.get(urls[0] + "/metrics", timeout=30).text
                mem[n] = {"ready": ready, "peak": [proc_mem(p.pid).get("VmHWM") for p, _, _ in servers]}
                verify_loaded = bool(requests.get(urls[0] + "/readyz", timeout=30).json()
                                     .get("checks", {}).get("verify", {}).get("ok"))
            finally:
                stop_servers(servers)
    finally:
        if pg_srv is not None:
            pg_srv.cleanup()

    batch = [ln for ln in metrics.splitlines() if ln.startswith(("faceprov_model_batch_faces_sum",
                                                                 "faceprov_model_batch_faces_count"))]
    vals = {ln.split()[0].split("{")[0]: float(ln.split()[-1]) for ln in batch}
    mean_batch = (vals.get("faceprov_model_batch_faces_sum", 0) / vals["faceprov_model_batch_faces_count"]
                  if vals.get("faceprov_model_batch_faces_count") else None)
    cores = os.cpu_count() or 1
    doc = {"when": common.stamp(), "git": common.git_rev(), "machine": common.machine(), "device": a.device,
           "model": model_desc, "batch_size": a.batch_size, "max_wait_ms": a.max_wait_ms, "workers": a.workers,
           "replicas": counts, "threads": a.threads, "pin_cores": a.pin_cores, "database": db_desc,
           "duration_s": a.duration, "photos": len(base), "mean_faces_per_model_call": mean_batch, "levels": rows,
           "load_avg_after": os.getloadavg(), "server_rss_mb": mem, "verification_loaded": verify_loaded}
    cmd = " ".join(sys.argv[1:])
    md = [f"### Server load: POST /v1/cloak, one-face LFW photos, loopback ({a.device})", "",
          f"`.venv/bin/python ops/load/cloak_load.py {cmd}` — {doc['when']}, git {doc['git']}", "",
          f"Machine: {doc['machine']}. Model: {model_desc}. Batch ≤ {a.batch_size} faces, wait ≤ "
          f"{a.max_wait_ms:g} ms, {a.workers} worker process(es) per replica, "
          f"{a.threads or 'default'} torch thread(s) per process"
          + ("; each replica pinned to one CPU core (replica i on core i, as a `cpu: 1` container limit would)"
             if a.pin_cores else "; replicas not pinned (the kernel spreads every thread over all cores)")
          + f"; database {db_desc}; client on the same "
          "machine, spreading requests over the replicas round-robin. Each photo is cloaked, its faces embedded "
          "by the registry recognizers (sface, dlib, faceres), hashed and recorded. "
          "Mean faces per model call: " + (f"{mean_batch:.2f}." if mean_batch else "n/a."), "",
          "*server cores*: CPU seconds the server processes used per second of the level (warm-up included); "
          "*machine busy*: the same for the whole machine (client and database included), of "
          f"{os.cpu_count()} cores.", "",
          "| replicas | photo | clients | photos/s | × one replica | photos/s per core | server cores | machine busy | p50 (s) | p99 (s) | requests | errors | statuses |",
          "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    one = {(r["photo"], r["concurrency"]): r["photos_per_s"] for r in rows if r["replicas"] == counts[0]}
    for r in rows:
        ref = one.get((r["photo"], r["concurrency"]))
        ratio = f"{r['photos_per_s'] / ref:.2f}" if ref else "—"
        md.append(f"| {r['replicas']} | {r['photo']} | {r['concurrency']} | {r['photos_per_s']:.2f} | {ratio} | "
                  f"{r['photos_per_s'] / cores:.2f} | {r.get('server_cores', '—')} | {r.get('machine_cores_busy', '—')} | "
                  f"{r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['requests']} | "
                  f"{r['errors']} | {', '.join(f'{k}: {v}' for k, v in r['status'].items())} |")
    md += ["", "Server memory per process (VmRSS once ready / VmHWM peak, MB; limit 2048): " + "; ".join(
        f"{n} replica(s): {', '.join(str(x) for x in v['ready'])} / {', '.join(str(x) for x in v['peak'])}"
        for n, v in mem.items()) + (" (verification models loaded too)." if verify_loaded else ".")]
    md += ["", f"Load average after the run: {', '.join(f'{x:.1f}' for x in doc['load_avg_after'])} "
               f"({cores} cores; other work on the machine competes with the server)."]
    text = "\n".join(md)
    print(text)
    if not a.no_write:
        common.save_json(section, doc)
        common.write_section(section, text)


if __name__ == "__main__":
    main()
