"""The engine's public face: build an index from sources, search photos against it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from .detail import DEFAULT_MAX_MOTION, residual_motion

from .fetch import FetchSettings
from .images import DEFAULT_LIMITS, Limits, iter_image_files
from .ingest import AddStats, Progress, default_workers, ingest
from .results import Match, QueryResult
from .sources import Source
from .store import IndexStore
from .regions import query_variants
from .verify import DEFAULT_MIN_SCORE, align, decode_thumb
from .workers import HashSpec, QueryHashes, dataset_region, make_pool, query_batch

__all__ = ["DEFAULT_THRESHOLD", "DEFAULT_MIN_SCORE", "DEFAULT_MAX_MOTION", "MAX_CANDIDATES", "add", "search", "iter_query_files",
           "remove", "compact"]

#: Largest 64-bit pHash distance (inclusive) between a query variant and an index entry that
#: makes the dataset item a candidate. Chosen with benchmarks/bench_recall.py (README).
DEFAULT_THRESHOLD = 10
#: Candidates verified per dataset item (nearest first) before giving up on it.
MAX_CANDIDATES = 6


def add(
    index_dir: str | os.PathLike,
    sources: Sequence[Source],
    *,
    workers: int | None = None,
    fetch: FetchSettings = FetchSettings(),
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> AddStats:
    """Create or extend the index at ``index_dir`` with every item of ``sources``."""
    with IndexStore.open(index_dir, create=True, writable=True) as store:
        return ingest(store, sources, workers=workers, fetch=fetch, limits=limits, progress=progress)


def remove(
    index_dir: str | os.PathLike,
    *,
    dataset: str | None = None,
    keys: Sequence[str] = (),
    urls: Sequence[str] = (),
) -> dict[str, int]:
    """Remove items from the index at ``index_dir`` without rebuilding it (see :meth:`IndexStore.remove_items`).

    Select by ``keys`` or ``urls`` (optionally within ``dataset``), or a whole ``dataset``. Searches stop
    returning them at once; :func:`compact` later drops their ids from FAISS. Raises CatalogError and
    changes nothing when a selector matches no item. A later ``add`` of a source that still lists an
    item adds it back (with new entry ids).
    """
    with IndexStore.open(index_dir, writable=True) as store:
        return store.remove_items(dataset=dataset, keys=keys, urls=urls)


def compact(index_dir: str | os.PathLike) -> dict:
    """Rebuild the FAISS file of ``index_dir`` without removed items' ids, in the layout its size calls for."""
    with IndexStore.open(index_dir, writable=True) as store:
        return store.compact()


def iter_query_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files named directly, and image files found under folders (recursive)."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            yield from iter_image_files(p)
        else:
            yield p


