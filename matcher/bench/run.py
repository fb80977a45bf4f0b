"""``matcher bench``: plant seeded copies of photos in an index, look the photos up, measure what is found.

One run, start to finish, in ``OUT``:

1. **Copies.** Every image under the photos folder is an *original*. The originals are
   split deterministically (seeded): 90% are *members* and get one copy per transform
   (:data:`matcher.imaging.transforms.TRANSFORMS`, or a subset), 10% are *non-members* that get
   no copies and are queried as photos that are not in the dataset. Each copy is made
   with its own generator ``np.random.default_rng([seed, i, j])`` (``i`` = the original's
   position in the sorted list of all originals, ``j`` = the transform's position in
   ``TRANSFORMS``), so a seed reproduces every copy byte for byte whatever the subset.
   Copies go to ``OUT/copies/<transform>/<i>.<ext>``, listed in ``OUT/manifest.csv``
   (``id,path,original,transform,family``, ``id = <transform>/<i>``). Faces (optional: a
   folder with ``boxes.csv`` = ``file,x,y,w,h``) get a ``face_crop`` copy each (family
   ``face``); the query is the full photo.
2. **Index.** ``OUT/index`` is built with :func:`matcher.engine.api.add`: the copies (dataset
   ``copies``, key = id), the distractors (``distractors``, every image under the folder,
   sorted, capped) and the ``b`` halves of same-scene pairs (``same-scene``).
3. **Search.** Members, non-members, face photos and the ``a`` halves of same-scene pairs
   are searched with :func:`matcher.engine.api.search` at ``threshold=SWEEP_MAX``; every
   match then counts at each threshold ``t <= SWEEP_MAX`` by its 64-bit distance. A match
   is correct iff the item is a copy whose ``original`` is the query; every other match
   (a distractor, a same-scene ``b``, a copy of another photo) is a false match.
4. **Baselines** on the same files, brute force: ``imagehash.phash(Image.open(p))`` at
   Hamming <= 10, and PDQ (``pdqhash``) at <= 31, on the raw files as a dedup tool would.
5. **Cost**: entries per image and bytes per image (catalog and index files), query time,
   and the recall of the index's range search against an exact numpy scan of the catalog's codes.

Reports: ``OUT/report.json`` (everything), ``OUT/report.md`` (the table), ``OUT/sweep.png``.
The engine is used only through its public API (``add``, ``search``, ``IndexStore``,
``IndexStore.search_codes`` and SQL on the catalog).
"""

from __future__ import annotations

import csv
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from matcher.imaging import transforms as T
from matcher.engine import api as engine_api
from matcher.engine.api import DEFAULT_THRESHOLD, add, search
from matcher.ingest.sources import FolderSource, ManifestSource, Source
from matcher.index.store import IndexStore
from matcher.bench.common import BenchError, DATASET_COPIES, DATASET_DISTRACTORS, DATASET_SAME_SCENE, FACE_FAMILY, FACE_J, FACE_TRANSFORM, HOLDOUT, Log, PDQ_BASELINE, PHASH_BASELINE, SWEEP_MAX, _baseline_paths, _default_workers, _map, _percentile, _pool, machine_info
from matcher.bench.plant import CopyRow, _Capped, _clear, lookalike_pairs, plant_copies, same_scene_pairs
from matcher.bench.score import Query, Truth, _hamming_matches, score
from matcher.bench.write import summarise

__all__ = ["run_bench"]


