"""Sharded ingest: a manifest cut into fixed shards of rows, each hashed by one idempotent task.

Why shards: to spread ``matcher add`` over many machines (a Dask cluster), the unit of work
must be something a worker can do alone and that can be redone safely when a worker is lost.
A shard is ``shard_size`` consecutive rows of one source; shard ``k`` of a source always
covers rows ``[k * shard_size, (k + 1) * shard_size)``, so its id
(``<digest of dataset and source location>-<k>``) lines up across runs.

One shard task (:func:`run_shard`, run on a worker) downloads the rows that need it (the
aiohttp fetcher of :mod:`matcher.ingest.fetch`, with its address guard and retries), hashes them
(:func:`matcher.pipeline.photo.index_batch`) and returns one plain outcome tuple per row. The
parent writes each result to ``INDEX/shards/<id>.jsonl`` (temporary file, fsync, rename)
and then a done marker ``<id>.done`` naming the result's checksum and the *fingerprint* of
the work (the rows' keys/URLs/paths and every setting that changes an outcome). Results
are applied to the catalog strictly in shard order, so the index does not depend on which
worker finished first; a shard's files are deleted once the catalog holds its rows.

Results travel back to the parent rather than being written by the workers, so workers
need no shared storage: they need the package and network access to the URLs. The parent
reads every result anyway to build the index, so this costs no extra transfer.

Resuming: rows already hashed are skipped (as with the local engine), and a shard whose
done marker matches the current work (a run interrupted after the shard finished but before
it was applied) is not recomputed. Per-item failures stay per-item records; a failed
*task* (an exception, a lost worker, a broken local pool) is retried ``retries`` times, and a
shard that still fails is reported at the end while every other shard is kept.

The same code runs on any :class:`concurrent.futures.Executor`: :class:`PoolEngine` (a
local process pool from :func:`matcher.pipeline.pool.make_pool`) or :class:`DaskEngine` (the
executor of a ``distributed.Client``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import socket
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from matcher.atomic import write_bytes
from matcher.errors import MatcherError
from matcher.ingest.fetch import FetchSettings, fetch_iter
from matcher.imaging.images import DEFAULT_LIMITS, Limits
from matcher.ingest.run import AddStats, Progress, check_body, failure_record, is_local, outcome_record
from matcher.ingest.sources import Source, SourceItem
from matcher.index.store import IndexStore
from matcher.testpoints import pause
from matcher.pipeline.photo import HashSpec, index_batch
from matcher.pipeline.pool import make_pool

__all__ = [
    "SHARD_SIZE", "SHARD_RETRIES", "SHARDS_DIR", "ShardTask", "run_shard", "ShardDir", "Engine", "PoolEngine",
    "DaskEngine", "ShardsFailed", "ingest_sharded", "add_sharded",
]

#: Rows per shard: ~1000 images is a few seconds to a minute of work and ~4 MB of results.
SHARD_SIZE = 1000
#: Extra attempts of a shard task after an exception or a lost worker.
SHARD_RETRIES = 3
#: The work directory, inside the index directory.
SHARDS_DIR = "shards"
_FORMAT = "matcher-shard"
_VERSION = 1


# --- the task (runs on a worker) -----------------------------------------------------------
@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs for one shard; small and picklable (no source items, no store)."""

    shard: str
    rows: tuple[tuple[str | None, str | None], ...]  # (url, path) of each row to hash, in order
    spec: HashSpec
    fetch: FetchSettings
    batch: int = 16
    faces: tuple = ()  # per row: the face boxes its manifest gives (matcher.imaging.facebox.RawFaces) or None; () = none
    screen: Any = None  # a matcher.optout.registry.Screen: images matching its registry become "opted_out" failures
    sha256: tuple = ()  # per row: the SHA-256 its dataset publishes for the image, or None; () = none


