"""A sharded index: a folder whose ``shards.json`` lists shard folders, each an ordinary index directory.

Why: one index directory holds one FAISS file and one SQLite catalog, which one machine must load
and one writer must fill. A sharded index cuts the same data into shards (an index directory each:
``meta.json``, ``catalog.sqlite``, ``index.faiss`` and whatever per-index files exist, e.g.
``filter.codes``) so that shards can be built by different workers and searched in different
processes or machines (:mod:`matcher.engine.cluster`), while ``matcher search/info/lookup/serve``
treat the folder as one index.

``shards.json`` (written atomically, :mod:`matcher.atomic`)::

    {"format": "matcher-shards", "format_version": 1, "hasher": {...}, "verifier": {...} | null,
     "index_id": "...", "shards": [{"number": 0, "path": "shard-0000", "name": "...", "items": 123,
     "entries": 456}, ...]}

``path`` is relative to the folder (a shard folder elsewhere is an absolute path). ``number`` is the
shard's place in global item ids and never changes or is reused: the item ``local`` of shard ``n``
is ``n << LOCAL_BITS | local`` everywhere outside the shard (results, ``/api/v1/items/{id}/image``,
letters, lookups). Shard 0's ids equal its own, so a one-shard index reports the ids it always did.
Global ids stay below 2**53 (``MAX_SHARDS``), so JavaScript reads them exactly.

Only shards listed in ``shards.json`` exist for a search: a shard folder written but not yet
listed (an ingest killed before its commit) is ignored until a later commit lists it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from matcher.atomic import write_bytes
from matcher.errors import CatalogError, IndexMismatch
from matcher.hashing.hashers import Hasher, get_hasher, hasher_from_identity
from matcher.index.catalog import Catalog
from matcher.index.store import CATALOG, FAISS, META, SHARDED, IndexStore
from matcher.results import Item

__all__ = ["MANIFEST", "MANIFEST_FORMAT", "MANIFEST_VERSION", "LOCAL_BITS", "MAX_SHARDS", "global_id",
           "split_id", "is_sharded", "read_manifest", "write_manifest", "shard_meta", "shard_signature",
           "ShardedCatalog", "ShardedStore", "open_index", "merge_rows"]

MANIFEST = SHARDED
MANIFEST_FORMAT = "matcher-shards"
MANIFEST_VERSION = 1
#: Bits of a global item id that hold the shard's own item id (2**40: a trillion items a shard).
LOCAL_BITS = 40
#: Shard numbers are below this, so that global ids stay below 2**53 (exact in JSON read by JavaScript).
MAX_SHARDS = 1 << (53 - LOCAL_BITS)
_LOCAL_MASK = (1 << LOCAL_BITS) - 1


def global_id(shard: int, local: int) -> int:
    return (int(shard) << LOCAL_BITS) | int(local)


def split_id(gid: int) -> tuple[int, int]:
    """(shard number, the shard's own item id) of a global item id."""
    gid = int(gid)
    return gid >> LOCAL_BITS, gid & _LOCAL_MASK


def is_sharded(root: str | os.PathLike) -> bool:
    return (Path(root) / MANIFEST).is_file()


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """``shards.json`` of ``root``, checked (format, version, shard numbers); CatalogError if unreadable."""
    path = Path(root) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CatalogError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise CatalogError(f"{path} is not a matcher shard list")
    if int(data.get("format_version", 0)) > MANIFEST_VERSION:
        raise CatalogError(f"{path} uses shard list format {data['format_version']}; this matcher reads up to "
                           f"{MANIFEST_VERSION}")
    numbers = [s.get("number") for s in data.get("shards", [])]
    if any(not isinstance(n, int) or not 0 <= n < MAX_SHARDS for n in numbers) or len(set(numbers)) != len(numbers):
        raise CatalogError(f"{path}: shard numbers must be distinct integers in [0, {MAX_SHARDS})")
    return data


def shard_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta.json`` of one shard folder (CatalogError if it is not an index directory)."""
    try:
        return json.loads((Path(path) / META).read_text())
    except (OSError, ValueError) as e:
        raise CatalogError(f"shard {path} is not a readable matcher index: {e}") from None


def write_manifest(root: str | os.PathLike, shards: Sequence[dict[str, Any]], *, index_id: str | None = None) -> dict:
    """Write ``shards.json`` listing ``shards`` (dicts with ``number``, ``path`` and optional counts), atomically.

    Every shard must be an index directory built with the same hasher and verifier (IndexMismatch otherwise);
    they are recorded in the list so that a client can hash queries without opening any shard.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    hasher = verifier = None
    shards = [dict(s) for s in shards]
    for i, s in enumerate(shards):
        meta = shard_meta(_shard_path(root, s["path"]))
        if "entries" not in s:  # the whole index's size sets the filter radius of every shard
            catalog = Catalog(_shard_path(root, s["path"]) / CATALOG, readonly=True)
            try:
                s["entries"] = catalog.entries_count
            finally:
                catalog.close()
        if i == 0:
            hasher, verifier = meta.get("hasher"), meta.get("verifier")
        elif meta.get("hasher") != hasher or meta.get("verifier") != verifier:
            raise IndexMismatch(f"shard {s['path']} hashes with {meta.get('hasher')} / {meta.get('verifier')}; "
                                f"shard {shards[0]['path']} with {hasher} / {verifier}: one index has one hasher")
    data = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "hasher": hasher, "verifier": verifier,
            "index_id": index_id or uuid.uuid4().hex,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "shards": sorted((dict(s) for s in shards), key=lambda s: s["number"])}
    read_numbers = [s["number"] for s in data["shards"]]
    if len(set(read_numbers)) != len(read_numbers) or any(not 0 <= n < MAX_SHARDS for n in read_numbers):
        raise CatalogError(f"shard numbers must be distinct integers in [0, {MAX_SHARDS})")
    write_bytes(root / MANIFEST, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return data


def _shard_path(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def shard_signature(path: str | os.PathLike) -> tuple:
    """What changes when a shard's searchable content changes: its FAISS file (inode, mtime, size) and its
    catalog's size and mtime (a remove records tombstones there). A worker's cache key."""
    out = []
    for name in (FAISS, CATALOG, CATALOG + "-wal"):
        try:
            st = os.stat(Path(path) / name)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


def merge_rows(per_shard: Iterable[tuple[int, list[list[tuple]]]], n_codes: int) -> list[list[tuple]]:
    """Rows of :meth:`IndexStore.search_codes` from several shards, as ``(shard number, rows)``, merged per code
    into one row with global item ids, nearest first (then by global id: the order does not depend on which
    shard answered first)."""
    out: list[list[tuple]] = [[] for _ in range(n_codes)]
    for number, rows in per_shard:
        if len(rows) != n_codes:
            raise CatalogError(f"shard {number} answered {len(rows)} codes of {n_codes}")
        for merged, row in zip(out, rows):
            merged.extend((to_global(number, item), *rest) for item, *rest in row)
    for row in out:
        row.sort(key=lambda r: (r[2], r[0].id))
    return out


def to_global(number: int, item: Item) -> Item:
    return item if number == 0 else replace(item, id=global_id(number, item.id))


class ShardedCatalog:
    """The read side of :class:`matcher.index.catalog.Catalog` over every shard's catalog, in global item ids
    (what search results, the web API, lookups and ``info`` use). Not shared between threads."""

    def __init__(self, catalogs: dict[int, Catalog]):
        self.shards = catalogs

    def _by_shard(self, item_ids: Iterable[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for gid in item_ids:
            n, local = split_id(gid)
            if n in self.shards:
                out.setdefault(n, []).append(local)
        return out

    def items_by_id(self, item_ids: Iterable[int]) -> dict[int, Item]:
        out: dict[int, Item] = {}
        for n, ids in self._by_shard(item_ids).items():
            for it in self.shards[n].items_by_id(ids).values():
                g = to_global(n, it)
                out[g.id] = g
        return out

    def entry_thumb(self, item_id: int, kind: str = "full") -> bytes | None:
        n, local = split_id(item_id)
        return self.shards[n].entry_thumb(local, kind) if n in self.shards else None

    @property
    def unreadable(self) -> int:
        """Entries the shards' catalogs could not read (a damaged catalog; :attr:`Catalog.unreadable`)."""
        return sum(c.unreadable for c in self.shards.values())

    @property
    def has_identities(self) -> bool:
        return any(c.has_identities for c in self.shards.values())

    def lookup(self, **kw: Any) -> list[Item]:
        out = [to_global(n, it) for n, c in self.shards.items() for it in c.lookup(**kw)]
        return sorted(out, key=lambda it: (it.dataset, it.key, it.id))

    def identities_of(self, item_ids: Iterable[int]) -> dict[int, dict[str, str | None]]:
        return {global_id(n, local): ident for n, ids in self._by_shard(item_ids).items()
                for local, ident in self.shards[n].identities_of(ids).items()}

    def items(self, **kw: Any) -> Iterator[Item]:
        for n, c in sorted(self.shards.items()):
            for it in c.items(**kw):
                yield to_global(n, it)

    def stats(self) -> list[dict[str, Any]]:
        return _sum_datasets([c.stats() for c in self.shards.values()])

    def dataset_overview(self) -> list[dict[str, Any]]:
        return _sum_datasets([c.dataset_overview() for c in self.shards.values()])

    def close(self) -> None:
        for c in self.shards.values():
            c.close()


def _sum_datasets(per_shard: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-dataset rows of several shards added up (numbers summed, failures by kind summed, the rest kept from
    the first shard naming the dataset; ``created_at`` the earliest, ``updated_at`` the latest)."""
    out: dict[str, dict[str, Any]] = {}
    for rows in per_shard:
        for row in rows:
            d = out.get(row["dataset"])
            if d is None:
                out[row["dataset"]] = {**row, "failures": dict(row.get("failures", {}))}
                continue
            for k, v in row.items():
                if k == "failures":
                    for kind, n in v.items():
                        d["failures"][kind] = d["failures"].get(kind, 0) + n
                elif isinstance(v, int) and not isinstance(v, bool):
                    d[k] = d.get(k, 0) + v
                elif k == "created_at" and v and (not d.get(k) or v < d[k]):
                    d[k] = v
                elif k == "updated_at" and v and (not d.get(k) or v > d[k]):
                    d[k] = v
                elif k in ("version", "source") and v and not d.get(k):
                    d[k] = v
                elif k == "read" and v:
                    d[k] = _sum_reads(d.get(k), v)
    return [out[k] for k in sorted(out)]


def _sum_reads(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Two shards' ``read`` records of one dataset (how its sources were read) added up."""
    if not a:
        return b
    skipped = dict(a.get("skipped") or {})
    for why, n in (b.get("skipped") or {}).items():
        skipped[why] = skipped.get(why, 0) + n
    return {"formats": list(dict.fromkeys((a.get("formats") or []) + (b.get("formats") or []))),
            **{k: (a.get(k) or 0) + (b.get(k) or 0) for k in ("rows", "items", "faces")}, "skipped": skipped}


class _Sized:
    """``len()`` and ``layout`` of the shards' FAISS files together (what ``info`` and the web overview read)."""

    def __init__(self, n: int, layout: str):
        self.n, self.layout = n, layout

    def __len__(self) -> int:
        return self.n


#: ``searcher(codes, threshold, *args, **kw)`` -> rows with global ids (:func:`merge_rows`).
Searcher = Callable[..., list[list[tuple]]]


class ShardedStore:
    """An open sharded index, read-only: the parts of :class:`IndexStore` that searching and reading use.

    ``load=True`` opens every shard as an :class:`IndexStore` in this process (FAISS in memory) and searches
    them here, one after the other (the local engine). ``load=False`` opens only the catalogs (for a client whose
    shards are searched elsewhere: pass a ``searcher``, :mod:`matcher.engine.cluster`).
    """

    def __init__(self, root: Path, manifest: dict[str, Any], hasher: Hasher, catalogs: dict[int, Catalog],
                 stores: dict[int, IndexStore]):
        self.root = root
        self.manifest = manifest
        self.index_id = manifest.get("index_id")
        self.hasher = hasher
        self.regions = manifest.get("verifier") is not None
        self.stores = stores
        self.catalog = ShardedCatalog(catalogs)
        self.writable = False
        # the local-feature tier (matcher.index.local) is not searched across shards yet: candidates come from
        # the 64-bit codes (and filter codes) only
        self.local = None
        self.searcher: Searcher = self._search_here
        self.shard_paths = {s["number"]: _shard_path(root, s["path"]) for s in manifest["shards"]}
        layouts = sorted({s.faiss.layout for s in stores.values()})
        entries = sum(len(s.faiss) for s in stores.values()) if stores else sum(
            int(s.get("entries", 0)) for s in manifest["shards"])
        dead = sum(len(s.dead) for s in stores.values())
        self.faiss = _Sized(entries, f"{len(manifest['shards'])} shards" + (f" ({', '.join(layouts)})" if layouts else ""))
        self.dead = range(dead)
        for st in stores.values():  # each shard filters at the whole index's radius (matcher.index.filtercodes)
            st.index_entries = entries

    @classmethod
    def open(cls, root: str | os.PathLike, *, hasher: Hasher | str | None = None, load: bool = True) -> "ShardedStore":
        root = Path(root)
        manifest = read_manifest(root)
        stored = manifest.get("hasher") or {}
        if isinstance(hasher, str):
            hasher = get_hasher(hasher)
        if hasher is not None and hasher.identity() != {k: stored.get(k) for k in ("name", "bits", "version", "params")}:
            raise IndexMismatch(f"index {root} was built with hasher {stored}, but the query hasher is "
                                f"{hasher.identity()}; search it with the hasher it was built with")
        index_hasher = hasher or hasher_from_identity(stored)
        catalogs: dict[int, Catalog] = {}
        stores: dict[int, IndexStore] = {}
        try:
            for s in manifest["shards"]:
                path = _shard_path(root, s["path"])
                if load:
                    st = IndexStore.open(path, hasher=index_hasher)
                    stores[s["number"]], catalogs[s["number"]] = st, st.catalog
                else:
                    if shard_meta(path).get("hasher") != stored:
                        raise IndexMismatch(f"shard {path} hashes with another hasher than {root / MANIFEST} says")
                    catalogs[s["number"]] = Catalog(path / CATALOG, readonly=True)
        except BaseException:
            for st in stores.values():
                st.close()
            if not load:
                for c in catalogs.values():
                    c.close()
            raise
        return cls(root, manifest, index_hasher, catalogs, stores)

    def _search_here(self, codes, threshold: int, *args, **kw) -> list[list[tuple]]:
        return merge_rows(((n, st.search_codes(codes, threshold, *args, **kw)) for n, st in sorted(self.stores.items())),
                          len(codes))

    def search_codes(self, codes, threshold: int, *args, **kw) -> list[list[tuple]]:
        """As :meth:`IndexStore.search_codes`, over every shard, in global item ids."""
        return self.searcher(codes, threshold, *args, **kw)

    def signature(self) -> tuple:
        """Changes when ``shards.json`` or any listed shard's searchable content changes (the web server reloads)."""
        st = os.stat(self.root / MANIFEST)
        return (st.st_ino, st.st_mtime_ns, st.st_size), tuple(shard_signature(p) for _, p in sorted(self.shard_paths.items()))

    def size_on_disk(self) -> int:
        total = 0
        for p in self.shard_paths.values():
            total += sum(f.stat().st_size for f in p.iterdir() if f.is_file())
        return total + (self.root / MANIFEST).stat().st_size

    def close(self) -> None:
        if self.stores:
            for st in self.stores.values():
                st.close()
        else:
            self.catalog.close()

    def __enter__(self) -> "ShardedStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_index(root: str | os.PathLike, *, hasher: Hasher | str | None = None,
               load: bool = True) -> IndexStore | ShardedStore:
    """Open an index directory or a sharded index (a folder with ``shards.json``) for reading."""
    if is_sharded(root):
        return ShardedStore.open(root, hasher=hasher, load=load)
    return IndexStore.open(root, hasher=hasher)
