"""Ingest into a sharded index (:mod:`matcher.index.sharded`): workers write finished shard folders themselves.

:mod:`matcher.ingest.shards` sends every hashed row back to the one client that writes one index; at
hundreds of millions of rows that client is the bottleneck (its disk, its SQLite writer, its RAM). Here
each task is one *shard folder*: a worker downloads and hashes its rows (:func:`run_shard`, the same
downloader, URL guards and hashing; screened against an opt-out registry when a ``Screen`` travels with
it), writes an ordinary index directory in a temporary folder beside the index on shared storage
(``.shard-<name>.tmp-<pid>-<random>``), and renames it into place (``shard-<name>``). The client only
plans, submits, and commits ``shards.json`` (atomically) as shards finish.

* Names: ``<digest of dataset and source location>-<k>`` for rows ``[k * rows, (k + 1) * rows)`` of a source,
  so a rerun plans the same shards. A shard already listed in ``shards.json`` is skipped (its rows are counted
  as already in the index); a shard folder already renamed into place but not yet listed (a client killed
  before its commit) is not rebuilt: the task finds it and reports it. Building a shard is idempotent.
* A failed task (an exception, a worker lost mid-shard) is submitted again up to ``retries`` times; its
  half-written temporary folder is left behind and swept when a run ends with every shard done.
* Shard numbers (the high bits of global item ids) are given in plan order after the largest number already
  listed, and never change once listed.
* Shared storage: a path every worker and the client see at the same name (NFS, a cluster file system, one
  machine's disk for a LocalCluster). fsspec URLs are not supported: SQLite and FAISS write local files.
* Unlike an add into one index, a rerun does not retry the failed rows of a committed shard (the shard is
  whole as built); ``matcher info --failures`` lists them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from matcher.atomic import fsync_dir, temp_path, write_bytes
from matcher.errors import CatalogError, MatcherError
from matcher.hashing.hashers import get_hasher, hasher_from_identity
from matcher.imaging.images import DEFAULT_LIMITS, Limits
from matcher.index.sharded import MANIFEST, is_sharded, read_manifest, write_manifest
from matcher.index.store import META, IndexStore
from matcher.ingest.fetch import FetchSettings
from matcher.ingest.run import AddStats, Progress, failure_record, outcome_record
from matcher.ingest.shards import SHARD_RETRIES, Engine, ShardTask, ShardsFailed, _source_tag, run_shard
from matcher.ingest.sources import Source, SourceItem
from matcher.pipeline.photo import HashSpec
from matcher.testpoints import pause

__all__ = ["SHARD_ROWS", "ShardJob", "build_shard", "add_shards", "BUILT"]

#: Rows per shard folder by default (``--shard-size``): a shard is loaded whole by one worker to be searched.
SHARD_ROWS = 100_000
#: Rows a task hashes and records at a time (bounds a worker's memory: ~4 kB of thumbnails a row).
RECORD_EVERY = 512
#: What a finished shard folder says about its build (written inside it before the rename).
BUILT = "built.json"


@dataclass(frozen=True)
class ShardJob:
    """One shard folder to build; picklable (its rows travel to the worker)."""

    root: str  # the sharded index's folder, on storage the worker sees at this path
    name: str  # the shard folder's name under ``root``
    items: tuple[SourceItem, ...]
    datasets: tuple[tuple[str, tuple[str, ...]], ...]  # (dataset, source locations) to record
    version: str | None
    spec: HashSpec
    fetch: FetchSettings
    hasher: dict[str, Any] = field(default_factory=dict)  # the index hasher's identity (meta.json's "hasher")
    screen: Any = None  # a matcher.optout.registry.Screen, or None
    batch: int = 16
    thumbnails: str = "full"  # the datasets' thumbnail tier (IndexStore.set_thumbnails)


def build_shard(job: ShardJob) -> dict[str, Any]:
    """Worker task: build the shard folder ``job.root/job.name`` unless it exists; its counts (``built.json``)."""
    final = Path(job.root) / job.name
    if (final / BUILT).exists():
        return dict(json.loads((final / BUILT).read_text()), reused=True)
    tmp = temp_path(final)
    counts: dict[str, Any] = {"name": job.name, "added": 0, "failed": 0, "failures": {}, "rows": len(job.items)}
    store = IndexStore.open(tmp, create=True, writable=True, hasher=hasher_from_identity(job.hasher),
                            regions=job.spec.regions)
    try:
        store.catalog.register_datasets({ds: list(locs) for ds, locs in job.datasets}, version=job.version)
        store.set_thumbnails([ds for ds, _ in job.datasets], job.thumbnails)
        for start in range(0, len(job.items), RECORD_EVERY):
            items = job.items[start : start + RECORD_EVERY]
            work = [i for i, it in enumerate(items) if it.error is None]
            task = ShardTask(job.name, tuple((items[i].url, items[i].path) for i in work), job.spec, job.fetch,
                             job.batch, tuple(items[i].faces for i in work) if any(items[i].faces for i in work)
                             else (), job.screen)
            outs = iter(run_shard(task) if work else [])
            records = [outcome_record(it, next(outs)) if it.error is None
                       else failure_record(it, it.error, it.error_kind or "bad_row") for it in items]
            store.record(records)
            for r in records:
                if r.error is None:
                    counts["added"] += 1
                else:
                    counts["failed"] += 1
                    counts["failures"][r.error_kind or "other"] = counts["failures"].get(r.error_kind or "other", 0) + 1
            pause("cluster.shard-build")
        store.save()
        counts["entries"] = len(store.faiss)
    finally:
        store.close()
    (tmp / "lock").unlink(missing_ok=True)
    write_bytes(tmp / BUILT, (json.dumps(counts, sort_keys=True) + "\n").encode())
    fsync_dir(tmp)
    try:
        os.rename(tmp, final)  # the shard appears whole, or not at all
    except OSError:
        if not (final / BUILT).exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another attempt of the same shard finished first: same content
        return dict(json.loads((final / BUILT).read_text()), reused=True)
    fsync_dir(final.parent)
    return dict(counts, reused=False)


@dataclass
class _Planned:
    job: ShardJob
    number: int
    attempts: int = 0
    error: str | None = None
    result: dict[str, Any] | None = field(default=None)


def _plan(root: Path, sources: Sequence[Source], rows: int, listed: set[str], first_number: int, spec: HashSpec,
          fetch: FetchSettings, version: str | None, hasher, screen, stats: AddStats, thumbnails: str = "full"):
    number = first_number
    for source in sources:
        tag = _source_tag(source)
        it = iter(source.items())
        for k in itertools.count():
            items = tuple(itertools.islice(it, rows))
            if not items:
                break
            name = f"shard-{tag}-{k:06d}"
            if name in listed:
                stats.skipped += len(items)
                continue
            datasets = tuple((ds, (source.location,)) for ds in sorted({i.dataset for i in items}))
            yield _Planned(ShardJob(str(root), name, items, datasets, version, spec, fetch, hasher.identity(), screen,
                                    thumbnails=thumbnails), number)
            number += 1


def add_shards(index_dir: str | os.PathLike, sources: Sequence[Source], engine: Engine, *,
               rows_per_shard: int = SHARD_ROWS, fetch: FetchSettings = FetchSettings(),
               limits: Limits = DEFAULT_LIMITS, screen=None, progress: Progress | None = None,
               version: str | None = None, retries: int = SHARD_RETRIES, hasher=None,
               regions: bool = True, thumbnails: str = "full") -> AddStats:
    """Add ``sources`` to the sharded index at ``index_dir`` (created if missing) as new shard folders built by
    ``engine``'s workers; ``shards.json`` is committed as they finish. Raises ShardsFailed (after committing every
    other shard) when a shard failed ``retries + 1`` times; a rerun builds it."""
    # Long on purpose: the coordinator's one loop (submit shard builds, harvest, retry, commit shards.json)
    # over shared state.
    root = Path(index_dir)
    if (root / META).exists() and not is_sharded(root):
        raise CatalogError(f"{root} is an index in one folder; --sharded builds a sharded index: give a new folder")
    if rows_per_shard < 1:
        raise MatcherError(f"shard size must be at least 1, got {rows_per_shard}")
    manifest = read_manifest(root) if is_sharded(root) else {"shards": [], "index_id": None}
    if manifest.get("hasher"):
        hasher = hasher_from_identity(manifest["hasher"])
        regions = manifest.get("verifier") is not None
    hasher = hasher or get_hasher()
    if screen is not None and hasher.identity() != screen.hasher:
        raise CatalogError(f"index {root} hashes with {hasher.identity()}; the registry's codes are {screen.hasher}")
    root.mkdir(parents=True, exist_ok=True)
    spec = HashSpec.of(hasher, regions, limits)
    listed = {Path(s["path"]).name for s in manifest["shards"]}
    shards = list(manifest["shards"])
    stats = AddStats()
    first = max((s["number"] for s in shards), default=-1) + 1
    queue = list(_plan(root, sources, rows_per_shard, listed, first, spec, fetch, version, hasher, screen, stats,
                       thumbnails))
    inflight: dict[Future, _Planned] = {}
    lost: list[_Planned] = []
    last_commit, dirty = time.monotonic(), False

    def commit() -> None:
        nonlocal manifest, dirty, last_commit
        manifest = write_manifest(root, shards, index_id=manifest.get("index_id"))
        dirty, last_commit = False, time.monotonic()

    try:
        while queue or inflight:
            while queue and len(inflight) < engine.capacity():
                p = queue.pop(0)
                p.attempts += 1
                inflight[engine.submit(build_shard, p.job)] = p
            stats.shards_in_flight = len(inflight)
            if progress:
                progress(stats)
            done, _ = wait(list(inflight), timeout=2.0, return_when=FIRST_COMPLETED)
            for fut in done:
                p = inflight.pop(fut)
                try:
                    r = fut.result()
                except Exception as e:  # noqa: BLE001 - any task failure (a lost worker too) is retried, then reported
                    engine.recover(e)
                    if p.attempts <= retries:
                        stats.shard_retries += 1
                        queue.insert(0, p)
                    else:
                        p.error = f"{type(e).__name__}: {e}"
                        lost.append(p)
                    continue
                stats.added += r["added"]
                stats.failed += r["failed"]
                stats.failures.update(r["failures"])
                stats.shards_done += 1
                stats.shards_reused += bool(r["reused"])
                shards.append({"number": p.number, "path": p.job.name, "items": r["added"] + r["failed"],
                               "entries": r.get("entries", 0)})
                dirty = True
            if dirty and (time.monotonic() - last_commit > 2.0 or not (queue or inflight)):
                commit()
        if dirty or not (root / MANIFEST).exists():
            commit()
    finally:
        for fut in inflight:
            fut.cancel()
        if dirty:
            commit()  # what finished stays listed, whatever stopped the run
    if lost:
        raise ShardsFailed(f"{len(lost)} shard(s) failed {retries + 1} times ({lost[0].job.name}: {lost[0].error}); "
                           "every other shard was added: run the same add again to build them", stats)
    for stale in root.glob(".shard-*.tmp-*"):  # temporary folders of tasks that died mid-shard
        shutil.rmtree(stale, ignore_errors=True)
    return stats