def run_shard(task: ShardTask) -> list[tuple]:
    """Download and hash every row of ``task``; one :func:`index_batch` outcome per row, in order.

    Idempotent: it only reads its inputs and returns data, so running it twice (a retry, a
    worker lost after finishing) gives the same answer. Files are read where the worker
    runs; a row with a URL whose file is not there is downloaded instead.
    """
    out: list[tuple | None] = [None] * len(task.rows)
    local = [(i, path) for i, (url, path) in enumerate(task.rows) if is_local(url, path)]
    remote = [(i, url) for i, (url, path) in enumerate(task.rows) if not is_local(url, path)]

    def hash_into(idx: list[int], srcs: list) -> None:
        if task.faces:
            srcs = [s if task.faces[i] is None else (s, task.faces[i]) for i, s in zip(idx, srcs)]
        outs = (index_batch(task.spec, srcs) if task.screen is None
                else task.screen.index_batch(task.spec, task.screen, srcs))
        for i, o in zip(idx, outs):
            out[i] = o

    for start in range(0, len(local), task.batch):
        chunk = local[start : start + task.batch]
        hash_into([i for i, _ in chunk], [p for _, p in chunk])
    # Downloads go on in the fetcher's thread while this one hashes what has arrived.
    idx: list[int] = []
    bodies: list[bytes] = []
    with closing(fetch_iter(iter(remote), task.fetch)) as results:
        for i, body, err in results:
            if err is not None:
                out[i] = ("err", err.reason, err.kind)
                continue
            changed = check_body(task.sha256[i], body) if task.sha256 else None
            if changed is not None:
                out[i] = ("err", changed, "sha256")
                continue
            idx.append(i)
            bodies.append(body)
            if len(idx) >= task.batch:
                hash_into(idx, bodies)
                idx, bodies = [], []
    if idx:
        hash_into(idx, bodies)
    missing = [i for i, o in enumerate(out) if o is None]
    if missing:  # pragma: no cover - fetch_iter yields every key exactly once
        raise RuntimeError(f"shard {task.shard}: no outcome for rows {missing[:5]}")
    return out  # type: ignore[return-value]


# --- results on disk ------------------------------------------------------------------------
def _encode(key: str, out: tuple) -> dict[str, Any]:
    if out[0] == "ok":
        _, code, entries, w, h, fmt = out
        return {"key": key, "ok": True, "hash": code.hex(), "width": w, "height": h, "format": fmt,
                "entries": [[kind, c.hex(), None if t is None else base64.b64encode(t).decode("ascii"),
                             *([rest[0].hex()] if rest and rest[0] is not None else [])]
                            for kind, c, t, *rest in entries]}
    return {"key": key, "ok": False, "error": out[1], "kind": out[2]}


def _decode(obj: dict[str, Any]) -> tuple:
    if obj["ok"]:
        # a fourth field is the entry's filter code (matcher.filtercodes); shard files written before it have none
        entries = [(kind, bytes.fromhex(c), None if t is None else base64.b64decode(t),
                    bytes.fromhex(rest[0]) if rest else None) for kind, c, t, *rest in obj["entries"]]
        return ("ok", bytes.fromhex(obj["hash"]), entries, obj["width"], obj["height"], obj["format"])
    return ("err", obj["error"], obj["kind"])


