"""Shards searched in the memory of Dask workers: the ``--engine dask`` side of :mod:`matcher.index.sharded`.

The client opens the sharded index's catalogs only (items, thumbnails for the web page, lookups) and
hashes and verifies photos itself, exactly as the local engine does (:func:`matcher.engine.api.search`);
what moves to the cluster is the part that grows with the index: each shard's FAISS file (and its
filter codes) held in a worker's memory, and the range search plus catalog rows of every variant code.

* Placement: each shard is pinned to one worker (``Client.submit(..., workers=[w],
  allow_other_workers=False)``), spread evenly; :meth:`DaskShards.preload` loads them before the
  first query. A worker keeps a per-process cache of open shards keyed by the shard's path and
  re-opens a shard whose files changed (:func:`matcher.index.sharded.shard_signature`: FAISS and
  catalog inode, mtime and size), so an ``add``/``remove``/``compact`` is seen by the next query.
* A query submits one task per shard (the photo's variant codes, the threshold), gathers the rows
  (items with the shard's own ids, entry kind, distance, verification thumbnail) and merges them in
  global ids (:func:`matcher.index.sharded.merge_rows`); verification then runs on the client.
* A worker lost mid-query (killed, out of memory, its machine gone): while tasks are pending the client
  polls the scheduler's worker list every :data:`POLL` s; the shards of a worker no longer listed are
  placed on the live workers, which load them from shared storage, and their tasks are submitted
  again: the query completes. With no worker left, or a shard that failed :data:`ATTEMPTS` times, it
  fails with :class:`ClusterError` saying so.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from matcher.errors import MatcherError
from matcher.index.sharded import ShardedStore, is_sharded, merge_rows, open_index, shard_signature
from matcher.index.store import IndexStore
from matcher.testpoints import pause

__all__ = ["ClusterError", "DaskShards", "open_searchable", "shard_search", "shard_load", "POLL", "ATTEMPTS"]

#: Seconds between checks of the scheduler's worker list while a query's shard tasks are pending.
POLL = 0.5
#: Times a shard's task is submitted within one query before the query fails.
ATTEMPTS = 4


class ClusterError(MatcherError):
    """A query could not be completed on the cluster (no worker left, a shard failing again and again)."""


# --- on a worker -------------------------------------------------------------------------------
class _Loaded:
    """One shard open in a worker process, used from one thread of its own (a SQLite connection is not shared)."""

    def __init__(self, path: str):
        self.path = path
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="matcher-shard")
        t0, rss0 = time.perf_counter(), _rss()
        self.signature = shard_signature(path)
        self.store: IndexStore = self.thread.submit(IndexStore.open, path).result()
        self.load_s = time.perf_counter() - t0
        self.rss_delta = _rss() - rss0

    def close(self) -> None:
        self.thread.submit(self.store.close).result()
        self.thread.shutdown()


_cache: dict[str, _Loaded] = {}
_cache_lock = threading.Lock()


def _rss() -> int:
    """This process's resident memory now, in bytes (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _shard(path: str) -> _Loaded:
    with _cache_lock:
        got = _cache.get(path)
        if got is not None and got.signature != shard_signature(path):
            del _cache[path]
            got.close()
            got = None
        if got is None:
            got = _cache[path] = _Loaded(path)
        return got


def shard_load(path: str) -> dict[str, Any]:
    """Worker task: open the shard at ``path`` (if not already open) and say what it cost."""
    s = _shard(path)
    return {"path": path, "pid": os.getpid(), "entries": len(s.store.faiss), "load_s": s.load_s,
            "rss_delta": s.rss_delta, "rss": _rss()}


def shard_search(path: str, index_entries: int, codes, threshold: int, fcodes=None,
                 want_stages: bool = False) -> tuple[list[list[tuple]], dict | None]:
    """Worker task: :meth:`IndexStore.search_codes` on the shard at ``path`` (rows with the shard's own ids), its
    filter radius following the whole index's size ``index_entries``; with ``want_stages``, its stage counts."""
    s = _shard(path)
    s.store.index_entries = index_entries or None
    pause("cluster.shard-search")
    stages: dict | None = {} if want_stages else None
    rows = s.thread.submit(s.store.search_codes, codes, threshold, fcodes, stages).result()
    return rows, stages


