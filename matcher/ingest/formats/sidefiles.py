"""Side files keyed by photo id: restrict an add to a subset (``--only-ids``), annotate it (``--join``).

YFCC100M ships companion files keyed by photo id (``yfcc100m_hash``: id and photo hash; ``yfcc100m_autotags``;
``yfcc100m_places``; ``yfcc100m_lines``...), and subsets are published as id lists, such as OpenAI's CLIP
subset ``yfcc100m_subset_data.tsv`` (line number, photo id, photo hash: the first three fields of the AWS
metadata file). These are read as: tab- or comma-separated (sniffed), plain/``.gz``/``.bz2``, with or
without a header. The photo id is the column named ``photoid``/``photo_id``/``id``/``key`` under a
header; without one, the second column of a (line number, photo id, 32-hex hash) line and else the first.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import tempfile
import weakref
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from matcher.errors import ManifestError
from matcher.provenance.flickr import identity_of
from matcher.imaging.images import IMAGE_EXTENSIONS
from matcher.ingest.sources import Source, SourceItem, _norm, open_text, sniff_delimiter

from matcher.ingest.formats.yfcc import YfccSource, looks_yfcc

__all__ = ["IdSet", "JoinTable", "SideFiles", "LocalCopies", "photo_id_of"]

_ID_HEADERS = ("photoid", "id", "key", "flickrid", "photovideoidentifier")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_DIGITS = re.compile(r"[0-9]{1,20}")


def _first_line(path: Path) -> str:
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return line
    return ""


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with open_text(path) as f:
        first = ""
        for line in f:
            if line.strip():
                first = line
                break
        if not first:
            return
        delimiter = sniff_delimiter(first)
    with open_text(path) as f:
        for row in csv.reader(f, delimiter=delimiter):
            if any(c.strip() for c in row):
                yield 0, [c.strip() for c in row]


def _layout(path: Path) -> tuple[int, list[str], bool]:
    """(photo id column, column names, has a header) of a side file, from its first row."""
    for _, row in _rows(path):
        norm = [_norm(c) for c in row]
        if not any(_DIGITS.fullmatch(c) for c in row):
            for name in _ID_HEADERS:
                if name in norm:
                    return norm.index(name), row, True
            raise ManifestError(f"{path.name}: no photo id column in its header ({', '.join(row[:8])}); "
                                f"name it photoid, photo_id or id")
        if len(row) >= 3 and _DIGITS.fullmatch(row[0]) and _DIGITS.fullmatch(row[1]) and _HEX32.fullmatch(row[2]):
            return 1, ["line_number", "photo_id", "photo_hash"] + [f"column{i}" for i in range(4, len(row) + 1)], False
        return 0, ["photo_id"] + [f"column{i}" for i in range(2, len(row) + 1)], False
    raise ManifestError(f"{path.name}: empty")


def _ids(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(photo id, the row) of every row of a side file whose id column holds a photo id."""
    col, _, header = _layout(path)
    skip = header
    for _, row in _rows(path):
        if skip:
            skip = False
            continue
        v = row[col] if col < len(row) else ""
        if v.endswith(".0"):
            v = v[:-2]
        if _DIGITS.fullmatch(v):
            yield int(v), row


