#!/usr/bin/env python3
"""The whole photo check at scale: hash a real photo -> ~160 variant codes -> FAISS candidates -> filter codes
-> catalog -> pixel verification, against indexes of 1M / 10M / 100M entries.

The index of each size is a real part plus a synthetic bulk:

* the real part (built once, ``CACHE/real-...``) is a real index (catalog with thumbnails, FAISS, filter
  codes) of the bench corpus's distractors (benchmarks/get-bench-corpus: ~10,500 real wallpaper crops)
  and seeded copies of the *member* originals (matcher.bench.plant_copies: every transform family);
* the bulk is N seeded uniform random 64-bit codes, each with a uniform random 256-bit filter code, under
  entry ids from 2^24 on (built once per N, without the real part, then joined to it): in FAISS and ``filter.codes`` only, with no catalog row. A bulk entry
  that survives the filter is counted (``filtered``) and costs the catalog read it would cost in a real
  index (the catalog finds no row for it); it cannot reach verification here.

Queries: the member originals (their copies are planted: recall), and non-members (held-out originals,
the corpus's face photos and same-scene shots, none of them indexed: every match is false). Each photo is
hashed, looked up and verified in this process, stage by stage, as ``matcher search`` does per photo.
The first row (``real``) is the real part alone: the baseline of the same run.

Sizes are built once and cached under ``--cache`` (not in the repository): FAISS (IVF, as ``matcher``
lays out that size), ``filter.codes`` and a copy of the real catalog whose entry count names the bulk.

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_photo_check.py \\
        --corpus ~/.cache/matcher/bench-corpus --cache /work/bench-cache --sizes 1e6,1e7
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as matcher/index.py does; before FAISS loads

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import header  # noqa: E402

from matcher.bench.common import DATASET_COPIES, DATASET_DISTRACTORS  # noqa: E402
from matcher.bench.plant import _Capped, plant_copies  # noqa: E402
from matcher.index.filtercodes import FILTER_BYTES, FILTER_FILE, chance_rate  # noqa: E402
from matcher.imaging.images import DEFAULT_LIMITS, iter_image_files  # noqa: E402
from matcher.index import binary  # noqa: E402
from matcher.index.binary import BinaryIndex, ivf_nprobe  # noqa: E402
from matcher.engine.api import DEFAULT_MAX_MOTION, DEFAULT_MIN_SCORE, DEFAULT_THRESHOLD, _candidates, add  # noqa: E402
from matcher.ingest.sources import FolderSource, ManifestSource  # noqa: E402
from matcher.index.store import CATALOG, FAISS, META, IndexStore  # noqa: E402
from matcher.pipeline.photo import HashSpec, query_batch, verify_batch  # noqa: E402

CORPUS = Path(os.environ.get("MATCHER_BENCH_CORPUS", Path.home() / ".cache/matcher/bench-corpus"))


def rss() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


def build_real(corpus: Path, cache: Path, seed: int, max_distractors: int | None, workers: int,
               faces: bool = False) -> Path:
    """The real part: planted copies of the member originals (and, with ``faces``, crops around the faces of
    the corpus's face photos, which are then members too) + the corpus's distractors (cached)."""
    d = cache / f"real-s{seed}-d{max_distractors or 'all'}{'-faces' if faces else ''}"
    if (d / ".complete").exists():
        return d
    if d.exists():
        shutil.rmtree(d)
    t0 = time.perf_counter()
    planting = plant_copies(corpus / "originals", d, seed=seed, workers=workers, log=print,
                            faces=corpus / "faces" if faces else None)
    sources = [ManifestSource(d / "manifest.csv", DATASET_COPIES),
               _Capped(FolderSource(corpus / "distractors", DATASET_DISTRACTORS), max_distractors)]
    add(d / "index", sources, workers=workers)
    truth = {"originals": planting.originals, "held": sorted(planting.held),
             "faces": sorted({src for src, _ in planting.faces}),
             "copies": {cid: row.original for cid, row in planting.rows.items()}}
    (d / "truth.json").write_text(json.dumps(truth))
    (d / "build_s").write_text(f"{time.perf_counter() - t0:.1f}\n")
    (d / ".complete").write_text("")
    return d


def real_entries(index: Path) -> tuple[np.ndarray, np.ndarray]:
    db = sqlite3.connect(f"file:{index / CATALOG}?mode=ro", uri=True)
    rows = db.execute("SELECT id, code FROM entries ORDER BY id").fetchall()
    db.close()
    return (np.array([r[0] for r in rows], np.int64),
            np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(len(rows), 8))


#: Bulk entry ids start here (the real part's ids are far below): the bulk is built without the real part.
BULK_FIRST_ID = 1 << 24


def build_bulk(n: int, cache: Path, seed: int, threads: int = 1) -> Path:
    """``n`` seeded random entries (64-bit codes in an IVF index laid out for ``n``, 256-bit filter codes at
    their ids in a sparse ``filter.codes``), cached. Built with ``threads`` OpenMP threads (the same index
    whatever the count); ``build_cpu_s`` is CPU time (all threads)."""
    d = cache / f"bulk-n{n}-s{seed}"
    if (d / ".complete").exists():
        return d
    tmp = d.with_name(d.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    c0 = time.process_time()
    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng([seed, n])
    codes = np.empty((n, 8), np.uint8)
    chunk = 1 << 22
    with open(tmp / FILTER_FILE, "wb") as f:
        f.seek(BULK_FIRST_ID * FILTER_BYTES)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            codes[start : start + m] = np.frombuffer(rng.bytes(m * 8), np.uint8).reshape(m, 8)
            f.write(rng.bytes(m * FILTER_BYTES))
        os.fsync(f.fileno())
    print(f"# bulk {n:,}: codes generated; building FAISS", flush=True)
    index = BinaryIndex.build(64, np.arange(BULK_FIRST_ID, BULK_FIRST_ID + n, dtype=np.int64), codes, seed=seed)
    del codes
    index.save(tmp / FAISS)
    (tmp / "build_cpu_s").write_text(f"{time.process_time() - c0:.1f}\n")
    (tmp / ".complete").write_text("")
    tmp.rename(d)
    return d


def build_size(real: Path, n: int, cache: Path, seed: int, threads: int = 1) -> tuple[Path, float]:
    """The real part + the bulk of ``n`` entries as one index directory (cached). Returns (dir, bulk CPU s)."""
    bulk = build_bulk(n, cache, seed, threads)
    d = cache / f"n{n}-s{seed}-{real.name}"
    if not (d / ".complete").exists():
        tmp = d.with_name(d.name + ".partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        src = real / "index"
        shutil.copy(src / META, tmp / META)
        shutil.copy(src / CATALOG, tmp / CATALOG)
        ids_r, codes_r = real_entries(src)
        if ids_r.max() >= BULK_FIRST_ID:
            raise SystemExit(f"the real part's entry ids reach {BULK_FIRST_ID}")
        # the bulk's sparse filter file with the real rows written at the start
        subprocess.run(["cp", "--sparse=always", str(bulk / FILTER_FILE), str(tmp / FILTER_FILE)], check=True)
        with open(tmp / FILTER_FILE, "r+b") as f:
            f.write((src / FILTER_FILE).read_bytes())
            os.fsync(f.fileno())
        index = BinaryIndex.load(bulk / FAISS, 64)
        index.add(ids_r, codes_r)
        total = len(index)
        meta = json.loads((tmp / META).read_text())
        db = sqlite3.connect(tmp / CATALOG)
        seq = int(db.execute("SELECT value FROM meta WHERE key = 'entries_seq'").fetchone()[0])
        db.execute("UPDATE meta SET value = ? WHERE key = 'entries_count'", (str(total),))
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('faiss_seq', ?)", (str(seq),))
        db.commit()
        db.close()
        index.save(tmp / FAISS, {"index_id": meta["index_id"], "seq": seq, "count": total})
        del index
        (tmp / ".complete").write_text("")
        tmp.rename(d)
    return d, float((bulk / "build_cpu_s").read_text())


def queries(corpus: Path, truth: dict) -> list[tuple[str, str]]:
    """(path, role): members (originals with planted copies) and non-members (nothing of theirs indexed)."""
    held = set(truth["held"])
    out = [(p, "member" if i not in held else "non-member") for i, p in enumerate(truth["originals"])]
    planted_faces = set(truth.get("faces", []))
    for part in ("faces", "same-scene"):
        if (corpus / part).is_dir():
            out += [(str(p.resolve()), "member" if str(p.resolve()) in planted_faces else "non-member")
                    for p in iter_image_files(corpus / part)]
    return out


def check_photo(store: IndexStore, spec: HashSpec, path: str, copies: dict[str, str], use_filter: bool = True) -> dict:
    """One photo through every stage, timed; what each stage passed on; correct and false matches; the
    filter distance of each correct match (its entry's filter code against the variant that matched)."""
    t0 = time.perf_counter()
    ((status, *rest),) = query_batch(spec, [path])
    fcodes = rest[1].fcodes if status == "ok" else None
    t1 = time.perf_counter()
    if status != "ok":
        return {"error": rest[0]}
    q = rest[1]
    if not use_filter:
        q.fcodes = None
    stages: dict = {}
    items, cands = _candidates(store, q, DEFAULT_THRESHOLD, stages)
    t2 = time.perf_counter()
    outcomes = verify_batch(spec, q.image, q.faces, cands, DEFAULT_MIN_SCORE, DEFAULT_MAX_MOTION) if cands else []
    t3 = time.perf_counter()
    correct, false, fdist = [], [], []
    longs = fcodes
    for item_id, score, _d, variant, kind, detail in outcomes:
        ok = score is not None and score >= DEFAULT_MIN_SCORE and detail.get("motion", 0) <= DEFAULT_MAX_MOTION
        if not ok:
            continue
        item = items[item_id]
        right = item.dataset == DATASET_COPIES and copies.get(item.key) == path
        (correct if right else false).append(item.key)
        if right and longs is not None:
            (eid,) = store.catalog.db.execute("SELECT id FROM entries WHERE item_id = ? AND kind = ?",
                                              (item_id, kind)).fetchone()
            v = next(i for i, x in enumerate(q.variants) if x.name == variant.name)
            fdist.append(int(store.filter.keep(np.array([eid]), longs[v], 256)[1][0]))
    return {"variants": len(q.variants), "hits": stages["hits"], "filtered": stages["filtered"],
            "catalog_rows": stages.get("catalog_rows", 0), "verified": len(cands), "correct": correct,
            "false": false, "fdist": fdist, "filter_radius": stages.get("filter_radius"),
            "t_hash": t1 - t0, "t_lookup": t2 - t1, "t_faiss": stages.get("faiss_s", 0.0),
            "t_filter": stages.get("filter_s", 0.0), "t_catalog": stages.get("catalog_s", 0.0),
            "t_verify": t3 - t2, "t_total": t3 - t0}


def disk(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_blocks * 512 for p in d.iterdir() if p.is_file()}


def run_size(label: str, d: Path, qs: list[tuple[str, str]], copies: dict[str, str], real_n: int,
             use_filter: bool = True) -> dict:
    before = rss()
    t0 = time.perf_counter()
    store = IndexStore.open(d)
    load_s = time.perf_counter() - t0
    after = rss()
    spec = HashSpec.of(store.hasher, store.regions, DEFAULT_LIMITS)
    n = len(store.faiss)
    per = []
    for path, role in qs:
        r = check_photo(store, spec, path, copies, use_filter)
        r["role"], r["path"] = role, path
        per.append(r)
    store.close()
    ok = [r for r in per if "error" not in r]
    member = [r for r in ok if r["role"] == "member"]
    planted = {p: sum(1 for o in copies.values() if o == p) for p, role in qs if role == "member"}
    found = sum(len(set(r["correct"])) for r in member)

    def pct(key: str, q: float) -> float:
        return float(np.percentile([r[key] for r in ok], q)) * 1000

    sizes = disk(d)
    return {
        "label": label, "entries": n, "bulk": n - real_n, "layout": store.faiss.layout, "nlist": store.faiss.nlist,
        "nprobe": ivf_nprobe(store.faiss.nlist) if store.faiss.nlist else 0,
        "filter_radius": next((r["filter_radius"] for r in ok if r["filter_radius"] is not None), None),
        "filter": use_filter, "photos": len(ok), "errors": len(per) - len(ok),
        "p50_ms": pct("t_total", 50), "p95_ms": pct("t_total", 95),
        "nonmember_p50_ms": float(np.percentile([r["t_total"] for r in ok if r["role"] != "member"], 50)) * 1000,
        "member_p50_ms": float(np.percentile([r["t_total"] for r in member], 50)) * 1000,
        "filter_d_correct_max": max((x for r in ok for x in r["fdist"]), default=None),
        "filter_d_correct_p99": float(np.percentile([x for r in ok for x in r["fdist"]], 99)) if any(
            r["fdist"] for r in ok) else None,
        **{f"{k}_p50_ms": pct(f"t_{k}", 50) for k in ("hash", "lookup", "faiss", "filter", "catalog", "verify")},
        "variants_mean": float(np.mean([r["variants"] for r in ok])),
        **{f"{k}_mean": float(np.mean([r[k] for r in ok])) for k in ("hits", "filtered", "catalog_rows", "verified")},
        **{f"nonmember_{k}_mean": float(np.mean([r[k] for r in ok if r["role"] != "member"]))
           for k in ("hits", "filtered", "catalog_rows", "verified")},
        "hits_per_variant_nonmember": float(np.mean([r["hits"] / r["variants"] for r in ok if r["role"] != "member"])),
        "hits_per_variant_computed": (n - real_n) * chance_rate(64, DEFAULT_THRESHOLD),
        "recall": found / max(1, sum(planted.values())), "planted": sum(planted.values()), "found": found,
        "false_matches": sum(len(r["false"]) for r in ok),
        "false_examples": [(Path(r.get("path", "")).name, r["false"][:3]) for r in ok if r["false"]][:5],
        "disk_faiss_per_entry": sizes.get(FAISS, 0) / n, "disk_filter_per_entry": sizes.get(FILTER_FILE, 0) / n,
        "disk_catalog_bytes": sizes.get(CATALOG, 0),
        "rss_load_bytes": after.get("VmRSS", 0) - before.get("VmRSS", 0),
        "rss_anon_after_bytes": after.get("RssAnon", 0), "load_s": load_s,
    }


def nprobe_sweep(d: Path, qs: list[tuple[str, str]], copies: dict[str, str], factors: list[float]) -> list[dict]:
    """FAISS alone on the index at ``d``: per probe factor (lists probed = factor x sqrt(nlist)), the range
    search's time per photo (all its variant codes in one call) and the share of the planted copies' entries
    that some variant of their original reaches within the threshold (all lists probed = exact = 1.0)."""
    store = IndexStore.open(d)
    spec = HashSpec.of(store.hasher, store.regions, DEFAULT_LIMITS)
    db = store.catalog.db
    want: dict[str, set[int]] = {}
    for eid, key in db.execute("SELECT entries.id, items.key FROM entries JOIN items ON items.id = entries.item_id"
                               " WHERE items.dataset = ?", (DATASET_COPIES,)):
        if key in copies:
            want.setdefault(copies[key], set()).add(eid)
    photos = []
    for path, role in qs:
        if role != "member":
            continue
        ((status, *rest),) = query_batch(spec, [path])
        if status == "ok":
            photos.append((rest[1].codes, want.get(path, set())))
    index = store.faiss._index
    nlist = store.faiss.nlist
    out = []
    for f in factors + [None]:
        index.nprobe = nlist if f is None else max(1, min(nlist, round(f * nlist ** 0.5)))
        times, found, total = [], 0, 0
        for codes, entries in photos:
            t0 = time.perf_counter()
            lims, _dist, ids = index.range_search(codes, DEFAULT_THRESHOLD + 1)
            times.append(time.perf_counter() - t0)
            found += len(entries & set(ids.tolist()))
            total += len(entries)
        out.append({"factor": f, "nprobe": int(index.nprobe), "nlist": nlist, "entries": len(store.faiss),
                    "faiss_ms_per_photo_p50": float(np.percentile(times, 50)) * 1000,
                    "codes_per_photo": float(np.mean([len(c) for c, _ in photos])), "copy_entries_reached": found,
                    "copy_entries": total})
        print(json.dumps(out[-1]), flush=True)
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--cache", type=Path, required=True, help="where built indexes are kept (outside the repo)")
    ap.add_argument("--sizes", default="1e6,1e7", help="comma-separated entry counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-distractors", type=int, default=None)
    ap.add_argument("--faces", action="store_true", help="also plant face crops of the corpus's face photos")
    ap.add_argument("--workers", type=int, default=2, help="for building the real part")
    ap.add_argument("--threads", type=int, default=2, help="OpenMP threads for FAISS searches")
    ap.add_argument("--members", type=int, default=None, help="search only the first N member photos (time)")
    ap.add_argument("--nprobe-sweep", help="comma-separated probe factors: FAISS alone on the largest size, then stop")
    ap.add_argument("--large-probe-factor", type=float, default=None,
                    help="lists probed = F x sqrt(nlist) on indexes above 2,048 lists (default: the engine's policy, "
                         "matcher.index.binary.IVF_PROBE_FACTOR_LARGE; 7 was the default before)")
    ap.add_argument("--build-threads", type=int, default=1, help="OpenMP threads for building a bulk's IVF index")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the real part's own rows (with and without the filter): only the sizes asked for")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--bulk-only", action="store_true", help="build the random bulk of each size and stop")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    a = ap.parse_args()
    if not (a.corpus / "originals").is_dir():
        sys.exit(f"no bench corpus at {a.corpus}: run benchmarks/get-bench-corpus")
    sizes = [int(float(s)) for s in a.sizes.split(",") if s.strip()]
    if a.large_probe_factor is not None:
        binary.IVF_PROBE_FACTOR_LARGE = a.large_probe_factor
    header("bench_photo_check", corpus=a.corpus, cache=a.cache, sizes=sizes, seed=a.seed, threads=a.threads,
           threshold=DEFAULT_THRESHOLD, min_score=DEFAULT_MIN_SCORE,
           probe_factors=f"{binary.IVF_PROBE_FACTOR} x sqrt(nlist) up to {binary.IVF_PROBE_SMALL_LISTS} lists, "
                         f"{binary.IVF_PROBE_FACTOR_LARGE} above")
    a.cache.mkdir(parents=True, exist_ok=True)
    if a.bulk_only:
        for n in sizes:
            d = build_bulk(n, a.cache, a.seed, a.build_threads)
            print(f"# bulk {n:,}: {(d / 'build_cpu_s').read_text().strip()} CPU s ({d})", flush=True)
        return
    real = build_real(a.corpus, a.cache, a.seed, a.max_distractors, a.workers, a.faces)
    truth = json.loads((real / "truth.json").read_text())
    real_n = len(real_entries(real / "index")[0])
    print(f"# real part: {real_n:,} entries ({len(truth['copies']):,} planted copies), built in "
          f"{(real / 'build_s').read_text().strip()} s", flush=True)
    built = [("real", real / "index", 0.0)]
    for n in sizes:
        d, s = build_size(real, n, a.cache, a.seed, a.build_threads)
        print(f"# size {n:,}: bulk built in {s:.0f} CPU s ({d})", flush=True)
        built.append((f"{n:,}", d, s))
    if a.build_only:
        return
    faiss.omp_set_num_threads(a.threads)
    qs = queries(a.corpus, truth)
    if a.members is not None:
        members = [q for q in qs if q[1] == "member"][: a.members]
        qs = members + [q for q in qs if q[1] != "member"]
    print(f"# queries: {sum(r == 'member' for _, r in qs)} members, {sum(r != 'member' for _, r in qs)} non-members",
          flush=True)
    if a.nprobe_sweep:
        nprobe_sweep(built[-1][1], qs, truth["copies"], [float(x) for x in a.nprobe_sweep.split(",")])
        return
    rows = []
    if not a.no_baseline:
        rows.append(run_size("real, no filter", real / "index", qs, truth["copies"], real_n, use_filter=False))
        rows[0]["build_s"] = 0.0
        print(json.dumps(rows[0]), flush=True)
    for label, d, s in built[1:] if a.no_baseline else built:
        row = run_size(label, d, qs, truth["copies"], real_n)
        row["build_s"] = s
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("| entries | layout | filter r | p50 ms | p95 ms | non-member / member p50 ms | non-member: FAISS hits "
          "/ after filter / verified | hash / FAISS / filter / catalog / verify p50 ms "
          "| FAISS hits | after filter | catalog rows | verified | recall | false | FAISS+filter B/entry disk "
          "| RSS load |")
    print("|" + "---|" * 16)
    for r in rows:
        print(f"| {r['label']} | {r['layout']} {r['nlist'] or ''}/{r['nprobe'] or ''} | {r['filter_radius']} "
              f"| {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['nonmember_p50_ms']:.0f} / {r['member_p50_ms']:.0f} "
              f"| {r['nonmember_hits_mean']:.2f} / {r['nonmember_filtered_mean']:.3f} / {r['nonmember_verified_mean']:.3f} "
              f"| {r['hash_p50_ms']:.0f} / {r['faiss_p50_ms']:.0f} / "
              f"{r['filter_p50_ms']:.1f} / {r['catalog_p50_ms']:.1f} / {r['verify_p50_ms']:.0f} "
              f"| {r['hits_mean']:.1f} | {r['filtered_mean']:.2f} | {r['catalog_rows_mean']:.2f} "
              f"| {r['verified_mean']:.2f} | {r['recall']:.3f} ({r['found']}/{r['planted']}) | {r['false_matches']} "
              f"| {r['disk_faiss_per_entry']:.1f}+{r['disk_filter_per_entry']:.1f} "
              f"| {r['rss_load_bytes'] / 2**20:.0f} MiB |")
    fd = [r["filter_d_correct_max"] for r in rows if r["filter_d_correct_max"] is not None]
    if fd:
        print(f"\n# filter distance of correct matches (entry vs the variant that matched): max {max(fd)}, "
              f"p99 {max(r['filter_d_correct_p99'] or 0 for r in rows)}; the filter threshold at each size is in "
              f"column 'filter r'")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
