"""Search at scale: the FAISS layouts of matcher/index.py on synthetic 64-bit codes, and catalog look-ups.

For each size N: N seeded random codes, with near-copies of the query codes planted at Hamming
distance 0..10 (one copy per distance per query). Every layout is built from the same codes in the
same process; the exact flat scan is the baseline, and its results are the truth recall is measured
against. Reported per layout: build time, save and load time, index bytes on disk and RSS growth,
single-query p50/p99 at the engine's default threshold (10 bits inclusive = FAISS radius 11) with
``--threads`` OpenMP threads, batch throughput (batches of ``--batch`` codes, as one photo search
issues) with ``--batch-threads``, recall against the flat scan and recall of the planted copies.

Single queries run with one OpenMP thread (``--threads``), batches and builds with all cores. OpenMP
threads sleep while waiting (OMP_WAIT_POLICY=PASSIVE, as matcher/index.py sets): with spinning threads a
1M IVF build on this shared 2-core machine took 28 s with 2 threads against 1 s with one.

Then (``--catalog-rows``) a real SQLite catalog (matcher.index.catalog's schema) of that many synthetic
items, one entry each, built under ``--work`` (kept and reused between runs): the time to look up
the metadata of a result page (``--page`` entry ids, the query the engine runs per search).

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_search_scale.py --sizes 1e6,1e7,1e8
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as matcher/index.py does; before FAISS loads

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import header  # noqa: E402

from matcher.index.catalog import Catalog  # noqa: E402
from matcher.index.binary import BinaryIndex, choose_layout, ivf_nlist, ivf_nprobe  # noqa: E402
from matcher.engine.api import DEFAULT_THRESHOLD  # noqa: E402

MAX_PLANT_DISTANCE = 10


def rss() -> int:
    """Resident set size of this process, bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def make_codes(n: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(codes, ids, query codes, planted positions): random codes with near-copies of each query planted.

    The copy of query i at distance d sits at planted[i, d]; generated in chunks so 100M codes take 800 MB.
    """
    rng = np.random.default_rng(seed)
    codes = np.empty((n, 8), np.uint8)
    chunk = 1 << 24
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        codes[start : start + m] = np.frombuffer(rng.bytes(m * 8), np.uint8).reshape(m, 8)
    q = np.frombuffer(rng.bytes(queries * 8), np.uint8).reshape(queries, 8).copy()
    nd = MAX_PLANT_DISTANCE + 1
    where = rng.choice(n, queries * nd, replace=False).reshape(queries, nd)
    for i in range(queries):
        bits = np.unpackbits(q[i])
        for d in range(nd):
            b = bits.copy()
            b[rng.choice(64, d, replace=False)] ^= 1
            codes[where[i, d]] = np.packbits(b)
    ids = np.arange(1, n + 1, dtype=np.int64)
    return codes, ids, q, where


def pct(a: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(a), p))


def measure(index: BinaryIndex, q: np.ndarray, t: int, args) -> dict:
    """Latency (one code at a time), throughput (batches) and the results of every query."""
    faiss.omp_set_num_threads(args.threads)
    lat = []
    for x in q[: args.latency_queries]:
        t0 = time.perf_counter()
        index.range_search(x[None], t)
        lat.append(time.perf_counter() - t0)
    faiss.omp_set_num_threads(args.batch_threads)
    index.range_search(q[: args.batch], t)  # warm-up: starts the OpenMP threads
    t0 = time.perf_counter()
    results = []
    for start in range(0, len(q), args.batch):
        results += index.range_search(q[start : start + args.batch], t)
    batch_s = time.perf_counter() - t0
    faiss.omp_set_num_threads(args.threads)
    return {"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "qps": len(q) / batch_s,
            "results": [set(r[0].tolist()) for r in results]}


def run_size(n: int, args) -> list[dict]:
    t = DEFAULT_THRESHOLD
    t0 = time.perf_counter()
    codes, ids, q, where = make_codes(n, args.queries, args.seed)
    print(f"## N = {n:,}: codes generated in {time.perf_counter() - t0:.1f} s", flush=True)
    planted = [set((where[i] + 1).tolist()) for i in range(len(q))]  # ids are positions + 1
    auto, auto_nlist = choose_layout(n)
    layouts = [("flat", 0)]
    for lay in args.layouts.split(","):
        if lay == "ivf":
            layouts.append(("ivf", ivf_nlist(n)))
    rows = []
    truth = None
    faiss.omp_set_num_threads(args.build_threads)
    for layout, nlist in layouts:
        gc.collect()
        r0 = rss()
        t0 = time.perf_counter()
        index = BinaryIndex.build(64, ids, codes, layout=layout, nlist=nlist or None, seed=args.seed)
        build_s = time.perf_counter() - t0
        grown = rss() - r0
        m = measure(index, q, t, args)
        res = m.pop("results")
        if truth is None:
            truth = res
            assert all(p <= r for p, r in zip(planted, truth)), "the flat scan missed a planted copy"
        found = sum(len(a & b) for a, b in zip(res, truth))
        total = sum(len(b) for b in truth)
        planted_found = sum(len(a & p) for a, p in zip(res, planted))
        extra = sum(len(a - b) for a, b in zip(res, truth))
        assert extra == 0, "a result the flat scan does not have"
        path = Path(args.work) / f"bench-{n}-{layout}.faiss"
        faiss.omp_set_num_threads(args.build_threads)
        t0 = time.perf_counter()
        index.save(path, {"bench": True})
        save_s = time.perf_counter() - t0
        nbytes = path.stat().st_size
        del index
        gc.collect()
        t0 = time.perf_counter()
        loaded = BinaryIndex.load(path, 64)
        load_s = time.perf_counter() - t0
        assert len(loaded) == n
        del loaded
        path.unlink()
        gc.collect()
        row = {"n": n, "layout": layout if not nlist else f"ivf {nlist}/{ivf_nprobe(nlist)}",
               "auto": (layout, nlist) == (auto, auto_nlist), "build_s": build_s, "save_s": save_s,
               "load_s": load_s, "bytes": nbytes, "rss": grown, "recall": found / total,
               "planted": planted_found / sum(map(len, planted)), "pairs": total, **m}
        rows.append(row)
        print(f"   {row['layout']:<14} build {build_s:7.1f} s  p50 {row['p50_ms']:8.3f} ms  p99 {row['p99_ms']:8.3f} ms"
              f"  {row['qps']:9.0f} q/s  recall {row['recall']:.4f} (planted {row['planted']:.4f}, {total} pairs)"
              f"  save {save_s:.1f} s load {load_s:.1f} s  {nbytes / n:.1f} B/entry on disk,"
              f" RSS +{grown / 1e6:,.0f} MB", flush=True)
    del codes, ids
    gc.collect()
    return rows


def build_catalog(path: Path, rows: int) -> float:
    """A catalog with ``rows`` synthetic items (one 'full' entry each), through matcher.index.catalog's schema.

    Resumable (1M rows per transaction). Entry codes are random blobs and there are no verification
    thumbnails: 64x64 thumbnails (4 KB each) would make a 100M-row catalog 400 GB.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as ro:
            have = ro.execute("SELECT value FROM meta WHERE key = 'bench_rows'").fetchone()
        if have and int(have[0]) >= rows:
            # built already: opening it writable would run the catalog's upgrades (a scan of every row)
            return 0.0
    Catalog(path, create=True).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -1000000")
    done = int((db.execute("SELECT value FROM meta WHERE key = 'bench_rows'").fetchone() or [0])[0])
    t0 = time.perf_counter()
    step = 1_000_000
    while done < rows:
        m = min(step, rows - done)
        db.execute("BEGIN")
        db.execute(
            "INSERT INTO items (id, dataset, key, url, page_url, owner, license, title, width, height, hash, status,"
            " attempts, added_at, updated_at)"
            " WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x < ?)"
            " SELECT x, 'synthetic', printf('%010d', x), printf('https://img.example.org/%010d.jpg', x),"
            " NULL, printf('user%d', x % 100003), 'CC BY 2.0', printf('photo %d', x), 640, 480,"
            " lower(hex(randomblob(8))), 'ok', 1,"
            " '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00' FROM c",
            (done + 1, done + m),
        )
        db.execute(
            "INSERT INTO entries (id, item_id, kind, code, thumb)"
            " WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x < ?)"
            " SELECT x, x, 'full', randomblob(8), NULL FROM c",
            (done + 1, done + m),
        )
        done += m
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('bench_rows', ?)", (str(done),))
        db.execute("UPDATE meta SET value = ? WHERE key = 'entries_count'", (str(done),))
        db.execute("COMMIT")
        if done % 10_000_000 == 0 or done == rows:
            print(f"   catalog: {done:,} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.perf_counter() - t0


def disk_reads(path: Path, seed: int, n: int = 2000) -> dict:
    """Random 4 KB reads per second at offsets of ``path`` not read before (1 and 16 threads): what a
    first look-up of rows that are not in memory can cost, whatever the database does."""
    from concurrent.futures import ThreadPoolExecutor

    fd = os.open(path, os.O_RDONLY)
    try:
        blocks = os.fstat(fd).st_size // 4096
        rng = np.random.default_rng(seed + 1)
        out = {}
        for threads in (1, 16):
            offs = (rng.integers(0, blocks, n) * 4096).tolist()
            with ThreadPoolExecutor(threads) as pool:
                t0 = time.perf_counter()
                list(pool.map(lambda o: os.pread(fd, 4096, o), offs))
                out[f"iops_{threads}"] = n / (time.perf_counter() - t0)
        return out
    finally:
        os.close(fd)


def run_catalog(args) -> dict:
    rows = int(float(args.catalog_rows))
    path = Path(args.work) / f"catalog-{rows}" / "catalog.sqlite"
    print(f"## catalog: {rows:,} items at {path}", flush=True)
    build_s = build_catalog(path, rows)
    size = sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file())
    cat = Catalog(path, readonly=True)
    rng = np.random.default_rng(args.seed)
    pages = [rng.integers(1, rows + 1, args.page).tolist() for _ in range(args.catalog_pages)]
    out = {"rows": rows, "build_s": build_s, "bytes": size}
    for label in ("first", "again"):  # first: pages never read before in this process; again: the same pages
        lat = []
        for page in pages:
            t0 = time.perf_counter()
            got = cat.items_for_entries(page)
            lat.append(time.perf_counter() - t0)
            assert len(got) == len(set(page))
        out[f"{label}_p50_ms"], out[f"{label}_p99_ms"] = pct(lat, 50) * 1e3, pct(lat, 99) * 1e3
    cat.close()
    out.update(disk_reads(path, args.seed))
    print(f"   the disk under it: random 4 KB reads of the catalog file, {out['iops_1']:,.0f}/s on one thread, "
          f"{out['iops_16']:,.0f}/s on 16 threads (a page of {args.page} ids needs >= {args.page} reads of item "
          f"rows that are not in memory: >= {args.page / out['iops_16'] * 1e3:.1f} ms however they are issued)",
          flush=True)
    print(f"   {size / 1e9:.1f} GB on disk (built in {build_s:.0f} s this run); page of {args.page} ids: "
          f"p50 {out['first_p50_ms']:.2f} ms p99 {out['first_p99_ms']:.2f} ms first read, "
          f"p50 {out['again_p50_ms']:.2f} ms p99 {out['again_p99_ms']:.2f} ms again", flush=True)
    return out


def table(rows: list[dict]) -> str:
    lines = ["| N | layout (lists/probed) | chosen | build s | save s | load s | bytes/entry | RSS MB | "
             "p50 ms | p99 ms | batch q/s | recall vs flat | planted recall | p50 vs flat | q/s vs flat |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["n"]: r for r in rows if r["layout"] == "flat"}
    for r in rows:
        b = base[r["n"]]
        lines.append(
            f"| {r['n']:,} | {r['layout']} | {'yes' if r['auto'] else ''} | {r['build_s']:.1f} | {r['save_s']:.1f} |"
            f" {r['load_s']:.1f} | {r['bytes'] / r['n']:.1f} | {r['rss'] / 1e6:,.0f} | {r['p50_ms']:.3f} |"
            f" {r['p99_ms']:.3f} | {r['qps']:,.0f} | {r['recall']:.4f} | {r['planted']:.4f} |"
            f" {b['p50_ms'] / r['p50_ms']:.1f}x faster | {r['qps'] / b['qps']:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e6,1e7,1e8",
                    help="index sizes, comma-separated (e.g. 3e5,1e6,1e7,1e8); '' for the catalog only")
    ap.add_argument("--layouts", default="ivf", help="layouts besides the flat baseline: 'ivf' or '' (flat only)")
    ap.add_argument("--queries", type=int, default=300, help="query codes (each with 11 planted copies)")
    ap.add_argument("--latency-queries", type=int, default=200, help="of them, searched one at a time")
    ap.add_argument("--batch", type=int, default=150, help="codes per batch (one photo search issues ~150)")
    ap.add_argument("--threads", type=int, default=1, help="OpenMP threads for single-query latency")
    ap.add_argument("--batch-threads", type=int, default=os.cpu_count(), help="OpenMP threads for batches")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count(), help="OpenMP threads for building")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(Path.home() / ".cache/matcher/scale-bench"),
                    help="scratch folder for saved indexes and the catalog (never the repository)")
    ap.add_argument("--catalog-rows", default="0", help="build/reuse a catalog of this many items and time look-ups")
    ap.add_argument("--catalog-pages", type=int, default=300, help="result pages looked up")
    ap.add_argument("--page", type=int, default=50, help="entry ids per result page")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    Path(args.work).mkdir(parents=True, exist_ok=True)
    header("bench_search_scale", sizes=sizes, threshold=f"{DEFAULT_THRESHOLD} bits inclusive (FAISS radius "
           f"{DEFAULT_THRESHOLD + 1})", planted=f"one copy per query at each distance 0..{MAX_PLANT_DISTANCE}",
           queries=args.queries, latency_queries=args.latency_queries, batch=args.batch,
           threads=f"single query {args.threads}, batch {args.batch_threads}, build {args.build_threads}",
           seed=args.seed, work=args.work, catalog_rows=args.catalog_rows, page=args.page,
           omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
           load_average=" ".join(f"{x:.2f}" for x in os.getloadavg()))
    rows = []
    for n in sizes:
        rows += run_size(n, args)
    if rows:
        print()
        print(table(rows))
    if int(float(args.catalog_rows)):
        c = run_catalog(args)
        print()
        print("| catalog items | on disk | page of ids | first read p50 / p99 ms | again p50 / p99 ms |")
        print("|---|---|---|---|---|")
        print(f"| {c['rows']:,} | {c['bytes'] / 1e9:.1f} GB | {args.page} | {c['first_p50_ms']:.2f} / "
              f"{c['first_p99_ms']:.2f} | {c['again_p50_ms']:.2f} / {c['again_p99_ms']:.2f} |")


if __name__ == "__main__":
    main()