class IdSet:
    """The photo ids of a side file, held as a sorted array (8 bytes an id: 120 MB for the 15M of the CLIP subset)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ManifestError(f"{path}: no such file (--only-ids)")
        try:
            ids = np.fromiter((i for i, _ in _ids(self.path)), dtype=np.uint64)
        except (OSError, EOFError, zlib.error, csv.Error) as e:
            raise ManifestError(f"{self.path.name}: cannot read it (--only-ids: {e})") from None
        self.ids = np.unique(ids)
        if not len(self.ids):
            raise ManifestError(f"{self.path.name}: no photo ids in it (--only-ids)")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, photo_id: int) -> bool:
        i = int(np.searchsorted(self.ids, np.uint64(photo_id)))
        return i < len(self.ids) and int(self.ids[i]) == photo_id


class JoinTable:
    """A side file's rows by photo id, in a temporary SQLite file (a whole YFCC100M side file does not fit
    in memory). ``name``: the file's name without ``yfcc100m_`` and suffixes (``autotags``); what an item
    gets is ``extra[name]``: the one other column's value, or ``{column: value}`` when there are several.

    The YFCC100M metadata lines themselves (``yfcc100m_dataset``) join as the photo's provenance: the
    owner's NSID, the page URL and the licence fill the item's fields that are empty (so a DiF item,
    whose URL names no owner, can be looked up by NSID), and ``extra.yfcc100m`` keeps the owner's
    nickname, licence URL, date taken and the URL details (farm, server, secrets, extension)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ManifestError(f"{path}: no such file (--join)")
        stem = self.path.name.split(".")[0]
        self.name = re.sub(r"^yfcc100m_", "", stem) or stem
        self._tmp = tempfile.mkdtemp(prefix="matcher-join-")
        weakref.finalize(self, shutil.rmtree, self._tmp, True)
        self.db = sqlite3.connect(Path(self._tmp) / "join.db", check_same_thread=False)  # read by the fetcher thread too
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, value TEXT)")
        try:
            self.yfcc = looks_yfcc(_first_line(self.path))
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO rows (id, value) VALUES (?, ?)",
                                    self._yfcc_values() if self.yfcc else self._values())
        except (OSError, EOFError, zlib.error, csv.Error) as e:
            raise ManifestError(f"{self.path.name}: cannot read it (--join: {e})") from None
        self.rows = self.db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]

    def _yfcc_values(self) -> Iterator[tuple[int, str]]:
        source = YfccSource(self.path, "join")
        for item in source.items():
            if item.error is None or item.error_kind == "video":
                pid = int(item.key)
                if pid < 2**63:
                    f = item.fields
                    yield pid, json.dumps({"owner": f["owner"], "page_url": f["page_url"], "license": f["license"],
                                           "title": f["title"], "extra": item.extra})

    def _values(self) -> Iterator[tuple[int, str]]:
        col, names, _ = _layout(self.path)
        others = [i for i in range(len(names)) if i != col]
        for pid, row in _ids(self.path):
            vals = {names[i] if i < len(names) else f"column{i + 1}": row[i] for i in others if i < len(row) and row[i]}
            if pid < 2**63:
                yield pid, json.dumps(next(iter(vals.values())) if len(others) == 1 and vals else vals)

    def apply(self, item: SourceItem, photo_id: int) -> None:
        """Annotate ``item`` with this file's row for ``photo_id``, if it has one."""
        v = self.get(photo_id)
        if v is None:
            return
        if not self.yfcc:
            item.extra[self.name] = v
            return
        for k in ("owner", "page_url", "license", "title"):
            if not item.fields.get(k) and v.get(k):
                item.fields[k] = v[k]
        extra = {k: x for k, x in (v.get("extra") or {}).items() if k not in ("photo_id",)}
        if extra.get("owner_nsid"):
            item.extra.setdefault("owner_nsid", extra["owner_nsid"])
        item.extra["yfcc100m"] = extra

    def get(self, photo_id: int) -> Any:
        if photo_id >= 2**63:
            return None
        row = self.db.execute("SELECT value FROM rows WHERE id = ?", (photo_id,)).fetchone()
        return None if row is None else json.loads(row[0])


def photo_id_of(item: SourceItem) -> int | None:
    """The Flickr photo id of a source item: its ``extra.photo_id``, else what its URLs and fields say."""
    v = item.extra.get("photo_id")
    if v is None:
        ident = identity_of(item.fields, item.extra)
        v = ident.get("photo_id") if ident else None
    v = str(v).strip() if v is not None else ""
    return int(v) if _DIGITS.fullmatch(v) else None


class SideFiles(Source):
    """``source`` restricted to the photo ids of ``only`` (others skipped, counted) and annotated with ``joins``."""

    def __init__(self, source: Source, only: IdSet | None = None, joins: tuple[JoinTable, ...] = ()):
        self.source, self.only, self.joins = source, only, tuple(joins)
        self.dataset, self.location, self.preset = source.dataset, source.location, source.preset
        self.counts_rows = True

    @property
    def format(self) -> str:
        return self.source.format

    def _items(self) -> Iterator[SourceItem]:
        for item in self.source.items():
            pid = photo_id_of(item)
            if self.only is not None and (pid is None or pid not in self.only):
                self.counts.skipped["not in --only-ids" if pid is not None else "no photo id (--only-ids)"] += 1
                continue
            if pid is not None:
                for j in self.joins:
                    j.apply(item, pid)
            yield item
        inner = self.source.counts
        self.counts.rows = inner.rows
        self.counts.skipped.update(inner.skipped)


class LocalCopies(Source):
    """``source`` with its images taken from a folder of local copies (``--images DIR``) where they are there:
    a file named as the URL's last path segment (``2936383524_8a2b3f7d4c.jpg``, as download scripts and
    Flickr name them), or as the item's key with an image extension (``2936383524.jpg``), anywhere under
    the folder. The URL stays the item's URL; items without a copy are downloaded as usual."""

    def __init__(self, source: Source, folder: str | Path):
        self.source, self.folder = source, Path(folder)
        if not self.folder.is_dir():
            raise ManifestError(f"{folder}: not a folder (--images)")
        self.dataset, self.location, self.preset = source.dataset, source.location, source.preset
        self.counts_rows = True
        self._files: dict[str, str] | None = None

    @property
    def format(self) -> str:
        return self.source.format

    def _index(self) -> dict[str, str]:
        if self._files is None:
            files: dict[str, str] = {}
            for p in sorted(self.folder.rglob("*")):
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                    files.setdefault(p.name, str(p))
                    files.setdefault("key:" + p.name.rsplit(".", 1)[0], str(p))
            self._files = files
        return self._files

    def _items(self) -> Iterator[SourceItem]:
        files = self._index()
        for item in self.source.items():
            if item.error is None and item.url and item.path is None:
                name = item.url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
                local = files.get(name) or files.get("key:" + item.key)
                if local is not None:
                    item.path = local
                    item.fields["path"] = local
            yield item
        self.counts.rows = self.source.counts.rows
        self.counts.skipped.update(self.source.counts.skipped)
