"""The engine's public face: build an index from sources, search photos against it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .fetch import FetchSettings
from .images import DEFAULT_LIMITS, Limits, iter_image_files
from .ingest import AddStats, Progress, default_workers, ingest
from .results import Match, QueryResult
from .sources import Source
from .store import IndexStore
from .workers import HashSpec, hash_batch, make_pool

__all__ = ["DEFAULT_THRESHOLD", "DEFAULT_VERIFY_THRESHOLD", "add", "search", "iter_query_files"]

#: Largest 64-bit pHash distance (inclusive) that makes a dataset item a candidate.
#: Chosen from benchmarks/bench_threshold.py: see README "Choosing the thresholds".
DEFAULT_THRESHOLD = 10
#: Largest 256-bit verification distance (inclusive) a candidate must also pass.
DEFAULT_VERIFY_THRESHOLD = 44


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
    verify_threshold: int | None = DEFAULT_VERIFY_THRESHOLD,
    workers: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    batch: int = 64,
) -> Iterator[QueryResult]:
    """Hash each photo and yield its matches (in input order), or the reason it could not be read.

    A dataset item matches when its 64-bit hash is within ``threshold`` and, if the index
    has a verifier and ``verify_threshold`` is not None, its 256-bit verification hash is
    within ``verify_threshold`` too. Both distances are in each match's ``evidence``.
    """
    files = [str(p) for p in iter_query_files(paths)]
    spec = HashSpec.of(store.hasher, store.verifier, limits)
    workers = default_workers() if workers is None else workers
    chunks = [files[i : i + 8] for i in range(0, len(files), 8)]
    pool = make_pool(workers) if workers > 0 and len(files) > 8 else None
    try:
        outcomes = (
            pool.map(hash_batch, [spec] * len(chunks), chunks) if pool else (hash_batch(spec, c) for c in chunks)
        )
        flat = ((f, o) for c, outs in zip(chunks, outcomes) for f, o in zip(c, outs))
        buf: list[tuple[str, tuple]] = []
        for pair in flat:
            buf.append(pair)
            if len(buf) >= batch:
                yield from _lookup(store, buf, threshold, verify_threshold)
                buf = []
        yield from _lookup(store, buf, threshold, verify_threshold)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _hamming(a: bytes, b: bytes) -> int:
    return int.bit_count(int.from_bytes(a, "big") ^ int.from_bytes(b, "big"))


def _lookup(
    store: IndexStore, batch: list[tuple[str, tuple]], threshold: int, verify_threshold: int | None
) -> Iterator[QueryResult]:
    ok = [(f, o[1]) for f, o in batch if o[0] == "ok"]
    found = {}
    if ok:
        codes = np.frombuffer(b"".join(c for _, c in ok), dtype=np.uint8).reshape(len(ok), -1)
        for (f, _), hits in zip(ok, store.search_codes(codes, threshold)):
            found[f] = hits
    for f, o in batch:
        if o[0] != "ok":
            yield QueryResult(query=f, error=o[1])
            continue
        query_verify = o[2]
        matches = []
        for item, kind, d, item_verify in found.get(f, []):
            evidence = {"entry": kind, "distance": d, "threshold": threshold}
            if query_verify is not None and item_verify is not None and verify_threshold is not None:
                vd = _hamming(query_verify, item_verify)
                evidence.update(verify_distance=vd, verify_threshold=verify_threshold,
                                verify_bits=store.verifier.bits)
                if vd > verify_threshold:
                    continue
            matches.append(Match(item, d, evidence))
        yield QueryResult(query=f, matches=matches, hash=o[1].hex())