class ShardDir:
    """``INDEX/shards/``: finished shard results waiting to be applied (JSON Lines + a done marker)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".*.tmp-*"):  # a write cut short by a crash
            stale.unlink(missing_ok=True)

    def _paths(self, shard: str) -> tuple[Path, Path]:
        return self.root / f"{shard}.jsonl", self.root / f"{shard}.done"

    def save(self, shard: str, fingerprint: str, keys: Sequence[str], outcomes: Sequence[tuple]) -> None:
        result, marker = self._paths(shard)
        body = "".join(json.dumps(_encode(k, o), separators=(",", ":")) + "\n" for k, o in zip(keys, outcomes)).encode()
        write_bytes(result, body)
        ok = sum(1 for o in outcomes if o[0] == "ok")
        write_bytes(marker, json.dumps({
            "format": _FORMAT, "version": _VERSION, "shard": shard, "fingerprint": fingerprint,
            "rows": len(outcomes), "ok": ok, "failed": len(outcomes) - ok,
            "sha256": hashlib.sha256(body).hexdigest(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=1).encode())

    def load(self, shard: str, fingerprint: str, keys: Sequence[str]) -> list[tuple] | None:
        """The finished result of exactly this work, or None (absent, other work, damaged)."""
        result, marker = self._paths(shard)
        try:
            meta = json.loads(marker.read_bytes())
            if (meta.get("format"), meta.get("version"), meta.get("fingerprint")) != (_FORMAT, _VERSION, fingerprint):
                return None
            body = result.read_bytes()
            if hashlib.sha256(body).hexdigest() != meta.get("sha256"):
                return None
            rows = [json.loads(line) for line in body.splitlines()]
            if [r["key"] for r in rows] != list(keys):
                return None
            return [_decode(r) for r in rows]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def discard(self, shard: str) -> None:
        """Forget a shard once the catalog holds its rows (marker first: never a marker without its result)."""
        result, marker = self._paths(shard)
        marker.unlink(missing_ok=True)
        result.unlink(missing_ok=True)

    def remove_if_empty(self) -> None:
        try:
            self.root.rmdir()
        except OSError:
            pass


# --- engines --------------------------------------------------------------------------------
class Engine:
    """Where shard tasks run: a concurrent.futures executor, how many shards to keep in flight,
    and how to recover after a task failed."""

    name = "engine"

    def submit(self, fn: Callable, *args: Any) -> Future:  # pragma: no cover - interface
        raise NotImplementedError

    def capacity(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def recover(self, exc: BaseException) -> None:
        """Called after a task raised ``exc``; the task itself is retried by the caller."""

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PoolEngine(Engine):
    """Local worker processes (:func:`matcher.pipeline.pool.make_pool`); a dead worker breaks the whole
    pool, so a broken pool is replaced and its shards are retried."""

    name = "local pool"

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self.pool = make_pool(self.workers)

    def _renew(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = make_pool(self.workers)

    def submit(self, fn: Callable, *args: Any) -> Future:
        try:
            return self.pool.submit(fn, *args)
        except BrokenProcessPool:
            self._renew()
            return self.pool.submit(fn, *args)

    def capacity(self) -> int:
        return 2 * self.workers

    def recover(self, exc: BaseException) -> None:
        if isinstance(exc, BrokenProcessPool):
            try:  # renew once per breakage, not once per failed task: only a broken pool refuses work
                self.pool.submit(int).result()
            except BrokenProcessPool:
                self._renew()

    def describe(self) -> str:
        return f"local pool of {self.workers}"

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _probe(address: str, timeout: float) -> None:
    """Fail fast, with a plain reason, when nothing listens at a tcp/tls scheduler address.

    distributed's own Client would retry until its timeout and then leave a half-made client
    whose finaliser prints tracebacks at exit.
    """
    from distributed.comm.addressing import get_address_host_port, parse_address

    try:
        scheme, _ = parse_address(address)
        if scheme not in ("tcp", "tls"):
            return
        host, port = get_address_host_port(address)
    except ValueError as e:
        raise MatcherError(f"invalid Dask scheduler address {address!r}: {e} (expected e.g. tcp://HOST:8786)") from None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise MatcherError(f"cannot reach the Dask scheduler at {address}: {why.lower()} "
                           "(is `dask scheduler` running there, and is the port open?)") from None


class DaskEngine(Engine):
    """A Dask cluster, through ``distributed.Client(address).get_executor()``.

    A worker lost mid-task is handled first by the scheduler (the task is rerun on another
    worker, up to ``distributed.scheduler.allowed-failures`` times) and then by our retries.
    Tasks are submitted impure, so a retried shard is a new task, not the failed one again.
    """

    name = "dask"

    def __init__(self, address: str, *, connect_timeout: float | None = None, wait_for_workers: float = 60.0):
        try:
            import dask
            from distributed import Client
        except ImportError:
            raise MatcherError("--engine dask needs dask.distributed: pip install 'photo-dataset-check[dask]'") from None
        if connect_timeout is None:
            from dask.utils import parse_timedelta

            connect_timeout = float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s"))
        self.address = address
        _probe(address, connect_timeout)
        try:
            self.client = Client(address, timeout=connect_timeout, set_as_default=False)
        except (OSError, ValueError, TimeoutError) as e:
            raise MatcherError(f"cannot connect to the Dask scheduler at {address}: {e}") from None
        try:
            self.client.wait_for_workers(1, timeout=wait_for_workers)
        except (TimeoutError, OSError):
            self.client.close()
            raise MatcherError(f"the Dask scheduler at {address} has no workers (waited {wait_for_workers:g} s); "
                               "start some with `dask worker " + address + "`") from None
        self.executor = self.client.get_executor(pure=False)
        self._threads = 1
        self._checked = 0.0

    def _alive(self) -> None:
        """distributed gives up on a lost scheduler after its reconnect timeout and closes the client."""
        if self.client.status in ("closing", "closed"):
            raise MatcherError(f"lost the Dask scheduler at {self.address}; everything applied and every finished "
                               "shard is kept: run the same add again to resume")

    def submit(self, fn: Callable, *args: Any) -> Future:
        self._alive()
        return self.executor.submit(fn, *args)

    def capacity(self) -> int:
        """Two shards per worker thread (one running, one queued), re-read as workers come and go."""
        self._alive()
        now = time.monotonic()
        if now - self._checked > 2.0:
            self._checked = now
            try:
                self._threads = sum(self.client.nthreads().values())
            except Exception:  # noqa: BLE001 - a scheduler being reconnected to; keep the last known size
                self._alive()
        return max(2, 2 * self._threads)

    def recover(self, exc: BaseException) -> None:
        self._alive()  # tasks cancelled because the client closed: retrying them cannot help

    def describe(self) -> str:
        return f"dask at {self.address}"

    def close(self) -> None:
        self.client.close()


# --- planning and applying ------------------------------------------------------------------
@dataclass
class _Shard:
    id: str
    items: list[SourceItem]  # every row of the shard, in source order
    work: list[int]  # positions in ``items`` to hash
    fingerprint: str
    outcomes: list[tuple] | None = None  # once finished (or loaded from an earlier run)
    attempts: int = 0
    error: str | None = None  # the task failed for good

    @property
    def ready(self) -> bool:
        return self.outcomes is not None or self.error is not None

    def task(self, spec: HashSpec, fetch: FetchSettings, batch: int) -> ShardTask:
        rows = tuple((self.items[i].url, self.items[i].path) for i in self.work)
        faces = tuple(self.items[i].faces for i in self.work)
        sha = tuple(self.items[i].sha256 for i in self.work)
        return ShardTask(self.id, rows, spec, fetch, batch, faces if any(f is not None for f in faces) else (),
                         sha256=sha if any(h is not None for h in sha) else ())

    def keys(self) -> list[str]:
        return [self.items[i].key for i in self.work]


def _config(spec: HashSpec, limits: Limits, fetch: FetchSettings) -> dict[str, Any]:
    """Every setting that can change an outcome: a finished shard is reused only under the same ones."""
    f = asdict(fetch)
    keys = ["allow_private", "max_bytes", "max_redirects", "timeout", "connect_timeout", "retries"]
    if fetch.allow_networks:  # only when set: shards finished before this setting existed stay valid
        keys.append("allow_networks")
    return {"hasher": spec.hasher, "regions": spec.regions, "limits": asdict(limits),
            "fetch": {k: list(f[k]) if isinstance(f[k], tuple) else f[k] for k in keys}}


def _fingerprint(config: dict[str, Any], shard: str, rows: list[tuple]) -> str:
    blob = json.dumps({"v": _VERSION, "config": config, "shard": shard, "rows": rows}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _source_tag(source: Source) -> str:
    return hashlib.sha256(f"{source.dataset}\0{source.location}".encode()).hexdigest()[:12]


def _plan(store: IndexStore, sources: Sequence[Source], shard_size: int, config: dict[str, Any],
          stats: AddStats) -> Iterator[_Shard]:
    """Every shard of every source, in order; rows already hashed are counted as skipped."""
    for source in sources:
        tag = _source_tag(source)
        rows = iter(source.items())
        for k in itertools.count():
            items = list(itertools.islice(rows, shard_size))
            if not items:
                break
            by_ds: dict[str, list[str]] = {}
            for it in items:
                by_ds.setdefault(it.dataset, []).append(it.key)
            hashed = {(ds, key) for ds, keys in by_ds.items()
                      for key, s in store.catalog.status_of(ds, keys).items() if s == "ok"}
            keep, work = [], []
            for it in items:
                if (it.dataset, it.key) in hashed:
                    stats.skipped += 1
                    continue
                if it.error is None:
                    work.append(len(keep))
                keep.append(it)
            sid = f"{tag}-{k:06d}"
            fp = _fingerprint(config, sid, [(keep[i].dataset, keep[i].key, keep[i].url, keep[i].path)
                                            + (() if keep[i].faces is None else (keep[i].faces,)) for i in work])
            yield _Shard(sid, keep, work, fp)


def _apply(store: IndexStore, shard: _Shard, stats: AddStats) -> None:
    """Record a finished shard's rows (bad rows included) in one catalog transaction, in row order."""
    outs = iter(shard.outcomes or [])
    work = set(shard.work)
    records = []
    for i, item in enumerate(shard.items):
        rec = (outcome_record(item, next(outs)) if i in work
               else failure_record(item, item.error or "", item.error_kind or "bad_row"))
        records.append(rec)
        if rec.error is None:
            stats.added += 1
        else:
            stats.failed += 1
            stats.failures[rec.error_kind or "other"] += 1
    if records:
        store.record(records)
    stats.shards_done += 1


