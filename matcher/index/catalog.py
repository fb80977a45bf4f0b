"""The SQLite catalog: what every index id is and where it came from.

The catalog is the source of truth. Each dataset image is an *item* (unique per
``dataset`` + ``key``) with its provenance and fetch status; each item that hashed has
one or more *entries* (a code plus what it was computed from), and an entry's id is
the id stored in FAISS. The FAISS file is a cache that can always be rebuilt from the
entries' codes.

WAL mode, one transaction per batch: a crash loses at most the batch in flight, never
earlier batches. Every change to the ids FAISS must hold bumps ``meta.entries_seq`` so the
index can tell cheaply whether its FAISS file is up to date.

Removing an item (:meth:`Catalog.remove_items`) deletes it and its entries and records each
entry id in ``tombstones``: FAISS keeps those ids until it is compacted, and searches drop
them. The ids FAISS must hold (entries + tombstones) do not change, so a removal does not
bump ``entries_seq`` and needs no FAISS save; compaction clears the tombstones and bumps it.
Entry ids are never reused (``meta.entry_id_max``), so a tombstoned id can never come to
name a new entry.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from matcher.errors import CatalogError, DamagedIndex, IndexWriteError
from matcher.provenance.flickr import identity_of
from matcher.results import Item
from matcher.testpoints import pause
from matcher.index.catalog_datasets import DatasetTables
from matcher.index.catalog_identities import IdentityTables
from matcher.index.catalog_schema import ITEM_FIELDS, SCHEMA_VERSION, _SCHEMA, _now, is_write_failure, read_only_uri

__all__ = ["Catalog", "ItemRecord", "SCHEMA_VERSION", "ITEM_FIELDS", "read_only_uri", "is_write_failure"]


@dataclass
class ItemRecord:
    """One outcome of ingesting a source item: hashed (``code`` set) or failed (``error`` set)."""

    dataset: str
    key: str
    fields: dict[str, Any] = field(default_factory=dict)  # url, page_url, path, owner, license, title
    width: int | None = None
    height: int | None = None
    hash_hex: str | None = None
    codes: list[tuple] = field(default_factory=list)  # (kind, packed code[, verification thumbnail])
    error: str | None = None
    error_kind: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Flickr identity ({photo_id, owner_nsid, owner_name}: matcher.provenance.flickr.identity_of), for ok and failed items
    identity: dict[str, Any] | None = None
    # keypoints for the local-feature tier (fractions (k, 2), descriptors (k, 32)): matcher.index.local, never the catalog
    local: tuple | None = None


class Catalog(DatasetTables, IdentityTables):
    """A connection to one catalog file. Not shared between threads."""

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if not create and not self.path.exists():
            raise CatalogError(f"no catalog at {self.path}")
        try:
            if readonly:
                self.db = sqlite3.connect(read_only_uri(self.path), uri=True, timeout=30, isolation_level=None)
            else:
                if str(self.path) != ":memory:" and self.path.exists() and self.path.stat().st_size:
                    self._quick_check()  # before anything is written (the journal mode included)
                self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
            if create and not readonly:
                had_identities = self._has_table("identities")
                # one transaction: a kill leaves the whole schema or no table at all (see unfinished())
                try:
                    self.db.executescript(
                        f"BEGIN IMMEDIATE;\n{_SCHEMA}\n"
                        f"INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');\n"
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('entries_seq', '0');\n"
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('entries_count', '0');\n")
                    pause("catalog.schema")
                    self.db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
                if int(self.get_meta("schema_version") or 0) < SCHEMA_VERSION or not had_identities:
                    self._upgrade()  # the schema above added what was missing: fill it, record the version
                if not self._has_reads():  # a datasets table from before ``reads`` (read reports) existed
                    self.db.execute("ALTER TABLE datasets ADD COLUMN reads TEXT")
            version = self.get_meta("schema_version")
        except sqlite3.OperationalError as e:
            self._close_quietly()
            if is_write_failure(e) and not readonly:
                raise IndexWriteError(f"cannot write the index {self.path.parent}: {e}. Everything stored before "
                                      "is intact; free some space or make the folder writable, then run the "
                                      "command again") from None
            raise CatalogError(f"cannot open catalog {self.path}: {e}") from None
        except sqlite3.DatabaseError as e:  # not a database, or a malformed one
            self._close_quietly()
            raise DamagedIndex(f"cannot open catalog {self.path}: {e}. The file is damaged or not a catalog: "
                               f"`matcher check --index {self.path.parent}` says more") from None
        except BaseException:
            self._close_quietly()
            raise
        if version is None:
            raise CatalogError(f"{self.path} is not a matcher catalog (no schema_version)")
        if int(version) > SCHEMA_VERSION:
            raise CatalogError(
                f"catalog {self.path} has schema version {version}; this matcher reads up to {SCHEMA_VERSION}: upgrade matcher"
            )

    def close(self) -> None:
        if not self.readonly:
            self._publish()
        self.db.close()

    def _publish(self) -> None:
        """Leave the catalog as readers want it: WAL checkpointed and removed (rollback-journal mode), so a
        read-only reader creates no ``-wal``/``-shm`` beside it and a copy of the file alone is whole. Skipped,
        at once, while another connection (a server reading the index) keeps the WAL in use; the next writer
        switches WAL on again."""
        try:
            self.db.execute("PRAGMA busy_timeout = 0")
            self.db.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.OperationalError:  # busy (a reader is connected), or the disk refused: WAL stays
            pass

    def _close_quietly(self) -> None:
        db = self.__dict__.get("db")
        if db is not None:
            db.close()

    def _rollback(self) -> None:
        """End the failed transaction, if SQLite has not already (a full disk or I/O error rolls it back
        itself: a second ROLLBACK would then raise "no transaction is active" and hide the real error)."""
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the error being raised says more; SQLite rolls back a connection that closes

    def _quick_check(self) -> None:
        """Refuse to write into a damaged catalog (``PRAGMA quick_check``: every page and record readable)."""
        db = sqlite3.connect(read_only_uri(self.path), uri=True, timeout=30, isolation_level=None)
        try:  # on a connection of its own that only reads: a damaged file is left exactly as it was
            problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")]
        except sqlite3.OperationalError:
            raise  # cannot read it (a full disk, I/O): not damage
        except sqlite3.DatabaseError as e:
            problems = [str(e)]
        finally:
            db.close()
        if problems != ["ok"]:
            raise DamagedIndex(
                f"catalog {self.path} is damaged ({'; '.join(problems)}): nothing was written. "
                f"`matcher check --index {self.path.parent}` says more; restore catalog.sqlite from a backup")

    @staticmethod
    def unfinished(path: str | Path) -> bool:
        """Whether the catalog at ``path`` was never finished: absent, or without its schema and without
        items. That is what a kill during the first ``add`` of an index (after ``meta.json``) leaves: the
        index holds nothing yet (the next ``add`` creates the catalog)."""
        path = Path(path)
        if not path.exists():
            return True
        try:
            db = sqlite3.connect(read_only_uri(path), uri=True, timeout=30)
            try:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "meta" in tables and db.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone():
                    return False
                return "items" not in tables or db.execute("SELECT 1 FROM items LIMIT 1").fetchone() is None
            finally:
                db.close()
        except sqlite3.Error:
            return False

    def _has_table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None

    def _upgrade(self) -> None:
        """Backfill ``identities`` from the items an older matcher stored, and record the schema version,
        in one transaction (a kill rolls both back: the next writable open does it again)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            last = 0
            while True:
                rows = db.execute("SELECT id, url, page_url, owner, extra FROM items WHERE id > ? ORDER BY id LIMIT 10000",
                                  (last,)).fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                batch = []
                for item_id, url, page_url, owner, extra in rows:
                    try:
                        extra = json.loads(extra) if extra else {}
                    except ValueError:
                        extra = {}
                    ident = identity_of({"url": url, "page_url": page_url, "owner": owner}, extra)
                    if ident:
                        batch.append((item_id, ident.get("photo_id"), ident.get("owner_nsid"), ident.get("owner_name")))
                db.executemany("INSERT OR REPLACE INTO identities (item_id, photo_id, owner_nsid, owner_name)"
                               " VALUES (?, ?, ?, ?)", batch)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version' AND CAST(value AS INTEGER) < ?",
                       (str(SCHEMA_VERSION), SCHEMA_VERSION))
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    # meta ---------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    @property
    def entries_seq(self) -> int:
        return int(self.get_meta("entries_seq") or 0)

    @property
    def entries_count(self) -> int:
        """Number of entries, kept in meta so that it costs nothing at 100M rows."""
        value = self.get_meta("entries_count")
        if value is None:
            return int(self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        return int(value)

    # writing ----------------------------------------------------------------
    def record(self, records: Sequence[ItemRecord]) -> tuple[list[int], list[bytes], list[int]]:
        """Store a batch in one transaction.

        Returns (new entry ids, their codes, entry ids removed) so the caller can update
        FAISS. A failure never overwrites an item that already hashed.
        """
        # Long on purpose: one transaction for a batch (items, entries, identities, the ids FAISS must hold);
        # kept whole so its atomicity is read in one place.
        new_ids: list[int] = []
        new_codes: list[bytes] = []
        removed: list[int] = []
        now = _now()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            next_id = self._entry_id_floor() + 1
            identities = self._has_table("identities")  # not in an older catalog opened without its upgrade
            for r in records:
                row = db.execute(
                    "SELECT id, status, attempts FROM items WHERE dataset = ? AND key = ?", (r.dataset, r.key)
                ).fetchone()
                values = {f: r.fields.get(f) for f in ITEM_FIELDS}
                extra = json.dumps(r.extra, sort_keys=True) if r.extra else None
                if r.error is None:
                    if row is None:
                        cur = db.execute(
                            "INSERT INTO items (dataset, key, url, page_url, path, owner, license, title, width, height,"
                            " hash, status, error, error_kind, attempts, added_at, updated_at, extra)"
                            " VALUES (?,?,?,?,?,?,?,?,?,?,?, 'ok', NULL, NULL, 1, ?, ?, ?)",
                            (r.dataset, r.key, *values.values(), r.width, r.height, r.hash_hex, now, now, extra),
                        )
                        item_id = cur.lastrowid
                        if identities and r.identity:
                            self._set_identity(item_id, r.identity)
                    else:
                        item_id = row[0]
                        removed.extend(x[0] for x in db.execute("SELECT id FROM entries WHERE item_id = ?", (item_id,)))
                        db.execute("DELETE FROM entries WHERE item_id = ?", (item_id,))
                        db.execute(
                            "UPDATE items SET url=?, page_url=?, path=?, owner=?, license=?, title=?, width=?, height=?,"
                            " hash=?, status='ok', error=NULL, error_kind=NULL, attempts=attempts+1,"
                            " updated_at=?, extra=? WHERE id=?",
                            (*values.values(), r.width, r.height, r.hash_hex, now, extra, item_id),
                        )
                        if identities:
                            self._set_identity(item_id, r.identity)
                    for kind, code, *thumb in r.codes:
                        db.execute(
                            "INSERT INTO entries (id, item_id, kind, code, thumb) VALUES (?, ?, ?, ?, ?)",
                            (next_id, item_id, kind, code, thumb[0] if thumb else None),
                        )
                        new_ids.append(next_id)
                        new_codes.append(code)
                        next_id += 1
                elif row is None:
                    cur = db.execute(
                        "INSERT INTO items (dataset, key, url, page_url, path, owner, license, title, width, height,"
                        " hash, status, error, error_kind, attempts, added_at, updated_at, extra)"
                        " VALUES (?,?,?,?,?,?,?,?,NULL,NULL,NULL,'failed',?,?,1,?,?,?)",
                        (r.dataset, r.key, *values.values(), r.error, r.error_kind, now, now, extra),
                    )
                    if identities and r.identity:  # a dead link is still evidence the photo was listed
                        self._set_identity(cur.lastrowid, r.identity)
                elif row[1] == "failed":
                    db.execute(
                        "UPDATE items SET error=?, error_kind=?, attempts=attempts+1, updated_at=? WHERE id=?",
                        (r.error, r.error_kind, now, row[0]),
                    )
                    if identities and r.identity:
                        self._set_identity(row[0], r.identity)
            if new_ids:
                self.set_meta("entry_id_max", str(new_ids[-1]))
            if new_ids or removed:
                db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'entries_seq'")
                db.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'entries_count'",
                    (len(new_ids) - len(removed),),
                )
            pause("catalog.record")
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return new_ids, new_codes, removed


    def _entry_id_floor(self) -> int:
        """The largest entry id ever given out: ids above it are free (tombstoned ids are never reused)."""
        high = [self.db.execute("SELECT MAX(id) FROM entries").fetchone()[0], self.get_meta("entry_id_max")]
        if self._has_tombstones_table():
            high.append(self.db.execute("SELECT MAX(entry_id) FROM tombstones").fetchone()[0])
        return max(int(h) for h in high if h is not None) if any(h is not None for h in high) else 0

    def _has_tombstones_table(self) -> bool:
        # a version 1 catalog opened read-only has none (writable opens create it)
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tombstones'").fetchone() is not None

    def find_items(self, *, dataset: str | None = None, keys: Sequence[str] = (), urls: Sequence[str] = ()) -> list[int]:
        """Ids of the items selected the way ``matcher remove`` selects them.

        ``keys`` or ``urls`` (each value must name at least one item), optionally narrowed to
        ``dataset``; or ``dataset`` alone: every item of it. Raises CatalogError naming what
        matched nothing, so that a typo changes nothing.
        """
        if keys and urls:
            raise CatalogError("select items by key or by URL, not both")
        column, values = ("key", list(keys)) if keys else ("url", list(urls))
        where, args = "", []
        if dataset is not None:
            where, args = " AND dataset = ?", [dataset]
        if not values:
            if dataset is None:
                raise CatalogError("nothing selected: give a key, a URL or a dataset")
            ids = [r[0] for r in self.db.execute("SELECT id FROM items WHERE dataset = ?", (dataset,))]
            if not ids and dataset in self.dataset_rows():
                return []  # recorded by an add, but every item of it is gone: removing it drops the record
            if not ids:
                known = ", ".join(sorted(r[0] for r in self.db.execute("SELECT DISTINCT dataset FROM items"))) or "none"
                raise CatalogError(f"no dataset {dataset!r} in the index (datasets: {known})")
            return ids
        ids: list[int] = []
        missing = []
        for v in dict.fromkeys(values):
            found = [r[0] for r in self.db.execute(f"SELECT id FROM items WHERE {column} = ?{where}", (v, *args))]
            if not found:
                missing.append(v)
            ids += found
        if missing:
            scope = f" in dataset {dataset!r}" if dataset is not None else ""
            raise CatalogError(f"no item with {column} {', '.join(repr(m) for m in missing)}{scope}; nothing removed")
        return sorted(set(ids))

    def remove_items(self, item_ids: Sequence[int], *, drop_dataset: str | None = None) -> tuple[int, np.ndarray]:
        """Delete these items and their entries in one transaction; their entry ids become tombstones.

        Returns (items removed, the tombstoned entry ids). ``entries_seq`` is not bumped: FAISS
        still holds exactly entries + tombstones. ``drop_dataset``: also forget that dataset's record
        (name, version: :meth:`dataset_rows`), in the same transaction (a whole dataset removed).
        """
        db = self.db
        now = _now()
        db.execute("BEGIN IMMEDIATE")
        try:
            floor = self._entry_id_floor()
            db.execute("CREATE TEMP TABLE IF NOT EXISTS _remove (id INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM _remove")
            db.executemany("INSERT OR IGNORE INTO _remove (id) VALUES (?)", ((int(i),) for i in item_ids))
            db.execute(
                "INSERT INTO tombstones (entry_id, item_id, dataset, key, removed_at)"
                " SELECT entries.id, items.id, items.dataset, items.key, ? FROM entries"
                " JOIN items ON items.id = entries.item_id WHERE entries.item_id IN (SELECT id FROM _remove)",
                (now,),
            )
            dead = np.fromiter(
                (r[0] for r in db.execute("SELECT entries.id FROM entries WHERE item_id IN (SELECT id FROM _remove)")),
                dtype=np.int64,
            )
            db.execute("DELETE FROM entries WHERE item_id IN (SELECT id FROM _remove)")
            n_items = db.execute("DELETE FROM items WHERE id IN (SELECT id FROM _remove)").rowcount
            db.execute("UPDATE meta SET value = CAST(value AS INTEGER) - ? WHERE key = 'entries_count'", (len(dead),))
            self.set_meta("entry_id_max", str(floor))
            db.execute("DELETE FROM _remove")
            if drop_dataset is not None and self._has_datasets_table():
                db.execute("DELETE FROM datasets WHERE name = ?", (drop_dataset,))
            pause("catalog.remove")
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return n_items, np.sort(dead)

    def tombstone_ids(self) -> np.ndarray:
        """Entry ids removed from the catalog but maybe still in FAISS, sorted."""
        if not self._has_tombstones_table():
            return np.empty(0, np.int64)
        return np.fromiter((r[0] for r in self.db.execute("SELECT entry_id FROM tombstones ORDER BY entry_id")),
                           dtype=np.int64)

    def clear_tombstones(self, ids: np.ndarray) -> None:
        """Forget these tombstones (FAISS no longer holds them) and bump ``entries_seq``: the ids FAISS must
        hold changed."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM tombstones WHERE entry_id = ?", ((int(i),) for i in ids))
            db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'entries_seq'")
            pause("catalog.clear-tombstones")
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    # reading ------------------------------------------------------------------
    def status_of(self, dataset: str, keys: Sequence[str]) -> dict[str, str]:
        """{key: status} for those of ``keys`` already in the catalog."""
        out: dict[str, str] = {}
        keys = list(keys)
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key, status FROM items WHERE dataset = ? AND key IN ({','.join('?' * len(chunk))})"
            out.update(self.db.execute(q, (dataset, *chunk)).fetchall())
        return out

    def entry_ids(self) -> np.ndarray:
        """Every live entry id, sorted (streamed: no list of 100M tuples)."""
        return np.fromiter((r[0] for r in self.db.execute("SELECT id FROM entries ORDER BY id")), dtype=np.int64)

    def entry_codes(self, ids: Iterable[int] | None = None) -> Iterator[tuple[int, bytes]]:
        if ids is None:
            yield from self.db.execute("SELECT id, code FROM entries ORDER BY id")
            return
        ids = [int(i) for i in ids]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            yield from self.db.execute(f"SELECT id, code FROM entries WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    _ITEM_COLS = (
        "items.id, dataset, key, url, page_url, path, owner, license, title, width, height, hash, status,"
        " error, added_at, extra"
    )

    @staticmethod
    def _item(row) -> Item:
        (id_, dataset, key, url, page_url, path, owner, license, title, w, h, hash_, status, error, added, extra) = row
        return Item(
            id=id_, dataset=dataset, key=key, url=url, page_url=page_url, path=path, owner=owner, license=license,
            title=title, width=w, height=h, hash=hash_, status=status, error=error, added_at=added,
            extra=json.loads(extra) if extra else {},
        )

    #: The thumbnail :meth:`items_for_entries` gives for an entry whose stored thumbnail cannot be read
    #: (a damaged page): not an image, so verifying against it says "unverifiable" (matcher.pipeline.photo).
    DAMAGED_THUMB = b""

    def items_for_entries(self, entry_ids: Iterable[int]) -> dict[int, tuple[Item, str, bytes | None]]:
        """{entry id: (item, entry kind, the entry's verification thumbnail)} for the given FAISS ids.

        A damaged catalog costs only what it damaged: a chunk that SQLite cannot read is read again entry by
        entry; an entry whose thumbnail cannot be read comes with :data:`DAMAGED_THUMB`; an entry whose row
        cannot be read at all is left out and counted in :attr:`unreadable`."""
        ids = [int(i) for i in entry_ids]
        out: dict[int, tuple[Item, str, bytes | None]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            try:
                out.update(self._entries_rows(chunk, True))
            except sqlite3.DatabaseError:
                for one in chunk:
                    try:
                        out.update(self._entries_rows([one], True))
                    except sqlite3.DatabaseError:
                        try:
                            out.update(self._entries_rows([one], False))
                        except sqlite3.DatabaseError:
                            self.unreadable += 1
        return out

    #: Entries :meth:`items_for_entries` could not read (a damaged catalog), since this connection opened.
    unreadable = 0

    def _entries_rows(self, ids: list[int], thumbs: bool) -> dict[int, tuple[Item, str, bytes | None]]:
        thumb = "entries.thumb" if thumbs else "NULL"
        q = (f"SELECT entries.id, entries.kind, {thumb}, {self._ITEM_COLS} FROM entries"
             f" JOIN items ON items.id = entries.item_id WHERE entries.id IN ({','.join('?' * len(ids))})")
        return {row[0]: (self._item(row[3:]), row[1], row[2] if thumbs else self.DAMAGED_THUMB)
                for row in self.db.execute(q, ids).fetchall()}

    def items_by_id(self, item_ids: Iterable[int]) -> dict[int, Item]:
        """{item id: item} for the given ids (unknown ids are left out; removed items are still found)."""
        ids = [int(i) for i in item_ids]
        out: dict[int, Item] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT {self._ITEM_COLS} FROM items WHERE items.id IN ({','.join('?' * len(chunk))})"
            for row in self.db.execute(q, chunk):
                it = self._item(row)
                out[it.id] = it
        return out


    def entry_thumb(self, item_id: int, kind: str = "full") -> bytes | None:
        """The stored verification thumbnail (64x64 grey PNG) of one entry of an item, if any."""
        row = self.db.execute("SELECT thumb FROM entries WHERE item_id = ? AND kind = ? LIMIT 1",
                              (int(item_id), kind)).fetchone()
        return row[0] if row else None

    def get_item(self, dataset: str, key: str) -> Item | None:
        row = self.db.execute(
            f"SELECT {self._ITEM_COLS} FROM items WHERE dataset = ? AND key = ?", (dataset, key)
        ).fetchone()
        return self._item(row) if row else None

    def items(self, *, dataset: str | None = None, status: str | None = None) -> Iterator[Item]:
        q = f"SELECT {self._ITEM_COLS} FROM items WHERE 1=1"
        args: list[Any] = []
        if dataset is not None:
            q += " AND dataset = ?"
            args.append(dataset)
        if status is not None:
            q += " AND status = ?"
            args.append(status)
        for row in self.db.execute(q + " ORDER BY id", args):
            yield self._item(row)


    #: Failed downloads whose error says the image is gone for good: HTTP 404 Not Found, 410 Gone and
    #: 451 Unavailable For Legal Reasons (taken down), and host names DNS says do not exist (matcher/fetch.py
    #: records "could not resolve host ..." once retries are over). Timeouts, refused connections, 403, 429
    #: and 5xx may pass, so they are not counted.
    DEAD_LINK_SQL = (
        "status = 'failed' AND ((error_kind = 'http' AND (error LIKE 'HTTP 404%' OR error LIKE 'HTTP 410%'"
        " OR error LIKE 'HTTP 451%')) OR (error_kind = 'connection' AND error LIKE 'could not resolve host%'))"
    )