def run_bench(
    photos_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    distractors: str | os.PathLike | None = None,
    faces: str | os.PathLike | None = None,
    same_scene: str | os.PathLike | None = None,
    seed: int = 0,
    transforms: Sequence[str] | None = None,
    max_distractors: int | None = None,
    workers: int | None = None,
    holdout: float = HOLDOUT,
    latency_sample: int = 50,
    log: Log | None = None,
    local_features: bool = True,
) -> dict[str, Any]:
    """Run the whole bench; write ``OUT/manifest.csv``, ``OUT/index`` and the copies; return the report.

    The report files (JSON, Markdown, PNG) are written by :func:`write_reports`.
    ``latency_sample``: how many queries are also searched one at a time, in-process, to
    measure the latency of a single photo (p50/p95); 0 skips it.
    """
    # Long on purpose: the stages of the module docstring in order, sharing ~30 values (the planting, the
    # queries, the truth, the timings) that splitting would pass between functions; each stage is a marked
    # block, the stage work lives in plant.py, score.py and write.py.
    log = log or (lambda msg: None)
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    photos_dir = Path(photos_dir).resolve()
    out = Path(out_dir).resolve()
    workers = _default_workers() if workers is None else max(0, int(workers))
    pairs = same_scene_pairs(Path(same_scene).resolve()) if same_scene else []
    if same_scene and not pairs:
        log(f"warning: no NAME-a / NAME-b pairs under {same_scene}")
    if (out / "index").exists():
        _clear(out / "index", "meta.json")

    pool = _pool(workers)
    try:
        # 1-2. copies (and their baseline hashes), one task per photo ----------------------
        planting = plant_copies(photos_dir, out, seed=seed, transforms=transforms, faces=faces, holdout=holdout,
                                log=log, _pool_=pool)
        originals, held, names, face_list = planting.originals, planting.held, planting.names, planting.faces
        rows, base_items, unreadable = planting.rows, planting.baseline, planting.unreadable
        n_hold = len(held)
        timing["copies_s"] = planting.seconds

        # distractors and same-scene b's: the other index contents
        distractor_src = None
        distractor_items: list[tuple[str, str]] = []  # (key, path)
        if distractors:
            distractor_src = _Capped(FolderSource(distractors, DATASET_DISTRACTORS), max_distractors)
            distractor_items = [(it.key, it.path) for it in distractor_src.items()]
        samescene_src = None
        if pairs:
            with open(out / "same-scene.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "path", "pair"])
                for name, a, b in pairs:
                    w.writerow([name, b, a])
            samescene_src = ManifestSource(out / "same-scene.csv", DATASET_SAME_SCENE)

        # queries: members, non-members, faces, same-scene a's (a path is queried once)
        queries: list[Query] = []
        seen: set[str] = set()
        for role, paths in (
            ("member", [p for i, p in enumerate(originals) if i not in held]
             + sorted({r.original for r in rows.values() if r.transform in T.ALPHA_QUERY})),
            ("non-member", [p for i, p in enumerate(originals) if i in held]),
            (FACE_FAMILY, [p for p, _ in face_list]),
            ("same-scene", [a for _, a, _ in pairs]),
        ):
            for p in paths:
                if p not in seen:
                    seen.add(p)
                    queries.append(Query(p, role))

        # baseline hashes of everything that is not a copy
        t0 = time.perf_counter()
        others = [p for _, p in distractor_items] + [b for _, _, b in pairs] + [q.path for q in queries]
        chunks = [others[k : k + 8] for k in range(0, len(others), 8)]
        other_hashes = [h for hs in _map(pool, _baseline_paths, chunks) for h in hs]
        timing["baseline_hash_s"] = time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    nd, ns = len(distractor_items), len(pairs)
    base_distractors = other_hashes[:nd]
    base_samescene = other_hashes[nd : nd + ns]
    base_queries = other_hashes[nd + ns :]

    # 3. index ---------------------------------------------------------------------------
    index_dir = out / "index"
    sources: list[Source] = [ManifestSource(out / "manifest.csv", DATASET_COPIES)]
    if distractor_src is not None:
        sources.append(distractor_src)
    if samescene_src is not None:
        sources.append(samescene_src)
    log(f"indexing {len(rows):,} copies + {nd:,} distractors + {ns:,} same-scene photos into {index_dir}")
    t0 = time.perf_counter()
    stats = add(index_dir, sources, workers=workers, local_features=local_features)
    timing["index_s"] = time.perf_counter() - t0

    lookalikes = lookalike_pairs([q.path for q in queries], [h[1] for h in base_queries])
    truth = Truth(rows, {name: a for name, a, _ in pairs}, lookalikes)
    groups = _groups(rows, names, bool(face_list))
    thresholds = list(range(SWEEP_MAX + 1))

    # 4. search --------------------------------------------------------------------------
    log(f"searching {len(queries):,} photos (threshold {SWEEP_MAX})")
    found: list[tuple[int, str, str, int]] = []
    query_errors: list[dict[str, str]] = []
    query_codes: list[str | None] = [None] * len(queries)
    latencies: list[float] = []
    with IndexStore.open(index_dir) as store:
        t0 = time.perf_counter()
        results = search(store, [q.path for q in queries], threshold=SWEEP_MAX, workers=workers)
        n_results = 0
        for qi, r in enumerate(results):
            n_results += 1
            if qi >= len(queries) or Path(r.query) != Path(queries[qi].path):
                raise BenchError(f"search returned {r.query!r} out of order (expected {queries[qi].path!r})")
            if r.error:
                query_errors.append({"query": r.query, "role": queries[qi].role, "error": r.error})
                continue
            query_codes[qi] = r.hash
            for m in r.matches:
                # a match of the local-feature path does not depend on the 64-bit threshold: found at every one
                d = 0 if m.evidence.get("via") else m.evidence.get("distance", m.distance)
                found.append((qi, m.item.dataset, m.item.key, int(d)))
        search_s = time.perf_counter() - t0
        timing["search_s"] = search_s

        # single-photo latency: a deterministic sample of queries, one search call each, in-process
        if latency_sample and queries:
            pick = sorted(set(np.linspace(0, len(queries) - 1, min(latency_sample, len(queries))).round()
                              .astype(int).tolist()))
            log(f"timing {len(pick)} single-photo searches")
            list(search(store, [queries[pick[0]].path], workers=0))  # warm-up, not counted
            for k in pick:
                t1 = time.perf_counter()
                list(search(store, [queries[k].path], workers=0))
                latencies.append(time.perf_counter() - t1)

        # 5. cost and index recall ----------------------------------------------------------
        cost = _cost(store, index_dir)
        log("checking the index's range search against an exact scan of the catalog's codes")
        t0 = time.perf_counter()
        index_recall = _index_recall(store, query_codes)
        timing["index_recall_s"] = time.perf_counter() - t0
    # on-disk size once the store is closed (SQLite's -shm/-wal files are gone then)
    files = {p.name: p.stat().st_size for p in sorted(index_dir.iterdir()) if p.is_file()}
    cost["index_files"] = files
    cost["index_bytes"] = sum(files.values())
    cost["index_bytes_per_image"] = (round(cost["index_bytes"] / cost["items_hashed"], 1)
                                     if cost["items_hashed"] else None)
    local_bytes = sum(v for k, v in files.items() if k.startswith("local"))
    cost["tiers"] = {
        "global_bytes_per_image": (round((cost["index_bytes"] - local_bytes) / cost["items_hashed"], 1)
                                   if cost["items_hashed"] else None),
        "local_bytes_per_image": (round(local_bytes / cost["items_hashed"], 1)
                                  if cost["items_hashed"] and local_bytes else None),
    }
    if n_results != len(queries):
        raise BenchError(f"search returned {n_results} results for {len(queries)} photos")

    # copies whose own photo the engine refused to hash (e.g. nearly uniform) cannot be found by any threshold:
    # they count as misses; "searchable" is the recall over the others.
    refused = {e["query"] for e in query_errors}
    groups["subset"] = {"searchable": [cid for cid, r in rows.items() if r.original not in refused]}
    engine = score(found, queries, truth, groups, thresholds)

    # 6. baselines -------------------------------------------------------------------------
    labels = ([(DATASET_COPIES, cid) for cid in base_items] + [(DATASET_DISTRACTORS, k) for k, _ in distractor_items]
              + [(DATASET_SAME_SCENE, name) for name, _, _ in pairs])
    all_items = list(base_items.values()) + base_distractors + base_samescene
    baselines = {}
    t0 = time.perf_counter()
    for slot, (bname, thr, label) in enumerate(
        (("phash", PHASH_BASELINE, "imagehash.phash(Image.open(p)), 64-bit, Hamming <= 10"),
         ("pdq", PDQ_BASELINE, "pdqhash.compute(RGB array of Image.open(p)), 256-bit, Hamming <= 31"))
    ):
        icodes = [h[slot] for h in all_items]
        qcodes = [h[slot] for h in base_queries]
        s = score(_hamming_matches(qcodes, icodes, labels, thr), queries, truth, groups, [thr])
        s.pop("_false")
        baselines[bname] = {
            "method": label,
            "threshold": thr,
            "unhashable_items": sum(c is None for c in icodes),
            "unhashable_queries": sum(c is None for c in qcodes),
            "scores": s,
        }
    timing["baseline_search_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - t_start

    n_q = len(queries)
    timing_report = {
        **{k: round(v, 3) for k, v in timing.items()},
        "queries": n_q,
        "search_per_photo_ms": round(search_s / n_q * 1000, 2) if n_q else None,
        "search_photos_per_s": round(n_q / search_s, 1) if search_s > 0 else None,
        "single_photo": {
            "n": len(latencies),
            "workers": 0,
            "threshold": DEFAULT_THRESHOLD,
            "p50_ms": _round(_percentile(latencies, 50), 1000),
            "p95_ms": _round(_percentile(latencies, 95), 1000),
            "max_ms": _round(max(latencies) if latencies else None, 1000),
        },
    }
    false_examples = _false_examples(engine.pop("_false"), queries, rows, DEFAULT_THRESHOLD)
    report = {
        "bench": "matcher bench",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parameters": {
            "photos_dir": str(photos_dir),
            "out": str(out),
            "distractors": str(Path(distractors).resolve()) if distractors else None,
            "faces": str(Path(faces).resolve()) if faces else None,
            "same_scene": str(Path(same_scene).resolve()) if same_scene else None,
            "seed": seed,
            "transforms": names,
            "max_distractors": max_distractors,
            "workers": workers,
            "holdout": holdout,
            "latency_sample": latency_sample,
            "local_features": local_features,
            "default_threshold": DEFAULT_THRESHOLD,
            "engine_settings": engine_settings(),
            "sweep_max": SWEEP_MAX,
            "rng": "np.random.default_rng([seed, i, j]): i = position among sorted originals (faces: row in "
                   f"boxes.csv), j = position in TRANSFORMS (faces: {FACE_J})",
        },
        "machine": machine_info(),
        "counts": {
            "originals": len(originals),
            "members": len(originals) - n_hold,
            "non_members": n_hold,
            "faces": len(face_list),
            "same_scene_pairs": ns,
            "copies": len(rows),
            "distractors": nd,
            "index_items_added": stats.added,
            "index_items_failed": stats.failed,
            "index_failures": dict(stats.failures),
            "queries": n_q,
            "queries_by_role": {r: sum(q.role == r for q in queries) for r in sorted({q.role for q in queries})},
            "copies_of_refused_photos": len(rows) - len(groups["subset"]["searchable"]),
            "lookalike_photo_pairs": len(lookalikes),
        },
        "errors": {"unreadable_originals": unreadable, "query_errors": query_errors,
                   "index_failed_items": cost.pop("failed_items")},
        "targets": {f: T.TARGETS.get(f) for f in groups["family"]},
        "transform_family": {n: (FACE_FAMILY if n == FACE_TRANSFORM else T.TRANSFORMS[n].family)
                             for n in groups["transform"]},
        "engine": engine,
        "baselines": baselines,
        "cost": cost,
        "index_recall": index_recall,
        "timing": timing_report,
        "false_match_examples": false_examples,
    }
    report["summary"] = summarise(report)
    return report


def _round(x: float | None, scale: float = 1.0, nd: int = 2) -> float | None:
    return None if x is None else round(x * scale, nd)


def _groups(rows: dict[str, CopyRow], names: list[str], faces: bool) -> dict[str, dict[str, list[str]]]:
    by_t: dict[str, list[str]] = {n: [] for n in names + ([FACE_TRANSFORM] if faces else [])}
    by_f: dict[str, list[str]] = {}
    for n in by_t:
        by_f.setdefault(FACE_FAMILY if n == FACE_TRANSFORM else T.TRANSFORMS[n].family, [])
    for r in rows.values():
        by_t[r.transform].append(r.id)
        by_f[r.family].append(r.id)
    return {"transform": by_t, "family": by_f}


def _false_examples(false: list, queries: list[Query], rows: dict[str, CopyRow], t: int, limit: int = 200) -> list:
    out = []
    for q, dataset, key, kind, d in sorted(false, key=lambda x: (x[4], x[0], x[1], x[2])):
        if d > t or len(out) >= limit:
            break
        ex = {"query": queries[q].path, "role": queries[q].role, "dataset": dataset, "key": key, "kind": kind,
              "distance": d}
        if dataset == DATASET_COPIES and key in rows:
            ex["copy_of"] = rows[key].original
        out.append(ex)
    return out


def _cost(store: IndexStore, index_dir: Path) -> dict[str, Any]:
    db = store.catalog.db
    hashed = db.execute("SELECT COUNT(*) FROM items WHERE status = 'ok'").fetchone()[0]
    entries = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM entries GROUP BY kind ORDER BY kind").fetchall())
    by_ds = {}
    for ds, n_items, n_ok in db.execute(
        "SELECT dataset, COUNT(*), SUM(status = 'ok') FROM items GROUP BY dataset ORDER BY dataset"
    ):
        by_ds[ds] = {"items": n_items, "hashed": n_ok or 0, "entries": 0}
    for ds, n in db.execute(
        "SELECT items.dataset, COUNT(*) FROM entries JOIN items ON items.id = entries.item_id GROUP BY items.dataset"
    ):
        by_ds.setdefault(ds, {"items": 0, "hashed": 0})["entries"] = n
    failed = [{"dataset": ds, "key": key, "error": err} for ds, key, err in db.execute(
        "SELECT dataset, key, error FROM items WHERE status = 'failed' ORDER BY id LIMIT 200")]
    return {
        "items_hashed": hashed,
        "entries": entries,
        "entries_by_kind": kinds,
        "entries_per_image": round(entries / hashed, 3) if hashed else None,
        "by_dataset": by_ds,
        "hasher": store.hasher.identity(),
        "index_meta": _index_meta(index_dir),
        "failed_items": failed,
    }


def engine_settings() -> dict[str, Any]:
    """The engine's public module-level settings (DEFAULT_THRESHOLD, verification defaults...), whatever they are now."""
    return {k: v for k, v in vars(engine_api).items()
            if k.isupper() and not k.startswith("_") and isinstance(v, (int, float, str, bool))}


def _index_meta(index_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((index_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: v for k, v in meta.items() if k not in ("index_id", "created_at")}


def _index_type(index_dir: Path) -> str:
    import faiss

    idx = faiss.read_index_binary(str(index_dir / "index.faiss"))  # FAISS ignores the store's trailer
    name = type(idx).__name__
    inner = getattr(idx, "index", None)
    if inner is not None:
        name += f"({type(faiss.downcast_IndexBinary(inner)).__name__})"
    return name


def _index_recall(store: IndexStore, query_codes: list[str | None]) -> dict[str, Any]:
    """Recall of ``IndexStore.search_codes`` against an exact numpy scan of every code in the catalog.

    Compared per (query, item) at the default threshold and at SWEEP_MAX, on the query's
    own hash as ``search`` reports it (``QueryResult.hash``).
    """
    try:
        index_type = _index_type(store.root)
    except Exception as e:  # noqa: BLE001 - descriptive only
        index_type = f"unknown ({type(e).__name__}: {e})"
    qs = [(k, bytes.fromhex(h)) for k, h in enumerate(query_codes) if h]
    nbytes = store.hasher.bits // 8
    qs = [(k, c) for k, c in qs if len(c) == nbytes]
    if not qs:
        return {"index_type": index_type, "method": "no query codes", "recall": None}
    try:
        qcodes = np.frombuffer(b"".join(c for _, c in qs), dtype=np.uint8).reshape(len(qs), nbytes)
        exact: dict[tuple[int, int], int] = {}
        words = nbytes // 8 if nbytes % 8 == 0 else None
        qv = qcodes.view(np.uint64) if words else qcodes
        width = words or nbytes
        chunk = max(256, 4_000_000 // max(1, len(qs) * width))
        cur = store.catalog.db.execute("SELECT item_id, code FROM entries ORDER BY id")
        n_entries = 0
        while True:
            batch = cur.fetchmany(chunk)
            if not batch:
                break
            n_entries += len(batch)
            item_ids = np.fromiter((r[0] for r in batch), dtype=np.int64, count=len(batch))
            codes = np.frombuffer(b"".join(r[1] for r in batch), dtype=np.uint8).reshape(len(batch), nbytes)
            cv = codes.view(np.uint64) if words else codes
            d = np.bitwise_count(qv[:, None, :] ^ cv[None, :, :]).sum(axis=2)
            for qi, ei in zip(*np.nonzero(d <= SWEEP_MAX)):
                key = (int(qi), int(item_ids[ei]))
                dd = int(d[qi, ei])
                if key not in exact or dd < exact[key]:
                    exact[key] = dd
        approx: dict[tuple[int, int], int] = {}
        for qi, hits in enumerate(store.search_codes(qcodes, SWEEP_MAX)):
            for item, _kind, dd, _verify in hits:
                approx[(qi, item.id)] = int(dd)
    except Exception as e:  # noqa: BLE001 - the engine's API may have moved
        return {
            "index_type": index_type,
            "recall": 1.0,
            "method": "index is exact (IndexBinaryFlat): 1.0 by construction",
            "why": f"the exact comparison could not run through the public API ({type(e).__name__}: {e})",
        }
    out: dict[str, Any] = {
        "index_type": index_type,
        "method": "IndexStore.search_codes(query codes, t) vs numpy scan of catalog entries.code, per (query, item), "
                  "before verification",
        "queries": len(qs),
        "entries_scanned": n_entries,
    }
    for label, t in (("default", DEFAULT_THRESHOLD), ("sweep_max", SWEEP_MAX)):
        want = {k for k, d in exact.items() if d <= t}
        got = {k for k, d in approx.items() if d <= t}
        out[f"pairs_exact_{label}"] = len(want)
        out[f"recall_{label}"] = (len(want & got) / len(want)) if want else 1.0
        out[f"extra_pairs_{label}"] = len(got - want)
    out["recall"] = out["recall_default"]
    return out


# --- summaries and reports ---------------------------------------------------------------
