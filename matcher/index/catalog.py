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
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence
from urllib.parse import quote

import numpy as np

from matcher.errors import CatalogError, DamagedIndex, IndexWriteError
from matcher.provenance.flickr import identity_of, normalize_nsid, parse_url
from matcher.results import Item
from matcher.testpoints import pause

__all__ = ["Catalog", "ItemRecord", "SCHEMA_VERSION", "ITEM_FIELDS", "read_only_uri", "is_write_failure"]

#: 2 added ``tombstones`` and ``meta.entry_id_max``; 3 added ``identities`` (Flickr photo id and owner per
#: item, backfilled from the items when an older catalog is opened for writing). An older catalog is
#: upgraded when opened for writing; read as it is, it simply has no identities.
SCHEMA_VERSION = 3

# Provenance fields a source may fill in (besides dataset and key).
ITEM_FIELDS = ("url", "page_url", "path", "owner", "license", "title")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id         INTEGER PRIMARY KEY,
    dataset    TEXT NOT NULL,
    key        TEXT NOT NULL,
    url        TEXT,
    page_url   TEXT,
    path       TEXT,
    owner      TEXT,
    license    TEXT,
    title      TEXT,
    width      INTEGER,
    height     INTEGER,
    hash       TEXT,
    status     TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error      TEXT,
    error_kind TEXT,
    attempts   INTEGER NOT NULL DEFAULT 1,
    added_at   TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    extra      TEXT,
    UNIQUE (dataset, key)
);
CREATE INDEX IF NOT EXISTS items_url ON items (url);
CREATE TABLE IF NOT EXISTS entries (
    id      INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    kind    TEXT NOT NULL DEFAULT 'full',
    code    BLOB NOT NULL,
    thumb   BLOB
);
CREATE INDEX IF NOT EXISTS entries_item ON entries (item_id);
CREATE TABLE IF NOT EXISTS tombstones (
    entry_id   INTEGER PRIMARY KEY,
    item_id    INTEGER NOT NULL,
    dataset    TEXT NOT NULL,
    key        TEXT NOT NULL,
    removed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    item_id    INTEGER PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,
    photo_id   TEXT,
    owner_nsid TEXT,
    owner_name TEXT
);
CREATE INDEX IF NOT EXISTS identities_photo ON identities (photo_id);
CREATE INDEX IF NOT EXISTS identities_nsid ON identities (owner_nsid);
CREATE INDEX IF NOT EXISTS identities_name ON identities (lower(owner_name));
CREATE TABLE IF NOT EXISTS datasets (
    name       TEXT PRIMARY KEY,
    version    TEXT,
    source     TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    reads      TEXT
);
"""


_SQLITE_WRITE_ERRORS = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PERM")


def is_write_failure(e: sqlite3.OperationalError) -> bool:
    """Whether SQLite failed for want of a writable, non-full file system (not a lock, not a bug)."""
    name = getattr(e, "sqlite_errorname", "")  # Python >= 3.11
    return name.startswith(_SQLITE_WRITE_ERRORS) or any(
        w in str(e) for w in ("disk is full", "readonly database", "disk I/O error", "unable to open"))


def read_only_uri(path: str | Path) -> str:
    """The SQLite URI that opens ``path`` for reading only: it never writes, never switches the journal mode,
    leaves nothing behind at close. When its folder is not writable (read-only media, a read-only mount or
    share) it is also ``immutable``: SQLite then takes no locks and needs no ``-shm`` file (a catalog is
    published closed: its writer checkpointed and removed its WAL)."""
    path = Path(path).absolute()
    uri = f"file:{quote(str(path))}?mode=ro"
    if not os.access(path.parent, os.W_OK):
        uri += "&immutable=1"
    return uri


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        v = json.loads(text) if text else {}
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


class Catalog:
    """A connection to one catalog file. Not shared between threads."""

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False):
        self.path = Path(path)
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
        self.db.close()

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

    def _set_identity(self, item_id: int, identity: dict[str, Any] | None) -> None:
        if identity and any(identity.get(k) for k in ("photo_id", "owner_nsid", "owner_name")):
            self.db.execute("INSERT OR REPLACE INTO identities (item_id, photo_id, owner_nsid, owner_name) VALUES (?, ?, ?, ?)",
                            (item_id, identity.get("photo_id"), identity.get("owner_nsid"), identity.get("owner_name")))
        else:
            self.db.execute("DELETE FROM identities WHERE item_id = ?", (item_id,))

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

    @property
    def has_identities(self) -> bool:
        """Whether Flickr identities are recorded: False for an older catalog not yet opened for writing
        (identity lookups then find nothing; open it writable once, or rebuild it, to backfill them)."""
        return self._has_table("identities")

    def lookup(self, photo_id: str | int | None = None, owner_nsid: str | None = None, owner_name: str | None = None,
               url: str | None = None) -> list[Item]:
        """Items listed under any of the given selectors, ok or failed, by (dataset, key).

        ``photo_id``: a Flickr photo id; ``owner_nsid``: an NSID; ``owner_name``: a Flickr user name
        or path alias (case-insensitive); ``url``: any Flickr URL form (:func:`matcher.provenance.flickr.parse_url`)
        selects its photo id, and any URL selects the items with exactly that image URL.
        """
        photo_ids: list[str] = []
        if photo_id is not None:
            text = str(photo_id).strip()
            photo_ids.append(str(int(text)) if text.isdigit() and text.isascii() else text)
        exact_url = None
        if url is not None:
            exact_url = url.strip()
            ref = parse_url(url)
            if ref is not None:
                photo_ids.append(ref.photo_id)
        ids: set[int] = set()
        if self.has_identities:
            queries: list[tuple[str, list[str]]] = []  # one indexed query per selector
            if photo_ids:
                queries.append((f"photo_id IN ({','.join('?' * len(photo_ids))})", photo_ids))
            if owner_nsid is not None and owner_nsid.strip():
                queries.append(("owner_nsid = ?", [normalize_nsid(owner_nsid) or owner_nsid.strip()]))
            if owner_name is not None and owner_name.strip():
                queries.append(("lower(owner_name) = lower(?)", [owner_name.strip()]))
            for clause, args in queries:
                ids.update(r[0] for r in self.db.execute(f"SELECT item_id FROM identities WHERE {clause}", args))
        if exact_url:
            ids.update(r[0] for r in self.db.execute("SELECT id FROM items WHERE url = ?", (exact_url,)))
        items = self.items_by_id(ids).values()
        return sorted(items, key=lambda it: (it.dataset, it.key, it.id))

    def identities_of(self, item_ids: Iterable[int]) -> dict[int, dict[str, str | None]]:
        """{item id: {"photo_id", "owner_nsid", "owner_name"}} for those of the items that have a Flickr identity."""
        out: dict[int, dict[str, str | None]] = {}
        if not self.has_identities:
            return out
        ids = [int(i) for i in item_ids]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = (f"SELECT item_id, photo_id, owner_nsid, owner_name FROM identities"
                 f" WHERE item_id IN ({','.join('?' * len(chunk))})")
            for item_id, photo_id, nsid, name in self.db.execute(q, chunk):
                out[item_id] = {"photo_id": photo_id, "owner_nsid": nsid, "owner_name": name}
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

    def stats(self) -> list[dict[str, Any]]:
        """Per dataset: items, hashed, failed, entries, and failures by kind."""
        out: dict[str, dict[str, Any]] = {}
        for dataset, status, n in self.db.execute(
            "SELECT dataset, status, COUNT(*) FROM items GROUP BY dataset, status ORDER BY dataset"
        ):
            d = out.setdefault(dataset, {"dataset": dataset, "items": 0, "hashed": 0, "failed": 0, "entries": 0, "failures": {}})
            d["items"] += n
            d["hashed" if status == "ok" else "failed"] += n
        for dataset, n in self.db.execute(
            "SELECT items.dataset, COUNT(*) FROM entries JOIN items ON items.id = entries.item_id GROUP BY items.dataset"
        ):
            out[dataset]["entries"] = n
        for dataset, kind, n in self.db.execute(
            "SELECT dataset, COALESCE(error_kind, 'other'), COUNT(*) FROM items WHERE status = 'failed'"
            " GROUP BY dataset, error_kind"
        ):
            out[dataset]["failures"][kind] = n
        return list(out.values())

    # datasets ---------------------------------------------------------------------
    def _has_datasets_table(self) -> bool:
        # a catalog written before the table existed and opened read-only has none (writable opens create it)
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'datasets'").fetchone() is not None

    def _has_reads(self) -> bool:
        return any(r[1] == "reads" for r in self.db.execute("PRAGMA table_info(datasets)"))

    def dataset_rows(self) -> dict[str, dict[str, Any]]:
        """{name: {"version", "source", "created_at", "updated_at", "reads"}} of the datasets ``add``
        recorded; ``reads``: {source location: how it was read (:meth:`record_read`)}."""
        if not self._has_datasets_table():
            return {}
        reads = "reads" if self._has_reads() else "NULL"
        return {name: {"version": version, "source": source, "created_at": created, "updated_at": updated,
                       "reads": _json_object(r)}
                for name, version, source, created, updated, r in self.db.execute(
                    f"SELECT name, version, source, created_at, updated_at, {reads} FROM datasets ORDER BY name")}

    def record_read(self, dataset: str, location: str, read: dict[str, Any]) -> None:
        """Record how one source of ``dataset`` was last read through: ``{"format", "rows", "items",
        "faces", "skipped": {reason: rows}}`` (a later read of the same location replaces it)."""
        if not self._has_reads():
            return
        row = self.db.execute("SELECT reads FROM datasets WHERE name = ?", (dataset,)).fetchone()
        if row is None:
            return
        reads = _json_object(row[0])
        reads[location] = read
        self.db.execute("UPDATE datasets SET reads = ? WHERE name = ?", (json.dumps(reads), dataset))

    def register_datasets(self, sources: dict[str, list[str]], *, version: str | None = None,
                          new_version: bool = False) -> list[tuple[str, str | None, str]]:
        """Record each dataset an ``add`` is about to fill: ``{name: [source locations]}``, at ``version``.

        A dataset recorded at another version is refused (CatalogError, nothing changed, for every
        dataset of the call) unless ``new_version``: then its version is updated. Without ``version``
        a dataset keeps the version it has. Returns ``[(name, old version, new version)]`` for the
        versions that changed (a dataset's first version included).
        """
        if new_version and version is None:
            raise CatalogError("--new-version needs --version V: the version the dataset now is")
        rows = self.dataset_rows()
        for name in sources:
            old = rows.get(name, {}).get("version")
            if version is not None and old is not None and old != version and not new_version:
                raise CatalogError(
                    f"dataset {name!r} is version {old!r} in this index, not {version!r}: adding to it would mix two "
                    f"versions. Pass --new-version to record that {name!r} is now version {version!r} (items already "
                    f"added stay until `matcher remove --dataset {name}`), or add it under another --dataset name; "
                    "nothing was changed")
        now = _now()
        changed = []
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, locations in sources.items():
                old = rows.get(name)
                source = "; ".join(dict.fromkeys(locations)) or None
                if old is None:
                    first = db.execute("SELECT MIN(added_at) FROM items WHERE dataset = ?", (name,)).fetchone()[0]
                    db.execute("INSERT INTO datasets (name, version, source, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                               (name, version, source, first or now, now))
                else:
                    db.execute("UPDATE datasets SET version = COALESCE(?, version), source = ?, updated_at = ? WHERE name = ?",
                               (version, source, now, name))
                if version is not None and (old is None or old["version"] != version):
                    changed.append((name, None if old is None else old["version"], version))
            db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return changed

    #: Failed downloads whose error says the image is gone for good: HTTP 404 Not Found, 410 Gone and
    #: 451 Unavailable For Legal Reasons (taken down), and host names DNS says do not exist (matcher/fetch.py
    #: records "could not resolve host ..." once retries are over). Timeouts, refused connections, 403, 429
    #: and 5xx may pass, so they are not counted.
    DEAD_LINK_SQL = (
        "status = 'failed' AND ((error_kind = 'http' AND (error LIKE 'HTTP 404%' OR error LIKE 'HTTP 410%'"
        " OR error LIKE 'HTTP 451%')) OR (error_kind = 'connection' AND error LIKE 'could not resolve host%'))"
    )

    def dataset_overview(self) -> list[dict[str, Any]]:
        """Per dataset, by name: :meth:`stats` plus ``version``, ``source``, ``created_at``, ``updated_at``
        (None when ``add`` never recorded the dataset), ``dead_links`` (failed items whose image is gone,
        :data:`DEAD_LINK_SQL`) and ``removed`` / ``removed_entries`` (items removed and their entries,
        until ``matcher compact`` takes them out of FAISS). A dataset recorded but without items is listed
        with zeros."""
        stats = {d["dataset"]: d for d in self.stats()}
        rows = self.dataset_rows()
        dead = dict(self.db.execute(f"SELECT dataset, COUNT(*) FROM items WHERE {self.DEAD_LINK_SQL} GROUP BY dataset"))
        removed: dict[str, tuple[int, int]] = {}
        if self._has_tombstones_table():
            removed = {ds: (items, entries) for ds, items, entries in self.db.execute(
                "SELECT dataset, COUNT(DISTINCT item_id), COUNT(*) FROM tombstones GROUP BY dataset")}
        out = []
        for name in sorted(set(stats) | set(rows)):
            d = stats.get(name) or {"dataset": name, "items": 0, "hashed": 0, "failed": 0, "entries": 0, "failures": {}}
            r = rows.get(name, {})
            gone = removed.get(name, (0, 0))
            out.append({**d, "version": r.get("version"), "dead_links": dead.get(name, 0), "removed": gone[0],
                        "removed_entries": gone[1], "source": r.get("source"), "created_at": r.get("created_at"),
                        "updated_at": r.get("updated_at"), "read": _read_summary(r.get("reads") or {})})
        return out


def _read_summary(reads: dict[str, Any]) -> dict[str, Any] | None:
    """How a dataset's sources were read, summed: ``{"formats", "rows", "items", "faces", "skipped"}``; None
    when no read was recorded (an index built before matcher recorded them)."""
    if not reads:
        return None
    out: dict[str, Any] = {"formats": [], "rows": 0, "items": 0, "faces": 0, "skipped": {}}
    for r in reads.values():
        if not isinstance(r, dict):
            continue
        if r.get("format") and r["format"] not in out["formats"]:
            out["formats"].append(r["format"])
        for k in ("rows", "items", "faces"):
            out[k] += int(r.get(k) or 0)
        for why, n in (r.get("skipped") or {}).items():
            out["skipped"][why] = out["skipped"].get(why, 0) + int(n)
    return out
