"""An index directory: ``meta.json`` + ``catalog.sqlite`` + ``index.faiss`` + ``filter.codes``.

* ``meta.json`` names the format version and the hasher (name, bits, version,
  parameters); opening with another hasher raises :class:`IndexMismatch`.
* The catalog is the truth; the FAISS file is a cache of the entries' codes, saved
  atomically. Each save appends a trailer naming the index (``index_id``) and the
  catalog's ``entries_seq`` it reflects. On open, a FAISS file whose trailer does not
  match the catalog exactly (a crash between a catalog commit and a FAISS save, an
  older or foreign file copied in, no trailer) is reconciled against the catalog:
  missing codes are added from the catalog, ids the catalog no longer has are removed.
  (``faiss_seq`` in the catalog's meta records the last save, for humans and tests.)
* Removed items (:meth:`IndexStore.remove_items`) leave their entry ids in FAISS as
  tombstones, recorded in the catalog and dropped from every search result at once.
  Compaction (:meth:`IndexStore.compact`, and any save once tombstones are
  :data:`COMPACT_FRACTION` of FAISS) takes them out of FAISS; a reconcile does too.
* The FAISS layout (flat or IVF, :mod:`matcher.index.binary`) follows the size: a save lays the
  index out again when it has outgrown its layout.
* ``filter.codes`` (:mod:`matcher.index.filtercodes`): a 256-bit code per entry id, memory-mapped; a candidate
  whose filter code is far from its variant's is dropped before the catalog is read. A cache like FAISS:
  entries without a row (an index from before it, a crash) are simply not filtered.
* One writer at a time (an exclusive ``flock`` on ``lock``); readers never block.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import time
import uuid
from dataclasses import replace
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from matcher.atomic import write_bytes
from matcher.index.local import LocalIndex
from matcher.index.catalog import Catalog, ItemRecord, is_write_failure
from matcher.errors import CatalogError, IndexMismatch, IndexWriteError
from matcher.hashing.hashers import DEFAULT_HASHER, Hasher, get_hasher, hasher_from_identity
from matcher.index.binary import BinaryIndex
from matcher.index.filtercodes import FILTER_FILE, FilterCodes, filter_threshold
from matcher.results import Item
from matcher.stages import lap, start
from matcher.testpoints import pause

__all__ = ["IndexStore", "FORMAT_VERSION", "writing"]

FORMAT = "matcher-index"
FORMAT_VERSION = 1
#: How candidates are verified: each entry keeps a 64x64 greyscale thumbnail of its region (matcher/verify.py).
VERIFIER = {"name": "thumb-ncc", "size": 64, "version": 1}
#: Per dataset (:meth:`IndexStore.set_thumbnails`): keep each entry's verification thumbnail, or only its codes.
THUMBNAIL_TIERS = ("full", "none")
META = "meta.json"
CATALOG = "catalog.sqlite"
FAISS = "index.faiss"
LOCK = "lock"
#: The shard list of a sharded index (matcher.index.sharded): a folder holding it is not an index directory.
SHARDED = "shards.json"
#: A save compacts FAISS (drops tombstoned ids) once they are this share of it: below, filtering them
#: costs less than the O(n) removal.
COMPACT_FRACTION = 0.1


_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


@contextmanager
def writing(root: str | os.PathLike) -> Iterator[None]:
    """Around a whole write to the index at ``root`` (add, remove, compact, repair): a full disk or a
    read-only folder becomes :class:`IndexWriteError` with the cause, not a traceback. Each catalog
    transaction is whole or absent and FAISS is replaced atomically, so what was stored before is intact."""
    try:
        yield
    except sqlite3.OperationalError as e:
        if not is_write_failure(e):
            raise
        raise IndexWriteError(_cannot_write(root, str(e))) from None
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        raise IndexWriteError(_cannot_write(root, e.strerror or str(e))) from None


def _cannot_write(root, reason: str) -> str:
    return (f"cannot write the index {root}: {reason}. Everything stored before is intact (the last batch was "
            "rolled back); free some space or make the folder writable, then run the command again")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


class IndexStore:
    """An open index directory."""

    def __init__(self, root: Path, hasher: Hasher, regions: bool, catalog: Catalog, faiss: BinaryIndex, *,
                 writable: bool, lock_fd, index_id: str | None = None):
        self.root = root
        self.index_id = index_id
        self.hasher = hasher
        self.regions = regions  # entries for framed photos + pixel thumbnails for verification
        self.catalog = catalog
        self.faiss = faiss
        self.writable = writable
        self._lock_fd = lock_fd
        self._dirty = False
        self._last_save = time.monotonic()
        self.reconciled: dict[str, int] = {"added": 0, "removed": 0}
        self.dead = catalog.tombstone_ids()  # sorted ids FAISS holds for removed items: never returned
        # the index size the filter radius follows: a shard of a sharded index (matcher.index.sharded) is
        # searched at the radius of the whole index, not of its own size
        self.index_entries: int | None = None
        self.filter = FilterCodes(root / FILTER_FILE, writable=writable)
        self._tiers: dict[str, str] = {}  # dataset -> thumbnail tier (set_thumbnails)
        self.local = LocalIndex.open(root, writable=writable)  # the local-feature tier, if the index has one

    # opening --------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        root: str | os.PathLike,
        *,
        create: bool = False,
        writable: bool = False,
        hasher: Hasher | str | None = None,
        regions: bool = True,
        rebuild_faiss: bool = False,
    ) -> "IndexStore":
        """Open (or with ``create``, create) an index directory.

        ``hasher``: what the caller will hash queries with. If given and the index
        was built with a different one, raises IndexMismatch. Read-only opens never write
        (the catalog is opened ``mode=ro``; see :func:`matcher.index.catalog.read_only_uri`).
        ``rebuild_faiss`` (with ``writable``): ignore ``index.faiss`` and write it again from the
        catalog's entries (``matcher repair``).
        """
        # Long on purpose: the order of the checks on opening (lock, meta, a lost or damaged catalog, the
        # FAISS checksum, reconcile) is the index's safety argument, read top to bottom.
        root = Path(root)
        meta_path = root / META
        if isinstance(hasher, str):
            hasher = get_hasher(hasher)
        if (root / SHARDED).exists() and not meta_path.exists():
            raise CatalogError(f"{root} is a sharded index (matcher.index.sharded): search, info, lookup and serve "
                               f"take it whole; add to it with `matcher add --sharded`; give other commands one shard "
                               f"folder listed in {root / SHARDED}")
        if not meta_path.exists():
            if not create:
                if root.exists() and any(root.iterdir()):
                    raise CatalogError(f"{root} is not a matcher index (no {META})")
                raise CatalogError(f"no index at {root} (build one with `matcher add --index {root} ...`)")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise IndexWriteError(f"cannot create the index folder {root}: {e.strerror or e}") from None
            hasher = hasher or get_hasher(DEFAULT_HASHER)
            _write_json(
                meta_path,
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "hasher": hasher.identity(),
                    "verifier": VERIFIER if regions else None,
                    "index_id": uuid.uuid4().hex,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
            pause("create.meta-written")
            writable = True
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise CatalogError(f"cannot read {meta_path}: {e}") from None
        if meta.get("format") != FORMAT:
            raise CatalogError(f"{meta_path} is not a matcher index meta file")
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise CatalogError(
                f"{root} uses index format {meta['format_version']}; this matcher reads up to {FORMAT_VERSION}"
            )
        stored = meta.get("hasher") or {}
        if hasher is not None and hasher.identity() != {k: stored.get(k) for k in ("name", "bits", "version", "params")}:
            raise IndexMismatch(
                f"index {root} was built with hasher {stored}, but the query hasher is {hasher.identity()}; "
                "search it with the hasher it was built with"
            )
        index_hasher = hasher_from_identity(stored)
        if hasher is not None:
            index_hasher = hasher  # same identity; keep the caller's decode options
        stored_verifier = meta.get("verifier")
        if stored_verifier not in (None, VERIFIER):
            raise IndexMismatch(f"index {root} verifies with {stored_verifier}; this matcher knows {VERIFIER}")

        faiss_path = root / FAISS
        if faiss_path.exists() and Catalog.unfinished(root / CATALOG):
            # FAISS holds codes but nothing says what they are: never read that as an empty index, never let
            # an add rewrite FAISS without them (the catalog is the truth; it cannot be rebuilt from FAISS)
            state = "missing" if not (root / CATALOG).exists() else "empty (no tables)"
            raise CatalogError(
                f"{root / CATALOG} is {state} but {FAISS} is there: the index's catalog was lost or replaced. "
                "Restore catalog.sqlite from a backup (or rebuild the index with `matcher add` into a new folder); "
                "nothing was changed")
        lock_fd = None
        if writable:
            try:
                lock_fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise IndexWriteError(_cannot_write(root, e.strerror or str(e))) from None
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                raise CatalogError(f"{root} is being written by another matcher process") from None
            for stale in root.glob(f".{FAISS}.tmp-*"):  # a FAISS save killed before its rename (we hold the lock)
                stale.unlink(missing_ok=True)
        try:
            try:
                catalog = Catalog(root / CATALOG, create=writable, readonly=not writable)
            except CatalogError:
                if writable or not Catalog.unfinished(root / CATALOG):
                    raise
                # the add that created this index was killed before its catalog was: it holds nothing yet
                catalog = Catalog(":memory:", create=True)
            if faiss_path.exists() and not rebuild_faiss:
                faiss = BinaryIndex.load(faiss_path, index_hasher.bits)
            else:  # none yet, or `matcher repair`: the reconcile below adds every entry from the catalog
                faiss = BinaryIndex(index_hasher.bits)
            store = cls(root, index_hasher, stored_verifier is not None, catalog, faiss, writable=writable,
                        lock_fd=lock_fd,
                        index_id=meta.get("index_id"))
            store._reconcile_if_needed()
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return store

    def close(self) -> None:
        try:
            if self.writable and len(self.faiss) != self.catalog.entries_count + len(self.dead):
                # an interrupt (Ctrl-C) between a batch's catalog commit and its FAISS add: catch up now,
                # so the FAISS file is saved in step rather than repaired by the next open
                self.reconcile()
            elif self.writable and self._dirty:
                self.save()
            if self.writable and self.local is not None:
                self.local.save()
        finally:
            self.catalog.close()
            self.filter.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "IndexStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # consistency ----------------------------------------------------------------
    def _reconcile_if_needed(self) -> None:
        seq = self.catalog.entries_seq
        if seq == 0 and len(self.faiss) == 0:
            return  # nothing hashed yet
        t = self.faiss.trailer or {}
        if (t.get("index_id") == self.index_id and t.get("seq") == seq and t.get("count") == len(self.faiss)
                and len(self.faiss) == self.catalog.entries_count + len(self.dead)):
            # this FAISS file was saved from exactly the catalog's current entries (a kill after the
            # file was replaced but before faiss_seq was written leaves only the record behind)
            if self.writable and self.catalog.get_meta("faiss_seq") != str(seq):
                self.catalog.set_meta("faiss_seq", str(seq))
            return
        self.reconcile()

    def reconcile(self) -> dict[str, int]:
        """Make FAISS hold exactly the catalog's live entries (tombstoned ids go too). Saves if writable."""
        want = self.catalog.entry_ids()
        have = self.faiss.ids()
        if len(np.unique(have)) != len(have):  # duplicated ids: rebuild from scratch
            self.faiss = BinaryIndex(self.hasher.bits)
            have = np.empty(0, np.int64)
        extra = np.setdiff1d(have, want, assume_unique=True)
        missing = np.setdiff1d(want, have, assume_unique=True)
        if len(extra):
            self.faiss.remove(extra)
        if len(missing):
            for start in range(0, len(missing), 100_000):
                rows = list(self.catalog.entry_codes(missing[start : start + 100_000].tolist()))
                ids = np.array([r[0] for r in rows], dtype=np.int64)
                codes = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.uint8).reshape(len(rows), -1)
                self.faiss.add(ids, codes)
        self.reconciled = {"added": int(len(missing)), "removed": int(len(extra))}
        if self.writable and len(self.dead):
            self.catalog.clear_tombstones(self.dead)  # FAISS holds none of them any more
        self.dead = np.empty(0, np.int64)  # read-only too: FAISS in memory holds none (info counts it)
        if self.writable:
            self.save()
        return self.reconciled

    def save(self) -> None:
        """Write FAISS (atomic), first compacting it when tombstones have piled up and laying it out
        again when its size has outgrown the layout."""
        if not self.writable:
            raise CatalogError("index opened read-only")
        start()
        if len(self.dead) and len(self.dead) >= COMPACT_FRACTION * max(len(self.faiss), 1):
            self._drop_dead()
        if self.faiss.wants_relayout():
            self.faiss = self.faiss.relayout()
        seq = self.catalog.entries_seq
        self.filter.sync()
        self.faiss.save(self.root / FAISS, {"index_id": self.index_id, "seq": seq, "count": len(self.faiss)})
        pause("faiss.after-rename")
        self.faiss.trailer = {"index_id": self.index_id, "seq": seq, "count": len(self.faiss)}
        self.catalog.set_meta("faiss_seq", str(seq))
        self._dirty = False
        lap("faiss")
        self._last_save = time.monotonic()

    def _drop_dead(self) -> int:
        """Take the tombstoned ids out of FAISS (in memory), then out of the catalog (bumping entries_seq).

        A kill before the following save leaves the old FAISS file, whose trailer no longer matches
        the catalog: the next open reconciles, which removes the same ids.
        """
        dead = self.dead
        removed = self.faiss.remove(dead)
        self.catalog.clear_tombstones(dead)
        pause("compact.committed")
        self.dead = np.empty(0, np.int64)
        self._dirty = True
        return removed

    def compact(self) -> dict[str, int | str]:
        """Rebuild FAISS without the removed items' ids (and in the layout its size calls for), then save."""
        if not self.writable:
            raise CatalogError("index opened read-only")
        before = len(self.faiss)
        dropped = self._drop_dead() if len(self.dead) else 0
        self.save()
        return {"dropped": int(dropped), "before": before, "after": len(self.faiss), "layout": self.faiss.layout}

    # writing ------------------------------------------------------------------
    def remove_items(self, *, dataset: str | None = None, keys: Sequence[str] = (),
                     urls: Sequence[str] = ()) -> dict[str, int]:
        """Remove items (by key or URL, optionally within ``dataset``; or a whole dataset) without a rebuild.

        One catalog transaction deletes them and records their entry ids as tombstones; from then on
        no search returns them (this process filters the ids; other processes no longer find the
        entries in the catalog). FAISS is untouched until compaction. Raises CatalogError, changing
        nothing, when a key, URL or dataset matches no item.
        """
        if not self.writable:
            raise CatalogError("index opened read-only")
        item_ids = self.catalog.find_items(dataset=dataset, keys=keys, urls=urls)
        whole = dataset if dataset is not None and not keys and not urls else None  # its record goes too
        n_items, dead = self.catalog.remove_items(item_ids, drop_dataset=whole)
        pause("remove.committed")
        self.dead = np.union1d(self.dead, dead)
        return {"items": int(n_items), "entries": int(len(dead)), "tombstones": int(len(self.dead))}

    def set_thumbnails(self, datasets: Sequence[str], tier: str) -> None:
        """Whether entries of ``datasets`` added from now on keep a verification thumbnail: ``full`` (64x64 grey
        PNG, ~4 KB an entry) or ``none`` (only the codes: a candidate is verified against the dataset image
        when it is a local file, else reported unverified with the filter's evidence)."""
        if tier not in THUMBNAIL_TIERS:
            raise CatalogError(f"unknown thumbnail tier {tier!r}; known: {', '.join(THUMBNAIL_TIERS)}")
        if not self.writable:
            raise CatalogError("index opened read-only")
        for ds in dict.fromkeys(datasets):
            self.catalog.set_meta(f"thumbnails:{ds}", tier)
            self._tiers[ds] = tier

    def thumbnails(self, dataset: str) -> str:
        """The thumbnail tier of ``dataset`` (:meth:`set_thumbnails`; ``full`` unless set)."""
        if dataset not in self._tiers:
            self._tiers[dataset] = self.catalog.get_meta(f"thumbnails:{dataset}") or "full"
        return self._tiers[dataset]

    def register_sources(self, sources: Sequence[Any], *, version: str | None = None,
                         new_version: bool = False) -> list[tuple[str, str | None, str]]:
        """Record the datasets ``sources`` are about to fill (name, version, source locations) before an add:
        see :meth:`Catalog.register_datasets` (a different version is refused unless ``new_version``)."""
        if not self.writable:
            raise CatalogError("index opened read-only")
        by_dataset: dict[str, list[str]] = {}
        for source in sources:
            by_dataset.setdefault(source.dataset, []).append(source.location)
        return self.catalog.register_datasets(by_dataset, version=version, new_version=new_version)

    def record_read(self, source: Any) -> None:
        """Record how ``source`` was read (its format and :class:`matcher.sources.ReadCounts`), once it was
        read through: ``info`` shows it per dataset (:meth:`Catalog.record_read`)."""
        if not self.writable:
            raise CatalogError("index opened read-only")
        self.catalog.record_read(source.dataset, source.location, {"format": source.format, **source.counts.as_dict()})

    def record(self, records: Sequence[ItemRecord], *, save_every: float = 30.0) -> None:
        """Store a batch in the catalog, then in FAISS; save FAISS at most every ``save_every`` s."""
        if not self.writable:
            raise CatalogError("index opened read-only")
        records = [replace(r, codes=[(c[0], c[1], None, *c[3:]) for c in r.codes])
                   if r.codes and self.thumbnails(r.dataset) == "none" else r for r in records]
        if records:
            self._dirty = True  # before the commit: an interrupt after it must still save on close
        start()
        new_ids, new_codes, removed = self.catalog.record(records)
        lap("catalog")
        pause("store.recorded")
        if self.local is not None:
            self._record_local(records, new_ids)
        if removed:
            self.faiss.remove(removed)
        if new_ids:
            # the catalog gave ids to the entries of the records that hashed, in order
            longs = [c[3] if len(c) > 3 else None for r in records if r.error is None for c in r.codes]
            if len(longs) == len(new_ids):
                self.filter.put(new_ids, longs)
            codes = np.frombuffer(b"".join(new_codes), dtype=np.uint8).reshape(len(new_ids), -1)
            self.faiss.add(new_ids, codes)
        lap("faiss")
        if new_ids or removed:
            self._dirty = True
        if self._dirty and time.monotonic() - self._last_save >= save_every:
            self.save()

    def enable_local(self, features: int) -> None:
        """Give this index a local-feature tier (:mod:`matcher.index.local`) keeping ``features`` keypoints per
        image from now on (images added before have none: add them again to a new index to have them)."""
        if not self.writable:
            raise CatalogError("index opened read-only")
        if self.local is None:
            self.local = LocalIndex.open(self.root, create=True, writable=True, features=features)

    def _record_local(self, records: Sequence[ItemRecord], new_ids: list[int]) -> None:
        """Queue the keypoints of the records just committed under their ``full`` entry (the first of each)."""
        k = 0
        for r in records:
            if r.error is not None:
                continue
            if r.local is not None and r.codes:
                self.local.add(new_ids[k], *r.local)
            k += len(r.codes)
        self.local.flush()

    # reading --------------------------------------------------------------------
    def filter_radius(self, threshold: int) -> int:
        """The filter threshold (bits of 256) for this index's size (:func:`matcher.index.filtercodes.filter_threshold`)."""
        return filter_threshold(self.index_entries or len(self.faiss), threshold, bits=self.hasher.bits)

    def search_codes(self, codes: np.ndarray, threshold: int, fcodes: np.ndarray | None = None,
                     stages: dict | None = None) -> list[list[tuple[Item, str, int, bytes | None]]]:
        """For each code: [(item, entry kind, distance, entry's verification thumbnail)] within ``threshold``.

        Nearest first, one row per item (its nearest entry). With ``fcodes`` (each code's 256-bit filter
        code), entries whose filter code is further than :meth:`filter_radius` are dropped before the
        catalog is read. ``stages`` (a dict) receives counts: ``hits`` (FAISS), ``filtered`` (after the
        filter), ``unfiltered`` (hits without a filter code, kept), ``filter_radius``.
        """
        start()
        t0 = time.perf_counter()
        hits = self.faiss.range_search(codes, threshold)
        lap("faiss")
        if len(self.dead):  # removed items: their ids stay in FAISS until compaction
            hits = [(ids[keep], d[keep]) for ids, d in hits for keep in [~np.isin(ids, self.dead)]]
        t1 = time.perf_counter()
        n_hits = sum(len(h[0]) for h in hits)
        unfiltered = 0
        if fcodes is not None and n_hits and self.filter.exists:
            radius = self.filter_radius(threshold)
            lens = [len(h[0]) for h in hits]
            keep, fd = self.filter.keep(np.concatenate([h[0] for h in hits]), np.repeat(fcodes, lens, axis=0), radius)
            unfiltered = int((fd < 0).sum())
            kept, at = [], 0
            for (ids, d), n in zip(hits, lens):
                k = keep[at : at + n]
                kept.append((ids[k], d[k]))
                at += n
            hits = kept
            if stages is not None:
                stages["filter_radius"] = radius
        if stages is not None:
            stages["hits"] = stages.get("hits", 0) + n_hits
            stages["filtered"] = stages.get("filtered", 0) + sum(len(h[0]) for h in hits)
            stages["unfiltered"] = stages.get("unfiltered", 0) + unfiltered
            t2 = time.perf_counter()
            stages["faiss_s"], stages["filter_s"] = t1 - t0, t2 - t1
        all_ids = np.unique(np.concatenate([h[0] for h in hits])) if hits else np.empty(0, np.int64)
        t2 = time.perf_counter()
        items = self.catalog.items_for_entries(all_ids.tolist()) if len(all_ids) else {}
        if stages is not None:
            stages["catalog_s"] = time.perf_counter() - t2
            stages["catalog_rows"] = stages.get("catalog_rows", 0) + len(items)
        out: list[list[tuple[Item, str, int, bytes | None]]] = []
        for ids, dists in hits:
            seen: set[int] = set()
            row = []
            for i, d in zip(ids.tolist(), dists.tolist()):
                found = items.get(i)
                if found is None:  # a writer removed it after our FAISS snapshot
                    continue
                item, kind, verify = found
                if item.id in seen:
                    continue
                seen.add(item.id)
                row.append((item, kind, int(d), verify))
            out.append(row)
        lap("catalog")
        return out

    def search_local(self, desc: np.ndarray, limit: int = 8) -> list:
        """:meth:`matcher.index.local.LocalIndex.search` (empty without a local-feature tier)."""
        return self.local.search(desc, dead=self.dead, limit=limit) if self.local is not None else []

    def size_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())
