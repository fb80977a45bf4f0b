"""Near-duplicate items inside an index: the same photo re-hosted under several URLs, resized,
recompressed, cropped or mirrored copies, within one dataset or (``across_datasets``) between datasets.

Three steps, each reusing what ``search`` uses:

1. **Candidates.** Every live entry of the index is a query: its stored code and, when the entry
   keeps a verification thumbnail, codes of *edits* of that thumbnail (:data:`VARIANTS`: the crops
   :func:`matcher.imaging.regions.query_boxes` lists and the mirror image, 9 codes in all; the pHash of a
   64x64 thumbnail equals the stored code of its region in 39 of the sample's 45 entries and is
   2 bits off in the rest). The queries are range-searched against the FAISS index at
   ``threshold`` in batches; removed items' ids (tombstones) and an item's own entries are
   dropped. A pair of items keeps its nearest tries (at most :data:`MAX_TRIES`).
2. **Verification.** A 64-bit pHash joins different shots of one scene (a stereo pair, two
   cabinets photographed alike), so each candidate pair is confirmed on pixels: the query side's
   thumbnail (mirrored / cropped as its variant says) is aligned to the other entry's thumbnail
   by :func:`matcher.hashing.verify.align` and scored cell by cell (:func:`matcher.hashing.verify.cell_score`);
   the pair needs ``min_score``. Aligning, not just correlating, matters: a 10% crop scores 0.71
   unaligned and 0.98 aligned (sample: ``rehost`` copies), while the two cabinets reach 0.92 and
   the stereo pair 0.76. When both items are local files, a verified pair also gets the
   full-detail check of :mod:`matcher.hashing.detail` (two video frames 1/30 s apart pass the thumbnails
   at 0.98-0.995 and fail it). Entries without thumbnails (an index built without regions) are
   paired by distance alone (``verified_by = "distance"``).
3. **Groups.** Union-find over the verified pairs: a group is a connected component. Chaining
   (A~B and B~C verified, A~C not) is kept, not cut: each link is itself a pixel-verified copy,
   and a chain is the usual shape of a crop of a crop or a copy of a copy. It stays visible:
   each member is reported with the link that joined it (``linked_to``, breadth-first from the
   representative, so ``hops = 1`` means verified directly against the representative) and every
   verified link is listed in the JSON output. The representative is the item with the lowest id
   and gives the group its id: items added later get higher ids, so a group keeps its id when
   the index grows.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Callable, Sequence

import numpy as np

from matcher.hashing.detail import DEFAULT_MAX_MOTION
from matcher.imaging.images import DEFAULT_LIMITS, Limits
from matcher.index.binary import BinaryIndex
from matcher.engine.api import DEFAULT_THRESHOLD
from matcher.imaging.regions import query_boxes
from matcher.index.store import IndexStore
from matcher.hashing.verify import DEFAULT_MIN_SCORE, THUMB
from matcher.pipeline.photo import HashSpec
from matcher.engine.dup_codes import VARIANTS, variant_codes
from matcher.engine.dup_groups import (CSV_COLUMNS, SIGNATURES, DuplicateReport, DuplicateStats, Group, Link, Member,
                                       components, group_json, group_rows, write_csv, write_jsonl)

__all__ = ["DEFAULT_THRESHOLD", "VARIANTS", "MAX_TRIES", "Link", "Member", "Group", "DuplicateStats", "DuplicateReport",
           "find_duplicates", "SIGNATURES", "components", "variant_codes", "verify_pairs", "CSV_COLUMNS", "group_rows", "group_json",
           "write_csv", "write_jsonl"]

#: Tries (entry pair + variant, nearest first) verified per candidate pair before giving up on it.
MAX_TRIES = 4
#: Query entries per FAISS batch (x 9 codes with variants).
BATCH = 2048
#: Candidate pairs per verification task.
VERIFY_CHUNK = 16



# --- catalog reads (the catalog's own tables; read-only) ---------------------------------
def _load_entries(store: IndexStore) -> dict[str, Any]:
    """Every live entry: ids (sorted), item ids, dataset numbers, kind numbers, codes, has-thumbnail."""
    db = store.catalog.db
    nbytes = store.hasher.bits // 8
    datasets: dict[str, int] = {}
    kinds: dict[str, int] = {}
    ids, items, ds, kd, thumbs = [], [], [], [], []
    codes = bytearray()
    for eid, item_id, dataset, kind, code, has_thumb in db.execute(
        "SELECT entries.id, entries.item_id, items.dataset, entries.kind, entries.code, entries.thumb IS NOT NULL"
        " FROM entries JOIN items ON items.id = entries.item_id ORDER BY entries.id"
    ):
        ids.append(eid)
        items.append(item_id)
        ds.append(datasets.setdefault(dataset, len(datasets)))
        kd.append(kinds.setdefault(kind, len(kinds)))
        thumbs.append(has_thumb)
        codes += code
    n = len(ids)
    return {
        "ids": np.array(ids, np.int64), "item": np.array(items, np.int64), "ds": np.array(ds, np.int32),
        "kind": np.array(kd, np.int16), "thumb": np.array(thumbs, bool),
        "codes": np.frombuffer(bytes(codes), np.uint8).reshape(n, nbytes),
        "datasets": list(datasets), "kinds": list(kinds),
    }


def _thumbs(store: IndexStore, entry_ids: Sequence[int]) -> dict[int, bytes | None]:
    out: dict[int, bytes | None] = {}
    ids = [int(i) for i in entry_ids]
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        out.update(store.catalog.db.execute(
            f"SELECT id, thumb FROM entries WHERE id IN ({','.join('?' * len(chunk))})", chunk))
    return out


def _candidates(store: IndexStore, E: dict, query_rows: np.ndarray, index, threshold: int, across: bool,
                variants: bool, stats: DuplicateStats, batch: int, tick: Callable[[int], None]) -> np.ndarray:
    """Every hit of the ``query_rows`` entries (stored codes and thumbnail edits) in ``index`` (a
    :class:`BinaryIndex` over entry ids) on an entry of another item (of the same dataset unless
    ``across``), as an (n, 4) int64 array: query entry row, variant, hit entry row, distance. Rows
    index the arrays of :func:`_load_entries`."""
    found = []
    dead = store.dead
    ids = E["ids"]
    for start in range(0, len(query_rows), batch):
        rows = query_rows[start : start + batch]
        qrow = [rows]
        qvar = [np.zeros(len(rows), np.int64)]
        qcode = [E["codes"][rows]]
        if variants:
            with_thumb = rows[E["thumb"][rows]]
            th = _thumbs(store, ids[with_thumb].tolist()) if len(with_thumb) else {}
            with_thumb = with_thumb[[th.get(int(i)) is not None for i in ids[with_thumb]]]  # none removed since
            if len(with_thumb):
                vc, keep = variant_codes([th[int(i)] for i in ids[with_thumb]], store.hasher.img_size,
                                         store.hasher.hash_size)
                keep[:, 0] = False  # id/full: the stored code (exact) is searched already
                r, v = np.nonzero(keep)
                qrow.append(with_thumb[r])
                qvar.append(v.astype(np.int64))
                qcode.append(vc[r, v])
        qrow_a, qvar_a, qcode_a = np.concatenate(qrow), np.concatenate(qvar), np.concatenate(qcode)
        stats.queries += len(qrow_a)
        lims, dist, hit_ids = index.range_search_arrays(qcode_a, threshold)
        q = np.repeat(np.arange(len(qrow_a)), np.diff(lims))
        keep = np.ones(len(hit_ids), bool)
        if len(dead):  # removed items: their ids stay in FAISS until compaction
            keep &= ~np.isin(hit_ids, dead)
        pos = np.searchsorted(ids, hit_ids)
        pos[pos >= len(ids)] = 0
        keep &= ids[pos] == hit_ids  # in the catalog (FAISS may hold ids a writer removed since)
        src = qrow_a[q]
        keep &= E["item"][pos] != E["item"][src]
        if not across:
            keep &= E["ds"][pos] == E["ds"][src]
        found.append(np.stack([src[keep], qvar_a[q][keep], pos[keep], dist[keep].astype(np.int64)], axis=1))
        stats.hits += int(keep.sum())
        tick(len(rows))
    return np.concatenate(found) if found else np.empty((0, 4), np.int64)


def _pairs(E: dict, hits: np.ndarray) -> list[tuple[int, int, list[tuple[int, int, int, int]]]]:
    """Candidate item pairs ``(a, b, tries)`` with ``a < b``; tries ``(distance, query row, variant, hit row)``,
    nearest first (stored codes before edits), at most MAX_TRIES distinct comparisons."""
    if not len(hits):
        return []
    src, var, pos, d = hits.T
    ia, ib = E["item"][src], E["item"][pos]
    lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
    # the same two stored codes found from both sides are one comparison
    same = var == 0
    s2 = np.where(same, np.minimum(src, pos), src)
    p2 = np.where(same, np.maximum(src, pos), pos)
    order = np.lexsort((p2, s2, var, d, hi, lo))
    out = []
    i, n = 0, len(order)
    while i < n:
        j = i
        a, b = int(lo[order[i]]), int(hi[order[i]])
        tries, seen = [], set()
        while j < n and lo[order[j]] == a and hi[order[j]] == b:
            k = order[j]
            t = (int(s2[k]), int(var[k]), int(p2[k]))
            if t not in seen and len(tries) < MAX_TRIES:
                seen.add(t)
                tries.append((int(d[k]), t[0], t[1], t[2]))
            j += 1
        out.append((a, b, tries))
        i = j
    return out


# --- verification (worker processes) -----------------------------------------------------
def verify_pairs(spec: HashSpec, tasks: list[list[tuple]], min_score: float, max_motion: float | None) -> list[tuple]:
    """Verify candidate pairs on their thumbnails (and, when both are local files, at full detail).

    Each task is one pair's tries, nearest first: ``(variant, query thumbnail, hit thumbnail, query kind,
    hit kind, query (path, hash, face boxes), hit (path, hash, face boxes))``, the query side being the entry whose thumbnail the
    variant edits. Returns per task ``(try index, score, motion, detail)``: the first try scoring
    ``min_score`` (else the best), its full-detail residual motion (None when not measured) and why the
    check did not run (or None). Runs in a worker process (or in-process).
    """
    from PIL import Image

    from matcher.hashing.detail import residual_motion
    from matcher.hashing.verify import align, decode_thumb
    from matcher.pipeline.photo import _build, _pixels, dataset_region

    hasher = _build(spec.hasher)
    boxes = query_boxes()
    out = []
    for tries in tasks:
        best = None
        for n, (variant, qthumb, hthumb, *_rest) in enumerate(tries):
            if qthumb is None or hthumb is None:  # the entry was removed during the run
                continue
            orient, crop = variant.split("/")
            a = decode_thumb(qthumb)
            if orient == "mirror":
                a = np.ascontiguousarray(a[:, ::-1])
            l, t, r, b = boxes[crop]
            score, box = align(Image.fromarray(a, "L"), (l * THUMB, t * THUMB, r * THUMB, b * THUMB),
                               decode_thumb(hthumb))
            if best is None or score > best[1]:
                best = (n, score, box)
            if score >= min_score:
                break
        if best is None:
            out.append((0, 0.0, None, "removed during the run"))
            continue
        n, score, box = best
        motion, detail = None, None
        if score >= min_score and max_motion is not None:
            variant, _, _, qkind, hkind, (qpath, qhash, qfaces), (hpath, hhash, hfaces) = tries[n]
            if not (qpath and hpath and os.path.isfile(qpath) and os.path.isfile(hpath)):
                detail = "not both local files"
            else:
                qr = dataset_region(hasher, qpath, qkind, qhash, spec.limits, qfaces)
                hr = dataset_region(hasher, hpath, hkind, hhash, spec.limits, hfaces)
                if isinstance(qr, str) or isinstance(hr, str):
                    detail = qr if isinstance(qr, str) else hr
                else:
                    if variant.startswith("mirror/"):
                        qr = np.ascontiguousarray(qr[:, ::-1])
                    h, w = qr.shape
                    fx, fy = w / THUMB, h / THUMB  # the aligned box is in thumbnail pixels of the query region
                    region = _pixels(Image.fromarray(qr, "L"), (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy))
                    motion = residual_motion(np.ascontiguousarray(region), hr)
                    if motion is None:
                        detail = "too small or flat to measure motion"
        out.append((n, score, motion, detail))
    return out


def _timed_verify(spec: HashSpec, tasks: list[list[tuple]], min_score: float, max_motion: float | None):
    """:func:`verify_pairs` and the CPU time it took (in the worker process)."""
    t0 = time.process_time()
    out = verify_pairs(spec, tasks, min_score, max_motion)
    return out, time.process_time() - t0


def _min_distance(E: dict, rows_a: np.ndarray, rows_b: np.ndarray) -> int:
    a = np.unpackbits(E["codes"][rows_a], axis=1)
    b = np.unpackbits(E["codes"][rows_b], axis=1)
    return int((a[:, None, :] != b[None, :, :]).sum(axis=2).min())


def _groups(store: IndexStore, E: dict, links: list[Link]) -> list[Group]:
    items = store.catalog.items_by_id(sorted({x for lk in links if lk.verified for x in (lk.a, lk.b)}))
    comps = components([lk for lk in links if lk.a in items and lk.b in items])  # none removed since
    order = np.argsort(E["item"], kind="stable")
    sorted_items = E["item"][order]

    def rows_of(item_id: int) -> np.ndarray:
        lo, hi = np.searchsorted(sorted_items, [item_id, item_id + 1])
        return order[lo:hi]

    pair_distance = {(lk.a, lk.b): lk.distance for lk in links}
    groups = []
    for rep, reached, glinks in comps:
        members = []
        for it, (hops, lk) in reached.items():
            if it == rep:
                dist = 0
            elif (rep, it) in pair_distance:  # rep < it
                dist = pair_distance[(rep, it)]
            else:
                dist = _min_distance(E, rows_of(rep), rows_of(it))
            members.append(Member(items[it], dist, hops, lk))
        groups.append(Group(rep, members, glinks))
    return groups


# --- the whole run -------------------------------------------------------------------------
def find_duplicates(
    store: IndexStore,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    min_score: float = DEFAULT_MIN_SCORE,
    max_motion: float | None = DEFAULT_MAX_MOTION,
    across_datasets: bool = False,
    dataset: str | None = None,
    variants: bool = True,
    workers: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    batch: int = BATCH,
    progress: Callable[[str, int, int], None] | None = None,
) -> DuplicateReport:
    """Groups of near-duplicate items in ``store`` (see the module doc).

    ``across_datasets``: also pair items of different datasets (default: only items of the same
    dataset). ``dataset``: only items of that dataset are searched; within datasets that means its
    groups; across datasets, its items and the items of any dataset that duplicate one of them (pairs
    between two items of other datasets are not searched). ``variants``: also search the mirrored and
    cropped edits of each entry's thumbnail (9 codes per entry instead of 1). ``max_motion``: the
    full-detail check for pairs of local files (None: thumbnails only). ``workers``: verification
    processes (default one per core; 0 = in-process). ``progress(phase, done, total)`` is called as
    the work advances: phase "search" (entries), then "verify" (candidate pairs).
    """
    # Long on purpose: candidates, pairs, verification and groups in their order, with the progress phases
    # between them.
    from matcher.errors import CatalogError
    from matcher.ingest.run import default_workers

    t0 = time.perf_counter()
    stats = DuplicateStats()
    E = _load_entries(store)
    scope = None
    if dataset is not None:
        if dataset not in E["datasets"]:
            known = ", ".join(sorted(E["datasets"])) or "none"
            raise CatalogError(f"no dataset {dataset!r} with hashed items in the index (datasets: {known})")
        scope = E["datasets"].index(dataset)
    query_rows = np.arange(len(E["ids"])) if scope is None else np.nonzero(E["ds"] == scope)[0]
    stats.entries = len(query_rows)
    stats.load_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    variants = variants and store.regions
    searched = [0]
    n_search = len(E["ids"]) if scope is not None and across_datasets else len(query_rows)

    def tick(n: int) -> None:
        searched[0] += n
        if progress:
            progress("search", searched[0], n_search)

    if scope is None:  # every entry against the whole index
        hits = _candidates(store, E, query_rows, store.faiss, threshold, across_datasets, variants, stats, batch, tick)
    else:
        # one dataset's entries: an index of them alone, so that what is searched against them costs what
        # they cost, not what the whole index costs
        own = BinaryIndex.build(store.hasher.bits, E["ids"][query_rows], E["codes"][query_rows])
        if not across_datasets:
            hits = _candidates(store, E, query_rows, own, threshold, False, variants, stats, batch, tick)
        else:
            # its entries against the whole index, and every other entry against its entries: an edit
            # (a crop) finds a copy from the larger side only, which may be either
            others = np.nonzero(E["ds"] != scope)[0]
            hits = np.concatenate([
                _candidates(store, E, query_rows, store.faiss, threshold, True, variants, stats, batch, tick),
                _candidates(store, E, others, own, threshold, True, variants, stats, batch, tick),
            ])
            stats.entries += len(others)
    pairs = _pairs(E, hits)
    stats.pairs = len(pairs)
    stats.search_s = time.perf_counter() - t1

    t2 = time.perf_counter()
    links = _verify(store, E, pairs, min_score, max_motion, workers if workers is not None else default_workers(),
                    limits, stats, progress)
    stats.verify_s = time.perf_counter() - t2
    groups = _groups(store, E, links)
    stats.elapsed = time.perf_counter() - t0
    settings = {"threshold": threshold, "min_score": min_score, "max_motion": max_motion,
                "across_datasets": across_datasets, "dataset": dataset, "variants": variants}
    return DuplicateReport(groups, stats, settings, links)


def _verify(store: IndexStore, E: dict, pairs, min_score: float, max_motion: float | None, workers: int,
            limits: Limits, stats: DuplicateStats, progress=None) -> list[Link]:
    # Long on purpose: one pool loop (submit, harvest, rerun after a dead worker) over shared task state.
    kinds = E["kinds"]
    links: list[Link] = []
    todo: list[tuple[Link, list]] = []
    # item id -> (local path, hash as indexed, stored face boxes: the regions of face entries)
    files: dict[int, tuple[str | None, str | None, list | None]] = {}
    if pairs and max_motion is not None:
        wanted = {x for a, b, _ in pairs for x in (a, b)}
        files = {it.id: (it.path, it.hash, it.extra.get("faces"))
                 for it in store.catalog.items_by_id(sorted(wanted)).values()}
    for a, b, tries in pairs:
        d0, q0, v0, h0 = tries[0]
        qi = int(E["item"][q0])
        link = Link(a, b, d0, varied=qi, variant=VARIANTS[v0])
        link.kind_a, link.kind_b = ((kinds[E["kind"][q0]], kinds[E["kind"][h0]]) if qi == a
                                    else (kinds[E["kind"][h0]], kinds[E["kind"][q0]]))
        links.append(link)
        usable = [t for t in tries if E["thumb"][t[1]] and E["thumb"][t[3]]]
        if not usable:  # no thumbnails on one side: the distance is all there is
            link.verified_by = "distance"
            stats.verified += 1
            stats.distance_only += 1
            continue
        todo.append((link, usable))

    spec = HashSpec.of(store.hasher, store.regions, limits)
    pool = None
    if workers > 0 and len(todo) > VERIFY_CHUNK:
        from matcher.pipeline.pool import make_pool

        pool = make_pool(workers)
    try:
        chunks = [todo[i : i + VERIFY_CHUNK] for i in range(0, len(todo), VERIFY_CHUNK)]
        window: deque = deque()

        def submit(chunk):
            thumbs = _thumbs(store, {E["ids"][r] for _, usable in chunk for t in usable for r in (t[1], t[3])})
            tasks = [[(VARIANTS[v], thumbs.get(int(E["ids"][q])), thumbs.get(int(E["ids"][h])), kinds[E["kind"][q]],
                       kinds[E["kind"][h]], files.get(int(E["item"][q]), (None, None, None)),
                       files.get(int(E["item"][h]), (None, None, None))) for _, q, v, h in usable]
                     for _, usable in chunk]
            if pool is None:
                return chunk, _timed_verify(spec, tasks, min_score, max_motion)
            return chunk, pool.submit(_timed_verify, spec, tasks, min_score, max_motion)

        def collect(entry):
            chunk, res = entry
            res, cpu = res if isinstance(res, tuple) else res.result()
            stats.verify_cpu_s += cpu
            for (link, usable), (n, score, motion, detail) in zip(chunk, res):
                d, q, v, h = usable[n]
                qi = int(E["item"][q])
                link.distance, link.score, link.motion, link.detail = d, score, motion, detail
                link.variant, link.varied = VARIANTS[v], qi
                link.kind_a, link.kind_b = ((kinds[E["kind"][q]], kinds[E["kind"][h]]) if qi == link.a
                                            else (kinds[E["kind"][h]], kinds[E["kind"][q]]))
                if score < min_score:
                    stats.rejected += 1
                elif motion is not None and motion > max_motion:
                    stats.rejected += 1
                    stats.rejected_motion += 1
                    link.detail = f"moved: residual motion {motion:.3f} > {max_motion}"
                else:
                    link.verified_by = "thumbnails+detail" if motion is not None else "thumbnails"
                    stats.verified += 1
            done[0] += len(chunk)
            if progress:
                progress("verify", done[0], len(todo))

        done = [0]
        for chunk in chunks:
            window.append(submit(chunk))
            if len(window) > 2 * max(1, workers):
                collect(window.popleft())
        while window:
            collect(window.popleft())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return links


