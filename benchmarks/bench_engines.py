#!/usr/bin/env python3
"""Ingest engines compared: the local streaming `add`, shards on a local process pool, Dask LocalCluster.

ROWS URL rows (the 32 sample dataset photos, each served under many URLs by a threaded
http.server on 127.0.0.1 in this process), 2 worker processes, each engine run --rounds times,
alternating; prints images/s per run and the median. Needs the `dask` extra for the Dask engine.

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_engines.py [--rows 1280] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, header  # noqa: E402


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        bodies = self.server.bodies  # type: ignore[attr-defined]
        body = bodies[int(self.path.rsplit("/", 1)[1].split(".")[0]) % len(bodies)]
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def run(mode: str, manifest: Path, work: Path, shard_size: int) -> tuple[float, int]:
    from matcher.ingest.fetch import FetchSettings
    from matcher.ingest.sources import ManifestSource

    fetch = FetchSettings(allow_private=True)
    index = work / f"index-{mode}"
    cluster = engine = None
    if mode == "dask":
        from distributed import LocalCluster

        from matcher.ingest.shards import DaskEngine

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        engine = DaskEngine(cluster.scheduler_address)
        engine.client.run(lambda: __import__("matcher.ingest.shards") and None)  # imports before the clock starts
    t = time.monotonic()
    try:
        if mode == "local":
            from matcher.engine.api import add

            stats = add(index, [ManifestSource(manifest)], fetch=fetch, workers=2)
        elif mode == "pool":
            from matcher.ingest.shards import PoolEngine, add_sharded

            with PoolEngine(2) as pool:
                stats = add_sharded(index, [ManifestSource(manifest)], pool, fetch=fetch, shard_size=shard_size)
        else:
            from matcher.ingest.shards import add_sharded

            stats = add_sharded(index, [ManifestSource(manifest)], engine, fetch=fetch, shard_size=shard_size)
        dt = time.monotonic() - t
    finally:
        if engine is not None:
            engine.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(index, ignore_errors=True)
    return dt, stats.added


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1280)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=200)
    ap.add_argument("--engines", default="local,pool,dask")
    a = ap.parse_args()
    engines = a.engines.split(",")
    header("bench_engines", rows=a.rows, rounds=a.rounds, shard_size=a.shard_size, engines=engines, workers=2,
           server="threaded http.server in this process, 127.0.0.1", images="the 32 sample dataset photos")
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.bodies = [p.read_bytes() for p in sorted((ROOT / "sample" / "dataset").iterdir())]  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    rates: dict[str, list[float]] = {e: [] for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.csv"
        with open(manifest, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "url"])
            for i in range(a.rows):
                w.writerow([f"r{i}", f"http://127.0.0.1:{srv.server_address[1]}/img/{i}.jpg"])
        for r in range(a.rounds):
            for e in engines:
                dt, added = run(e, manifest, Path(tmp), a.shard_size)
                rates[e].append(added / dt)
                print(f"round {r + 1} {e:6s} {added} added in {dt:.2f} s: {added / dt:.0f} images/s", flush=True)
    srv.shutdown()
    print()
    for e, v in rates.items():
        print(f"{e:6s} median {statistics.median(v):.0f} images/s ({', '.join(f'{x:.0f}' for x in v)})")


if __name__ == "__main__":
    main()