def search(
    store: IndexStore,
    paths: Iterable[str | os.PathLike],
    *,
    threshold: int = DEFAULT_THRESHOLD,
    min_score: float = DEFAULT_MIN_SCORE,
    max_motion: float | None = DEFAULT_MAX_MOTION,
    workers: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    report_rejected: bool = False,
) -> Iterator[QueryResult]:
    """Hash each photo and yield its matches (in input order), or the reason it could not be read.

    Each photo is hashed as many *variants* (8 orientations x likely crops, small rotations,
    crops around faces). Every index entry within ``threshold`` of a variant is a candidate;
    a candidate is reported only when its region of the photo, aligned to the entry's stored
    thumbnail, correlates at ``min_score`` or better (indexes built without thumbnails fall
    back to the hash distance alone). When the dataset image is a local file that still
    hashes as indexed, the match must also pass the full-detail check of :mod:`matcher.detail`:
    residual motion at most ``max_motion`` (another frame of a burst fails it; ``None`` skips
    the check). The evidence of each match says which variant and
    entry matched, the hash distance and the correlation. ``report_rejected`` (for
    benchmarks) also returns candidates that failed verification, with
    ``evidence["verified"] = False``.
    """
    files = [str(p) for p in iter_query_files(paths)]
    spec = HashSpec.of(store.hasher, store.regions, limits)
    workers = default_workers() if workers is None else workers
    chunks = [files[i : i + 4] for i in range(0, len(files), 4)]
    pool = make_pool(workers) if workers > 0 and len(files) > 4 else None
    try:
        outcomes = (
            pool.map(query_batch, [spec] * len(chunks), chunks) if pool else (query_batch(spec, c) for c in chunks)
        )
        for chunk, outs in zip(chunks, outcomes):
            for f, o in zip(chunk, outs):
                if o[0] != "ok":
                    yield QueryResult(query=f, error=o[1])
                    continue
                matches = _matches(store, o[2], threshold, min_score, max_motion, limits, report_rejected)
                yield QueryResult(query=f, matches=matches, hash=o[1].hex())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _pixels(img: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    """Greyscale pixels of ``box`` in ``img``; parts outside the image repeat its edge pixels."""
    a = np.asarray(img if img.mode == "L" else img.convert("L"))
    h, w = a.shape
    l, t, r, b = (round(v) for v in box)
    pl, pt, pr, pb = max(0, -l), max(0, -t), max(0, r - w), max(0, b - h)
    if pl or pt or pr or pb:
        a = np.pad(a, ((pt, pb), (pl, pr)), mode="edge")
    return a[t + pt : b + pt, l + pl : r + pl]


def _detail(store: IndexStore, item, kind: str, region: np.ndarray, limits: Limits) -> tuple[float | None, str | None]:
    """(residual motion, None), or (None, why the full-detail check could not run)."""
    if not item.path or not os.path.isfile(item.path):
        return None, "dataset image not available locally"
    d = dataset_region(store.hasher, item.path, kind, item.hash, limits)
    if isinstance(d, str):
        return None, d
    motion = residual_motion(region, d)
    return (motion, None) if motion is not None else (None, "too small or flat to measure motion")


def _matches(store: IndexStore, q: QueryHashes, threshold: int, min_score: float, max_motion: float | None,
             limits: Limits, report_rejected: bool) -> list[Match]:
    hits = store.search_codes(q.codes, threshold)
    by_item: dict[int, list] = {}
    items = {}
    for variant, row in zip(q.variants, hits):
        for item, kind, d, thumb in row:
            items[item.id] = item
            by_item.setdefault(item.id, []).append((d, variant, kind, thumb))
    if not by_item:
        return []
    sources = None
    out: list[Match] = []
    for item_id, cands in by_item.items():
        cands.sort(key=lambda c: (c[0], "/rot" in c[1].name, c[1].name))
        best = None
        for d, variant, kind, thumb in cands[:MAX_CANDIDATES]:
            if thumb is None:  # an index without thumbnails: the hash distance is all we have
                best = (None, d, variant, kind, None)
                break
            if sources is None:
                sources, _ = query_variants(Image.fromarray(q.image, "L"), q.faces)
            score, box = align(sources[variant.source], variant.box, decode_thumb(thumb),
                               filled_corners=variant.name.endswith(("-black", "-white")))
            if best is None or score > best[0]:
                best = (score, d, variant, kind, box)
            if score >= min_score:
                break
        score, d, variant, kind, box = best
        verified = score is None or score >= min_score
        detail: dict = {}
        if verified and score is not None and max_motion is not None:
            motion, why = _detail(store, items[item_id], kind, _pixels(sources[variant.source], box), limits)
            if motion is None:
                detail = {"detail": why}
            else:
                detail = {"motion": round(motion, 3), "max_motion": max_motion}
                verified = motion <= max_motion
        if not verified and not report_rejected:
            continue
        evidence = {"variant": variant.name, "entry": kind, "distance": d, "threshold": threshold}
        if score is not None:
            evidence.update(score=round(score, 4), min_score=min_score)
        evidence.update(detail)
        if report_rejected:
            evidence["verified"] = verified
        out.append(Match(items[item_id], d, evidence))
    out.sort(key=lambda m: (m.distance, -m.evidence.get("score", 0), m.item.id))
    return out
