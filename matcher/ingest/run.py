"""Ingest: read sources, download what is remote, hash in worker processes, store in batches.

Resumable by construction: items already hashed (same dataset + key) are skipped,
failed ones are retried, and the catalog commits each batch atomically, so a killed
``add`` loses at most the batch in flight and a rerun picks up where it stopped.
Every bad input becomes a per-item failure record with a reason; nothing stops the run.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from matcher.index.catalog import ItemRecord
from matcher.ingest.policy import FetchSettings
from matcher.provenance.flickr import flickr_details, identity_of
from matcher.imaging.facebox import normalise
from matcher.imaging.images import DEFAULT_LIMITS, Limits
from matcher.ingest.sources import Source, SourceItem
from matcher.index.store import IndexStore
from matcher.pipeline.photo import HashSpec, index_batch
from matcher.pipeline.pool import Batches

__all__ = ["AddStats", "ingest", "default_workers", "outcome_record", "failure_record", "item_extra", "hash_payload",
           "check_body"]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class AddStats:
    added: int = 0
    failed: int = 0
    skipped: int = 0
    failures: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    # sharded engines only (matcher.ingest.shards): shards applied to the index, taken from an earlier
    # interrupted run's results instead of recomputed, in flight, and task attempts that were retried
    shards_done: int = 0
    shards_reused: int = 0
    shards_in_flight: int = 0
    shard_retries: int = 0
    # set by matcher.matcher.add: the index this add created was removed again (nothing could be stored)
    index_removed: bool = False

    @property
    def done(self) -> int:
        return self.added + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        e = self.elapsed
        return self.done / e if e > 0 else 0.0


Progress = Callable[[AddStats], None]


def item_extra(item: SourceItem, size: tuple[int, int] | None = None) -> dict:
    """The extra metadata stored with an item: its ``extra``, plus its face boxes normalised to fractions of
    the image (``faces``, :func:`matcher.imaging.facebox.normalise`; ``size`` is the decoded image's). Pixel boxes
    of an image never decoded, with no reference size, are kept as given (``faces_px``). What its URLs
    say about the Flickr photo beyond id and owner (farm, server, secrets, extension, album, group:
    :func:`matcher.provenance.flickr.flickr_details`) is kept as ``flickr``."""
    extra = item.extra
    details = flickr_details(item.fields, item.extra)
    if details and "flickr" not in extra:
        extra = {**extra, "flickr": details}
    if item.faces is None:
        return extra
    faces = normalise(item.faces, size)
    if faces is None:
        return {**extra, "faces_px": [list(b[:4]) for b in item.faces[0]]}
    return {**extra, "faces": faces}


def hash_payload(item: SourceItem, src):
    """What :func:`matcher.pipeline.photo.index_batch` takes for ``item``: its path or body, with its face boxes if any."""
    return src if item.faces is None else (src, item.faces)


def check_body(expected: str | None, body: bytes) -> str | None:
    """Why a downloaded image is not the one the dataset lists (the SHA-256 it publishes, ``expected``,
    differs), or None. Such an image is not hashed: it is recorded as failed, kind ``sha256``."""
    if expected is None:
        return None
    got = hashlib.sha256(body).hexdigest()
    if got == expected:
        return None
    return (f"the image now at this URL is not the one the dataset lists: SHA-256 {got[:16]}..., "
            f"the dataset's {expected[:16]}...")


def failure_record(item: SourceItem, reason: str, kind: str) -> ItemRecord:
    """The catalog record of an item that could not be hashed (shared by every engine)."""
    return ItemRecord(item.dataset, item.key, fields=item.fields, error=reason, error_kind=kind, extra=item_extra(item),
                      identity=identity_of(item.fields, item.extra))


def outcome_record(item: SourceItem, out: tuple) -> ItemRecord:
    """The catalog record of a :func:`matcher.pipeline.photo.index_batch` outcome, the same for every engine."""
    if out[0] == "ok":
        _, code, entries, w, h, _fmt, *local = out
        return ItemRecord(item.dataset, item.key, fields=item.fields, width=w, height=h, hash_hex=code.hex(),
                          codes=entries, extra=item_extra(item, (w, h)), identity=identity_of(item.fields, item.extra),
                          local=local[0] if local else None)
    return failure_record(item, out[1], out[2])


class _Pipeline:
    def __init__(self, store: IndexStore, workers: int, limits: Limits, progress: Progress | None,
                 stats: AddStats, commit_every: int, screen=None, thumbnails: bool = True):
        self.store = store
        # thumbnails are made only when a dataset being added keeps them (add --thumbnails none: not made at all)
        self.spec = HashSpec.of(store.hasher, store.regions, limits, thumbnails,
                                store.local.features if store.local else 0)
        # the worker task and its leading arguments: hashing, or hashing screened against an opt-out registry
        if screen is None:
            self.task: tuple = (index_batch, self.spec)
        else:
            self.task = (screen.index_batch, self.spec, screen)
        self.workers = workers
        self.progress = progress
        self.stats = stats
        self.commit_every = commit_every
        self.pending: list[ItemRecord] = []
        self.last_commit = time.monotonic()
        self.batches = Batches(workers, self.task, self._outcome)

    # results ----------------------------------------------------------------------
    def _emit(self, rec: ItemRecord) -> None:
        self.pending.append(rec)
        if rec.error is None:
            self.stats.added += 1
        else:
            self.stats.failed += 1
            self.stats.failures[rec.error_kind or "other"] += 1
        if len(self.pending) >= self.commit_every or time.monotonic() - self.last_commit > 1.0:
            self.flush()
        if self.progress:
            self.progress(self.stats)

    def fail(self, item: SourceItem, reason: str, kind: str) -> None:
        self._emit(failure_record(item, reason, kind))

    def _outcome(self, item: SourceItem, out: tuple) -> None:
        self._emit(outcome_record(item, out))

    def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []  # taken first: a failure after the commit must not re-record it
            self.store.record(batch)
        self.last_commit = time.monotonic()

    # batches ---------------------------------------------------------------------------
    def submit(self, items: list[SourceItem], payloads: list) -> None:
        self.batches.submit(items, payloads)

    def harvest(self) -> None:
        self.batches.harvest()

    def drain(self) -> None:
        self.batches.drain()
        self.flush()

    def close(self) -> None:
        self.batches.close()


def _unhashed(store: IndexStore, items: Iterable[SourceItem], stats: AddStats, progress: Progress | None,
               chunk: int = 1000) -> Iterator[SourceItem]:
    """Items not yet hashed (failed ones are retried)."""
    buf: list[SourceItem] = []

    def drain() -> Iterator[SourceItem]:
        by_ds: dict[str, list[str]] = {}
        for it in buf:
            by_ds.setdefault(it.dataset, []).append(it.key)
        status: dict[tuple[str, str], str] = {}
        for ds, keys in by_ds.items():
            for k, s in store.catalog.status_of(ds, keys).items():
                status[(ds, k)] = s
        for it in buf:
            if status.get((it.dataset, it.key)) == "ok":
                stats.skipped += 1
            else:
                yield it
        if progress:
            progress(stats)
        buf.clear()

    for it in items:
        buf.append(it)
        if len(buf) >= chunk:
            yield from drain()
    yield from drain()


def is_local(url: str | None, path: str | None) -> bool:
    """Hash the file at ``path`` rather than download ``url``: it has no URL, or the file is here.

    The sharded engines ask this on the worker that hashes the row, where the file must be.
    """
    if path is None:
        return False
    return url is None or Path(path).exists()


def _is_local(item: SourceItem) -> bool:
    return is_local(item.url, item.path)


def _downloads(items: Iterator[SourceItem], fetch: FetchSettings, read=None) -> Iterator[tuple]:
    """``(item, body, error)`` of each item downloaded; the downloader (aiohttp) is loaded only when there
    is something to download (an add of local files starts faster without it)."""
    first = next(items, None)
    if first is None:
        return
    from matcher.ingest.fetch import fetch_iter

    yield from fetch_iter(((i, i.url) for i in itertools.chain([first], items)), fetch, read=read)


def ingest(
    store: IndexStore,
    sources: Sequence[Source],
    *,
    workers: int | None = None,
    fetch: FetchSettings = FetchSettings(),
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    batch: int = 16,
    commit_every: int = 512,
    screen=None,
    reservations=None,
) -> AddStats:
    """Add every item of ``sources`` to ``store`` (which must be writable).

    ``screen`` (a :class:`matcher.optout.registry.Screen`; its ``index_batch`` runs in place of the plain one): images that match its opt-out registry are not added
    but recorded as failed (kind ``opted_out``), so a later add cannot bring an opted-out photo back.
    ``reservations`` (a :class:`matcher.ingest.reservations.Checker`): each item's reservations (embedded,
    response headers, site files) are stored in its ``extra``.
    """
    check = reservations
    stats = AddStats()
    workers = default_workers() if workers is None else workers
    thumbnails = any(store.thumbnails(s.dataset) != "none" for s in sources)
    pipe = _Pipeline(store, workers, limits, progress, stats, commit_every, screen, thumbnails)
    try:
        for source in sources:
            # Pass 1: rows that cannot be used, and local files.
            items: list[SourceItem] = []
            paths: list[str] = []
            for it in _unhashed(store, (i for i in source.items() if i.error or _is_local(i)), stats, progress):
                if it.error:
                    pipe.fail(it, it.error, it.error_kind or "bad_row")
                    continue
                if check is not None:
                    it = check.annotate(it, it.path)
                items.append(it)
                paths.append(hash_payload(it, it.path))
                if len(items) >= batch:
                    pipe.submit(items, paths)
                    items, paths = [], []
                pipe.harvest()
            if items:
                pipe.submit(items, paths)
            # Pass 2: remote images, downloaded concurrently, hashed as they arrive.
            remote = _unhashed(store, (i for i in source.items() if not i.error and not _is_local(i)), stats, progress)
            items, bodies = [], []
            wanted = iter(remote) if check is None else (i for i, _ in check.prefetching((i, i.url) for i in remote))
            for it, body, err in _downloads(wanted, fetch, check.read if check is not None else None):
                if err is not None:
                    pipe.fail(it, err.reason, err.kind)
                    pipe.harvest()
                    continue
                if check is not None:
                    body, headers = check.split(body)
                changed = check_body(it.sha256, body)
                if changed is not None:
                    pipe.fail(it, changed, "sha256")
                else:
                    if check is not None:
                        it = check.annotate(it, body, headers)
                    items.append(it)
                    bodies.append(hash_payload(it, body))
                    if len(items) >= batch or pipe.batches.idle_workers():
                        pipe.submit(items, bodies)
                        items, bodies = [], []
                pipe.harvest()
            if items:
                pipe.submit(items, bodies)
            pipe.drain()
            store.record_read(source)
        store.save()
    except BaseException:
        pipe.flush()  # keep every result already computed; the rest is retried on the next run
        raise
    finally:
        pipe.close()
    return stats