# --- on the client -----------------------------------------------------------------------------
class DaskShards:
    """The searcher of a :class:`ShardedStore` whose shards live in the workers of a Dask cluster."""

    def __init__(self, engine, paths: dict[int, Path], index_entries: int = 0):
        self.index_entries = index_entries
        self.engine = engine  # matcher.ingest.shards.DaskEngine: the connected client
        self.client = engine.client
        self.paths = {n: str(Path(p).resolve()) for n, p in paths.items()}
        self.place: dict[int, str] = {}
        self.moves = 0  # shards placed again because their worker was lost (for tests and logs)
        self._lock = threading.Lock()

    def _live(self) -> list[str]:
        self.engine._alive()
        return sorted(self.client.scheduler_info()["workers"])

    def _replace(self, live: list[str]) -> list[int]:
        """Place every shard without a live worker on the least loaded live worker; the shards moved."""
        if not live:
            raise ClusterError("no Dask worker is left to hold the index's shards: start workers "
                               f"(`dask worker {self.engine.address}`) and search again")
        moved = []
        load = {w: 0 for w in live}
        for n, w in self.place.items():
            if w in load:
                load[w] += 1
        for n in sorted(self.paths):
            if self.place.get(n) not in load:
                if n in self.place:
                    self.moves += 1
                w = min(live, key=lambda a: (load[a], a))
                self.place[n] = w
                load[w] += 1
                moved.append(n)
        return moved

    def _submit(self, fn, n: int, *args, **kw):
        return self.client.submit(fn, self.paths[n], *args, workers=[self.place[n]], allow_other_workers=False,
                                  pure=False, **kw)

    def preload(self) -> list[dict[str, Any]]:
        """Load every shard into its worker now (the first query then pays nothing); per shard: its load time,
        the worker's RSS growth and RSS (:func:`shard_load`)."""
        return [dict(r, shard=n) for n, r in sorted(self._run(shard_load).items())]

    def _run(self, fn, *args, **kw) -> dict[int, Any]:
        from distributed import wait

        with self._lock:
            self._replace(self._live())
            pending = {n: self._submit(fn, n, *args, **kw) for n in sorted(self.paths)}
            attempts = {n: 1 for n in pending}
            out: dict[int, Any] = {}
            while pending:
                try:
                    with self.client.as_current():
                        wait(list(pending.values()), timeout=POLL, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    pass  # nothing finished within POLL: check the workers below
                retry = []
                for n, fut in list(pending.items()):
                    if fut.status == "finished":
                        out[n] = fut.result()
                        del pending[n]
                    elif fut.status in ("error", "cancelled"):
                        exc = fut.exception() if fut.status == "error" else None
                        if isinstance(exc, MatcherError):
                            raise exc  # the shard itself is unreadable: another worker cannot help
                        retry.append((n, exc))
                if pending:
                    moved = set(self._replace(self._live()))
                    retry_ns = {n for n, _ in retry} | (moved & set(pending))
                    for n in sorted(retry_ns):
                        pending[n].cancel()
                        attempts[n] += 1
                        if attempts[n] > ATTEMPTS:
                            why = next((f": {e}" for m, e in retry if m == n and e is not None), "")
                            raise ClusterError(f"shard {n} ({self.paths[n]}) failed {ATTEMPTS} times on the cluster"
                                               f"{why}; the query was not completed")
                        pending[n] = self._submit(fn, n, *args, **kw)
            return out

    def __call__(self, codes, threshold: int, fcodes=None, stages: dict | None = None) -> list[list[tuple]]:
        """:meth:`IndexStore.search_codes` over every shard; ``stages`` gets the shards' counts added up (times:
        the slowest shard's)."""
        out = self._run(shard_search, self.index_entries, codes, threshold, fcodes, stages is not None)
        if stages is not None:
            for _, got in sorted(out.items()):
                for k, v in (got[1] or {}).items():
                    if k.endswith("_s"):
                        stages[k] = max(stages.get(k, 0.0), v)
                    elif k == "filter_radius":
                        stages[k] = v
                    else:
                        stages[k] = stages.get(k, 0) + v
        return merge_rows(((n, got[0]) for n, got in sorted(out.items())), len(codes))

    def close(self) -> None:
        self.engine.close()


def open_searchable(index_dir: str | os.PathLike, *, engine: str = "local", scheduler: str | None = None,
                    preload: bool = True) -> IndexStore | ShardedStore:
    """Open an index for searching: ``local`` loads it (or every shard) here; ``dask`` keeps the shards of a
    sharded index in the memory of the workers of the scheduler at ``scheduler`` (the index must be on storage
    those workers can read at the same path). The result is what :func:`matcher.engine.api.search`,
    ``search_bytes`` and the web server search; close it when done (a Dask client closes with it)."""
    if engine == "local":
        return open_index(index_dir)
    if engine != "dask":
        raise MatcherError(f"unknown engine {engine!r} (local or dask)")
    if not scheduler:
        raise MatcherError("--engine dask needs --scheduler ADDRESS (e.g. tcp://host:8786)")
    if not is_sharded(index_dir):
        raise MatcherError(f"{index_dir} is not a sharded index (no shards.json): --engine dask searches sharded "
                           "indexes (build one with `matcher add --engine dask`); search this one with --engine local")
    from matcher.ingest.shards import DaskEngine

    store = ShardedStore.open(index_dir, load=False)
    try:
        conn = DaskEngine(scheduler)
    except BaseException:
        store.close()
        raise
    shards = DaskShards(conn, store.shard_paths, len(store.faiss))
    store.searcher = shards
    close = store.close

    def close_both() -> None:
        try:
            close()
        finally:
            shards.close()

    store.close = close_both  # type: ignore[method-assign]
    store.cluster = shards  # type: ignore[attr-defined]
    if preload:
        try:
            shards.preload()
        except BaseException:
            store.close()
            raise
    return store
