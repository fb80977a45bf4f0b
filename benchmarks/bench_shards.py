#!/usr/bin/env python3
"""The photo check over a sharded index: S shards of N entries, local engine vs a Dask LocalCluster of 2 workers.

Shards (built once, cached under ``--cache``, as benchmarks/bench_photo_check.py builds its sizes):

* shard 0 is bench_photo_check's index of size N: its real part (a real catalog with thumbnails and filter
  codes: the bench corpus's ~10,500 distractors plus seeded copies of the member originals) joined to a bulk
  of N seeded random 64-bit codes with random 256-bit filter codes (FAISS and filter.codes only);
* shards 1..S-1 are bulks of N random entries each (other seeds), as index directories with an empty catalog
  (a bulk entry that survives the filter costs the catalog read a real one would; none can be verified).

Every photo (the member originals, whose copies are planted in shard 0, and non-members: held-out originals,
faces, same-scene shots) goes through the whole check as ``matcher search`` runs it (hash -> ~160 variants ->
every shard's FAISS + filter + catalog -> merge -> verification on the client), with:

* ``single``: shard 0 alone, one index (the baseline of the same run: recall and latency at N entries);
* ``local``: the sharded index, every shard in this process (``--engine local``);
* ``dask``: the sharded index held by a LocalCluster of 2 worker processes (``--engine dask``), codes fanned
  out to every shard, rows merged, verification here.

Per shard: load time and resident memory (the worker's RSS growth when it loads the shard). Per engine: p50/p95
of the whole check, recall of planted copies, false matches.

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_shards.py \\
        --corpus /tmp/billions-corpus --cache /work/bench-cache --shards 4 --per-shard 1e7
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_photo_check import build_bulk, build_real, build_size, queries, rss  # noqa: E402
from common import header  # noqa: E402

from matcher.bench.common import DATASET_COPIES  # noqa: E402
from matcher.engine.api import DEFAULT_MAX_MOTION, DEFAULT_MIN_SCORE, DEFAULT_THRESHOLD, _candidates  # noqa: E402
from matcher.imaging.images import DEFAULT_LIMITS  # noqa: E402
from matcher.index.binary import BinaryIndex  # noqa: E402
from matcher.index.catalog import Catalog  # noqa: E402
from matcher.index.filtercodes import FILTER_FILE  # noqa: E402
from matcher.index.sharded import MANIFEST, write_manifest  # noqa: E402
from matcher.index.store import CATALOG, FAISS, META, IndexStore  # noqa: E402
from matcher.pipeline.photo import HashSpec, query_batch, verify_batch  # noqa: E402


def bulk_shard(n: int, seed: int, cache: Path, meta_from: Path) -> Path:
    """An index directory holding only the bulk of ``n`` random entries of ``seed`` (empty catalog), cached."""
    d = cache / f"shard-bulk-n{n}-s{seed}"
    if (d / ".complete").exists():
        return d
    bulk = build_bulk(n, cache, seed)
    tmp = d.with_name(d.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    meta = json.loads((meta_from / META).read_text())
    meta["index_id"] = uuid.uuid4().hex
    (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    cat = Catalog(tmp / CATALOG, create=True)
    cat.set_meta("entries_count", str(n))
    cat.set_meta("faiss_seq", "0")
    cat.close()
    os.link(bulk / FILTER_FILE, tmp / FILTER_FILE)  # read-only use: the bulk's sparse file, shared
    index = BinaryIndex.load(bulk / FAISS, 64)
    index.save(tmp / FAISS, {"index_id": meta["index_id"], "seq": 0, "count": len(index)})
    del index
    (tmp / ".complete").write_text("")
    tmp.rename(d)
    return d


def sharded_index(first: Path, n: int, shards: int, cache: Path) -> Path:
    """The sharded index: ``first`` (real part + bulk) and ``shards - 1`` bulk shards (cached manifest)."""
    root = cache / f"sharded-S{shards}-n{n}"
    parts = [first] + [bulk_shard(n, 100 + k, cache, first) for k in range(1, shards)]
    if not (root / MANIFEST).exists():
        write_manifest(root, [{"number": k, "path": str(p)} for k, p in enumerate(parts)])
    return root


def check(store, spec: HashSpec, path: str, copies: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    ((status, *rest),) = query_batch(spec, [path])
    if status != "ok":
        return {"error": rest[0]}
    q = rest[1]
    t1 = time.perf_counter()
    stages: dict = {}
    items, cands = _candidates(store, q, DEFAULT_THRESHOLD, stages)
    t2 = time.perf_counter()
    outcomes = verify_batch(spec, q.image, q.faces, cands, DEFAULT_MIN_SCORE, DEFAULT_MAX_MOTION) if cands else []
    t3 = time.perf_counter()
    correct, false = set(), set()
    for item_id, score, _d, _v, _k, detail in outcomes:
        if score is None or score < DEFAULT_MIN_SCORE or detail.get("motion", 0) > DEFAULT_MAX_MOTION:
            continue
        item = items[item_id]
        (correct if item.dataset == DATASET_COPIES and copies.get(item.key) == path else false).add(item.key)
    return {"t_hash": t1 - t0, "t_lookup": t2 - t1, "t_verify": t3 - t2, "t_total": t3 - t0, "correct": correct,
            "false": false, "verified": len(cands), "hits": stages.get("hits", 0),
            "filtered": stages.get("filtered", 0)}


def run(label: str, store, qs, copies: dict[str, str]) -> dict:
    spec = HashSpec.of(store.hasher, store.regions, DEFAULT_LIMITS)
    check(store, spec, qs[0][0], copies)  # warm: first-touch pages of the memory-mapped filter codes
    per = [dict(check(store, spec, p, copies), role=role, path=p) for p, role in qs]
    ok = [r for r in per if "error" not in r]
    planted = sum(1 for p, role in qs if role == "member" for o in copies.values() if o == p)
    found = sum(len(r["correct"]) for r in ok if r["role"] == "member")
    pct = lambda k, q: round(float(np.percentile([r[k] for r in ok], q)) * 1000, 1)
    return {"label": label, "entries": len(store.faiss), "photos": len(ok), "p50_ms": pct("t_total", 50),
            "p95_ms": pct("t_total", 95), "lookup_p50_ms": pct("t_lookup", 50), "lookup_p95_ms": pct("t_lookup", 95),
            "hash_p50_ms": pct("t_hash", 50), "verify_p50_ms": pct("t_verify", 50),
            "recall": round(found / planted, 4) if planted else None, "found": found, "planted": planted,
            "false_matches": sum(len(r["false"]) for r in ok),
            "hits_per_photo": round(float(np.mean([r["hits"] for r in ok])), 1),
            "filtered_per_photo": round(float(np.mean([r["filtered"] for r in ok])), 2),
            "verified_per_photo": round(float(np.mean([r["verified"] for r in ok])), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="where built shards are kept (outside the repo)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--per-shard", type=float, default=1e7, help="random entries per shard")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-photos", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster workers")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    n, S = int(a.per_shard), a.shards
    header("bench_shards", shards=S, per_shard=n, seed=a.seed, workers=a.workers, max_photos=a.max_photos,
           threshold=DEFAULT_THRESHOLD)
    real = build_real(a.corpus, a.cache, a.seed, None, 2)
    first, _ = build_size(real, n, a.cache, a.seed)
    root = sharded_index(first, n, S, a.cache)
    truth = json.loads((real / "truth.json").read_text())
    copies = truth["copies"]
    qs = queries(a.corpus, truth)
    rng = np.random.default_rng(a.seed)
    if len(qs) > a.max_photos:  # every member kept (recall), non-members sampled
        members = [q for q in qs if q[1] == "member"]
        others = [q for q in qs if q[1] != "member"]
        pick = rng.choice(len(others), max(0, a.max_photos - len(members)), replace=False)
        qs = members + [others[i] for i in sorted(pick)]
    rows, shard_rows = [], []

    with IndexStore.open(first) as one:
        rows.append(run("single (shard 0 alone)", one, qs, copies))
    print(json.dumps(rows[-1]), flush=True)

    from matcher.index.sharded import ShardedStore

    before = rss()["VmRSS"]
    t0 = time.perf_counter()
    for k, p in enumerate(json.loads((root / MANIFEST).read_text())["shards"]):
        r0, s0 = rss()["VmRSS"], time.perf_counter()
        IndexStore.open(p["path"]).close()
        shard_rows.append({"shard": k, "entries": p.get("entries"), "local_load_s": round(time.perf_counter() - s0, 2),
                           "disk_bytes": sum(f.stat().st_blocks * 512 for f in Path(p["path"]).iterdir() if f.is_file())})
    with ShardedStore.open(root) as store:
        load = {"local_load_s": round(time.perf_counter() - t0, 2), "local_rss_bytes": rss()["VmRSS"] - before}
        rows.append(run(f"local ({S} shards in-process)", store, qs, copies) | load)
    print(json.dumps(rows[-1]), flush=True)

    import dask
    from distributed import LocalCluster

    from matcher.engine.cluster import open_searchable

    with dask.config.set({"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False}), \
            LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                         memory_limit=0) as lc:
        t0 = time.perf_counter()
        store = open_searchable(root, engine="dask", scheduler=lc.scheduler_address, preload=False)
        try:
            loaded = store.cluster.preload()
            load = {"dask_load_s": round(time.perf_counter() - t0, 2)}
            for r in loaded:
                shard_rows[r["shard"]].update(worker_pid=r["pid"], worker_load_s=round(r["load_s"], 2),
                                              worker_rss_growth_bytes=r["rss_delta"], worker_rss_bytes=r["rss"])
            rows.append(run(f"dask ({S} shards on {a.workers} workers)", store, qs, copies) | load)
        finally:
            store.close()
    print(json.dumps(rows[-1]), flush=True)
    print("\n| engine | entries | photos | p50 ms | p95 ms | lookup p50 / p95 ms | recall | false | verified/photo |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['entries']:,} | {r['photos']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['lookup_p50_ms']} / {r['lookup_p95_ms']} | {r['recall']} ({r['found']}/{r['planted']}) | "
              f"{r['false_matches']} | {r['verified_per_photo']} |")
    print("\n| shard | entries | disk MB | load s (local) | load s (worker) | worker RSS growth MB |")
    print("|---|---|---|---|---|---|")
    for s in shard_rows:
        print(f"| {s['shard']} | {s['entries']:,} | {s['disk_bytes'] / 1e6:,.0f} | {s['local_load_s']} | "
              f"{s.get('worker_load_s')} | {s.get('worker_rss_growth_bytes', 0) / 1e6:,.0f} |")
    if a.out:
        a.out.write_text(json.dumps({"rows": rows, "shards": shard_rows}, indent=2))


if __name__ == "__main__":
    main()
