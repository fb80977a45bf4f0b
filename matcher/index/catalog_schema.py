"""The catalog's schema (tables, version) and the small helpers every part of it shares: opening a
database read-only, telling a write failure (full disk, read-only media) from a bug, timestamps."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote


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