class ShardsFailed(MatcherError):
    """Some shard tasks failed every attempt; everything else was added. ``stats`` is the run's."""

    def __init__(self, reason: str, stats: AddStats):
        super().__init__(reason)
        self.stats = stats


def ingest_sharded(
    store: IndexStore,
    sources: Sequence[Source],
    engine: Engine,
    *,
    fetch: FetchSettings = FetchSettings(),
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    shard_size: int = SHARD_SIZE,
    retries: int = SHARD_RETRIES,
    batch: int = 16,
) -> AddStats:
    """Add every item of ``sources`` to ``store`` through shard tasks run by ``engine``.

    Raises :class:`ShardsFailed` (after saving everything else) when a shard failed
    ``retries + 1`` times; a rerun retries it.
    """
    # Long on purpose: the coordinator's one loop (submit within a window, harvest in order, retry a failed
    # shard, record) over shared window state.
    if shard_size < 1:
        raise MatcherError(f"shard size must be at least 1, got {shard_size}")
    stats = AddStats()
    spec = HashSpec.of(store.hasher, store.regions, limits)
    work_dir = ShardDir(store.root / SHARDS_DIR)
    plan = _plan(store, sources, shard_size, _config(spec, limits, fetch), stats)
    window: deque[_Shard] = deque()  # planned and not yet applied, in shard order
    queue: deque[_Shard] = deque()  # to submit
    inflight: dict[Future, _Shard] = {}
    lost: list[_Shard] = []
    exhausted = False

    def report() -> None:
        stats.shards_in_flight = len(inflight)
        if progress:
            progress(stats)

    try:
        while True:
            capacity = engine.capacity()
            # Plan ahead so that the cluster keeps busy while an early shard is slow, but bounded:
            # finished shards wait in memory (~5 MB per 1000 rows) for the ones before them.
            while not exhausted and len(window) < capacity + min(3 * capacity, 2 + 50_000 // shard_size):
                shard = next(plan, None)
                if shard is None:
                    exhausted = True
                    break
                window.append(shard)
                if not shard.work:
                    shard.outcomes = []
                    continue
                shard.outcomes = work_dir.load(shard.id, shard.fingerprint, shard.keys())
                if shard.outcomes is not None:
                    stats.shards_reused += 1
                else:
                    queue.append(shard)
            while queue and len(inflight) < capacity:
                shard = queue.popleft()
                shard.attempts += 1
                inflight[engine.submit(run_shard, shard.task(spec, fetch, batch))] = shard
            while window and window[0].ready:
                shard = window.popleft()
                if shard.error is not None:
                    lost.append(shard)
                    continue
                _apply(store, shard, stats)
                pause("shards.applied")
                # its files go even if it had nothing to do this time: an earlier run may have been killed
                # between applying the same shard and deleting them
                work_dir.discard(shard.id)
                report()
            if not window and exhausted:
                break
            if not inflight:
                if queue or not window:  # shards to submit, or every planned one was applied: plan more
                    continue
                raise AssertionError("sharded ingest: nothing in flight but shards are not ready")  # pragma: no cover
            report()
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in done:
                shard = inflight.pop(fut)
                try:
                    outs = fut.result()
                    if not isinstance(outs, list) or len(outs) != len(shard.work):
                        raise RuntimeError(f"shard task returned {type(outs).__name__} of the wrong length")
                except Exception as e:  # noqa: BLE001 - any task failure is retried, then reported
                    engine.recover(e)
                    if shard.attempts <= retries:
                        stats.shard_retries += 1
                        queue.appendleft(shard)
                    else:
                        shard.error = f"{type(e).__name__}: {e}"
                    continue
                work_dir.save(shard.id, shard.fingerprint, shard.keys(), outs)
                shard.outcomes = outs
        for source in sources:
            store.record_read(source)
        store.save()
    finally:
        for fut in inflight:
            fut.cancel()
        report()
    if lost:
        rows = sum(len(s.work) for s in lost)
        raise ShardsFailed(
            f"{len(lost)} shard(s) failed {retries + 1} times ({lost[0].id}: {lost[0].error}); their {rows} rows "
            "were not added (everything else was): run the same add again to retry them", stats)
    work_dir.remove_if_empty()
    return stats


def add_sharded(index_dir: str | os.PathLike, sources: Sequence[Source], engine: Engine, *,
                version: str | None = None, new_version: bool = False, thumbnails: str = "full",
                **kw: Any) -> AddStats:
    """Create or extend the index at ``index_dir`` through ``engine`` (see :func:`ingest_sharded`); the
    datasets are recorded first, as :func:`matcher.engine.api.add` does (``version``, ``new_version``)."""
    with IndexStore.open(index_dir, create=True, writable=True) as store:
        store.register_sources(sources, version=version, new_version=new_version)
        store.set_thumbnails([s.dataset for s in sources], thumbnails)
        return ingest_sharded(store, sources, engine, **kw)
