"""Dataset inputs: a folder of images, or a manifest (CSV, TSV, JSONL, Parquet) of URLs/paths.

A source yields :class:`SourceItem` records lazily (manifests may have 100M rows) and
can be iterated more than once. Manifest columns are recognised by their usual names
(``url``, ``image_url``, ``flickr_url``, ``path``, ``id``, ``owner``, ``license``,
``title``...); ``columns={"url": "MyHeader"}`` overrides. Columns that are not
recognised are kept as ``extra`` metadata. A row that has neither an image URL nor a
path still yields an item, carrying the reason in ``error``, so that it is reported.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import os
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from matcher.errors import ManifestError
from matcher.imaging.images import iter_image_files, shown_path
from matcher.provenance.flickr import parse_url

__all__ = ["MAX_LINE", "SourceItem", "Source", "ReadCounts", "FolderSource", "ManifestSource", "FIELD_ALIASES",
           "MANIFEST_SUFFIXES", "dataset_name", "open_text", "sniff_delimiter", "guarded"]

# field -> recognised headers, compared case-insensitively with '-', ' ' and '_' ignored
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "url": ("url", "image_url", "photo_url", "img_url", "imageurl", "flickr_url", "download_url", "photo_image_url",
            "media_url", "src"),
    "path": ("path", "file", "filename", "file_name", "filepath", "file_path", "local_path", "image_path"),
    "key": ("id", "key", "photo_id", "image_id", "photoid", "item_id", "uid", "sha1", "md5"),
    "owner": ("owner", "user", "nsid", "user_nsid", "owner_nsid", "username", "user_name", "author", "creator",
              "photographer"),
    "license": ("license", "licence", "license_name", "license_url", "rights"),
    "title": ("title", "caption", "text", "description", "name"),
    "page_url": ("page_url", "page", "photo_page_url", "pageurl", "source_url", "source_page", "landing_url"),
}

MANIFEST_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")
#: Compression suffixes read transparently by the text formats.
COMPRESSED = (".gz", ".bz2")


def _norm(header: str) -> str:
    return header.strip().lower().replace("-", "").replace("_", "").replace(" ", "")


@dataclass
class SourceItem:
    """One dataset image to ingest."""

    dataset: str
    key: str
    url: str | None = None
    path: str | None = None  # absolute local path, when the image is a local file
    fields: dict[str, Any] = field(default_factory=dict)  # url, page_url, path, owner, license, title
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the row itself is unusable
    error_kind: str | None = None  # the failure kind recorded for ``error`` (default "bad_row"; "video"...)
    # face boxes the manifest gives (matcher.imaging.facebox.RawFaces): each becomes an index entry of the item
    faces: tuple | None = None
    # the SHA-256 (hex) the dataset publishes for the image: a download with other bytes is not hashed
    sha256: str | None = None


@dataclass
class ReadCounts:
    """What one reading of a source gave: rows (lines, files) read, the items made of them, the face
    boxes they list, and rows left out with why (``skipped``: reason -> rows). Rows that are unusable
    become failed items (counted in ``items``), not skips."""

    rows: int = 0
    items: int = 0
    faces: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "items": self.items, "faces": self.faces, "skipped": dict(self.skipped)}


def _is_video_url(url: str | None) -> bool:
    if not url or "video/" not in url:
        return False
    ref = parse_url(url)
    return ref is not None and ref.kind == "video"


class Source:
    """Items of one dataset input. Subclasses yield them from :meth:`_items` (and may count the rows they
    read in ``self.counts.rows`` and the rows they leave out in ``self.counts.skipped``); :meth:`items`
    counts items and faces. ``counts`` describes the last complete reading."""

    dataset: str
    location: str
    #: the ``--format`` that reads it (None: a folder of images or a plain manifest)
    preset: str | None = None

    @property
    def format(self) -> str:
        """How this source is read, as ``info`` shows it."""
        return self.preset or "plain"

    @property
    def counts(self) -> ReadCounts:
        c = self.__dict__.get("_counts")
        if c is None:
            c = self.__dict__["_counts"] = ReadCounts()
        return c

    #: True when :meth:`_items` counts the rows it reads (else each item is one row)
    counts_rows = False

    def items(self) -> Iterator[SourceItem]:
        counts = self.__dict__["_counts"] = ReadCounts()
        for it in self._items():
            if it.error is None and it.path is None and _is_video_url(it.url):
                it.error, it.error_kind = f"{it.url}: a Flickr video file, not a photo: not downloaded", "video"
            counts.items += 1
            if not self.counts_rows:
                counts.rows += 1
            if it.faces is not None:
                counts.faces += len(it.faces[0])
            yield it

    def _items(self) -> Iterator[SourceItem]:  # pragma: no cover - interface
        raise NotImplementedError


class FolderSource(Source):
    """Every image file under a folder (recursive); key = path relative to the folder."""

    @property
    def format(self) -> str:
        return "folder"

    def __init__(self, root: str | os.PathLike, dataset: str | None = None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ManifestError(f"{root}: not a folder")
        self.dataset = dataset or shown_path(self.root.name)
        self.location = shown_path(self.root)

    def _items(self) -> Iterator[SourceItem]:
        # key and stored path as text (a name that is not UTF-8 shows its bytes as \xNN); the file is read at ``path``
        for p in iter_image_files(self.root):
            rel = shown_path(p.relative_to(self.root).as_posix())
            yield SourceItem(self.dataset, rel, path=str(p), fields={"path": shown_path(p)})


def open_text(path: Path) -> io.TextIOBase:
    """UTF-8 text of a plain, ``.gz`` or ``.bz2`` file (a BOM is skipped; lines as written, for csv).
    Bytes that are not UTF-8 (a Latin-1 export, one corrupt byte) become U+FFFD in that row instead of
    stopping the manifest."""
    suffix = path.suffix.lower()
    raw = gzip.open(path, "rb") if suffix == ".gz" else bz2.open(path, "rb") if suffix == ".bz2" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


_open_text = open_text


def guarded(name: str, rows: Iterator[Any]) -> Iterator[Any]:
    """``rows`` of a file; a file that cannot be read past some point (a truncated or corrupt .gz/.bz2) gives
    the rows before it, then ManifestError saying where."""
    n = 0
    try:
        for row in rows:
            n += 1
            yield row
    except (OSError, EOFError, zlib.error) as e:
        where = f"after row {n}" if n else "at the start"
        raise ManifestError(f"{name}: cannot read the file {where} ({e})") from None


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def sniff_delimiter(line: str) -> str:
    """Tab or comma: the one the line has more of outside quotes (a tab when it has as many)."""
    bare = re.sub(r'"[^"]*"', "", line)
    return "\t" if bare.count("\t") >= bare.count(",") and "\t" in bare else ","


def _first_text_line(path: Path) -> str:
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return line
    return ""


def _looks_like_data(cells: list[str]) -> bool:
    """A first row that is data rather than a header: a cell is a URL, or most cells are numbers."""
    vals = [c.strip() for c in cells]
    if any(v.lower().startswith(("http://", "https://", "//")) for v in vals):
        return True
    nums = sum(bool(re.fullmatch(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?", v)) for v in vals)
    return bool(vals) and nums * 2 > len(vals)


_PART_STEM = re.compile(
    r"^(?:part-\d+(?:-[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})?(?:-c\d+)?|\d+|shard-?\d+|data-\d+(?:-of-\d+)?)$",
    re.IGNORECASE)
_NUMBERED = re.compile(r"^(.*?)(?:[-_](?:\d+|part-?\d+)(?:-of-\d+)?)$", re.IGNORECASE)


def dataset_name(path: str | os.PathLike) -> str:
    """The dataset a manifest file belongs to, the same for every part of a multi-part release:
    ``DiF_v1.csv`` -> ``DiF_v1``; ``yfcc100m_dataset-3.bz2`` -> ``yfcc100m_dataset``; a part named only by its
    number (``part-00000-<uuid>-c000.snappy.parquet``, img2dataset's ``00000.parquet``) -> its folder's name;
    ``laion400m-part-00001.parquet`` -> ``laion400m``."""
    p = Path(path)
    stem = p.name.split(".")[0]
    if _PART_STEM.match(stem):
        parent = p.resolve().parent
        return shown_path(parent.name) or stem
    m = _NUMBERED.match(stem)
    return m.group(1) if m and m.group(1) else stem


class ManifestSource(Source):
    """Rows of a CSV/TSV/JSONL/Parquet manifest (optionally .gz/.bz2 for the text formats).

    A ``.txt`` file (or any text file given with ``fmt="sniff"``) is sniffed: tab- or comma-separated,
    with a header, or without one when its first row is data (a URL in it, or mostly numbers): the
    columns are then named ``column1``, ``column2``... and the URL column is the one holding a URL.
    """

    #: field -> accepted headers (compared as :func:`_norm` does); presets narrow it
    aliases: Mapping[str, tuple[str, ...]] = FIELD_ALIASES

    @property
    def format(self) -> str:
        return self.preset or f"plain {self.fmt if self.fmt != 'sniff' else 'text'}"

    def __init__(
        self,
        path: str | os.PathLike,
        dataset: str | None = None,
        columns: Mapping[str, str] | None = None,
        fmt: str | None = None,
        allow_paths: Sequence[str | os.PathLike] = (),
    ):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise ManifestError(f"{path}: no such manifest file")
        self.base = self.path.parent
        self.allow_paths = allow_paths
        self.dataset = dataset or dataset_name(self.path)
        self.location = str(self.path)
        self.fmt = fmt or {
            ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
            ".parquet": "parquet", ".pq": "parquet", ".txt": "sniff",
        }.get(_base_suffix(self.path))
        if self.fmt is None:
            raise ManifestError(f"{path}: unknown manifest format (use .csv, .tsv, .txt, .jsonl or .parquet)")
        unknown = set(columns or {}) - set(FIELD_ALIASES)
        if unknown:
            raise ManifestError(f"unknown field(s) in --column: {', '.join(sorted(unknown))} (known: {', '.join(FIELD_ALIASES)})")
        self.columns = dict(columns or {})

    @property
    def allow_paths(self) -> tuple[Path, ...]:
        """Folders besides the manifest's own whose files its ``path`` column may name (``--allow-paths``)."""
        return self._allow

    @allow_paths.setter
    def allow_paths(self, folders: Sequence[str | os.PathLike]) -> None:
        self._allow = tuple(Path(f).resolve() for f in folders)

    def local_path(self, n: int, path: str) -> tuple[str | None, str | None]:
        """(absolute path, None) for a manifest ``path`` value, or (None, why it is refused).

        A relative path is taken from the manifest's folder. The file, symlinks resolved, must lie inside
        that folder or one of :attr:`allow_paths`: a manifest (a file anyone may hand over) must not make
        ``add`` hash, nor ``serve --serve-originals`` hand out, any other file of the machine."""
        try:
            if "\x00" in path:
                raise ValueError("a NUL byte in it")
            p = Path(path)
            abspath = p if p.is_absolute() else self.base / p
            real = abspath.resolve()
        except (OSError, RuntimeError, ValueError) as e:  # RuntimeError: a symlink loop (Python < 3.13)
            return None, f"row {n}: unusable path ({e})"
        for folder in (self.base, *self._allow):
            if real == folder or folder in real.parents:
                return str(real), None
        return None, (f"row {n}: path {shown_path(path)} is outside the manifest's folder {shown_path(self.base)}; "
                      "refused (pass --allow-paths DIR to index files under DIR)")

    # column mapping ------------------------------------------------------------
    def _mapping(self, headers: list[str]) -> dict[str, str]:
        """field -> header for this file."""
        by_norm = {}
        for h in headers:
            by_norm.setdefault(_norm(h), h)
        mapping: dict[str, str] = {}
        for fld, header in self.columns.items():
            if header not in headers:
                raise ManifestError(f"{self.path.name}: --column {fld}={header}: no such column (have: {', '.join(headers)})")
            mapping[fld] = header
        taken = set(mapping.values())
        for fld, aliases in self.aliases.items():
            if fld in mapping:
                continue
            for a in aliases:
                h = by_norm.get(_norm(a))
                if h is not None and h not in taken:
                    mapping[fld] = h
                    taken.add(h)
                    break
        if "url" not in mapping and "path" not in mapping and getattr(self, "_url_column", None) in headers:
            mapping["url"] = self._url_column  # a headerless text file: the column that holds URLs
        if "url" not in mapping and "path" not in mapping:
            shown = ", ".join(headers[:12]) + (f", ... ({len(headers)} columns)" if len(headers) > 12 else "")
            raise ManifestError(
                f"{self.path.name}: no image URL or path column among {shown or '(none)'}; "
                "name one with --column url=HEADER or --column path=HEADER"
            )
        return mapping

    # rows -------------------------------------------------------------------
    def _rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        """(row number, row dict or None, error) — headers are fixed on the first row.

        A file that cannot be read past some point (a truncated or corrupt .gz, a damaged Parquet
        page) yields the rows before it, then raises ManifestError.
        """
        n = 0
        try:
            for row in self._read_rows():
                n = row[0]
                yield row
        except (OSError, EOFError, zlib.error, ValueError) as e:
            where = f"after row {n}" if n else "at the start"
            raise ManifestError(f"{self.path.name}: cannot read the file {where} ({e})") from None

    def _read_rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        if self.fmt in ("csv", "tsv", "sniff"):
            delimiter = {"csv": ",", "tsv": "\t"}.get(self.fmt) or sniff_delimiter(_first_text_line(self.path))
            with _open_text(self.path) as f:
                reader = csv.reader(f, delimiter=delimiter)
                try:
                    headers = next(reader)
                    while not any(c.strip() for c in headers):  # blank lines before the header
                        headers = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    raise ManifestError(f"{self.path.name}: cannot read header: {e}") from None
                n = 1
                if self.fmt == "sniff" and _looks_like_data(headers):
                    first = headers
                    headers = [f"column{i}" for i in range(1, len(first) + 1)]
                    self._url_column = next((h for h, v in zip(headers, first)
                                             if v.strip().lower().startswith(("http://", "https://"))), None)
                    self._headers = headers
                    yield n, dict(zip(headers, first)), None
                self._headers = headers
                while True:
                    try:
                        row = next(reader)
                    except StopIteration:
                        return
                    except csv.Error as e:
                        n += 1
                        yield n, None, f"line {n}: unreadable CSV ({e})"
                        continue
                    n += 1
                    if not any(c.strip() for c in row):
                        continue
                    yield n, dict(zip(headers, row)), None
        elif self.fmt == "jsonl":
            with _open_text(self.path) as f:
                for n, line in enumerate(_bounded_lines(f), 1):
                    if line is None:
                        yield n, None, f"line {n}: longer than {MAX_LINE >> 20} MB; skipped"
                        continue
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        yield n, None, f"line {n}: invalid JSON ({e.msg})"
                        continue
                    except RecursionError:
                        yield n, None, f"line {n}: invalid JSON (nested too deeply)"
                        continue
                    if not isinstance(obj, dict):
                        yield n, None, f"line {n}: expected a JSON object, got {type(obj).__name__}"
                        continue
                    yield n, obj, None
        else:
            import pyarrow.parquet as pq  # only needed for Parquet

            try:
                pf = pq.ParquetFile(self.path)
            except (OSError, ValueError) as e:
                raise ManifestError(f"{self.path.name}: not a readable Parquet file ({e})") from None
            self._headers = list(pf.schema_arrow.names)
            n = 0
            for batch in pf.iter_batches(batch_size=8192):
                for row in batch.to_pylist():
                    n += 1
                    yield n, row, None

    def headers(self) -> list[str]:
        if self.fmt == "jsonl":
            keys: list[str] = []
            for _, row, _ in self._rows():
                if row is not None:
                    keys = list(row)
                    break
            return keys
        self._headers = []
        for _ in self._rows():
            break
        return list(getattr(self, "_headers", []))

    def check(self) -> None:
        """Raise ManifestError now if the file's columns name no image URL or path (read from its first row)."""
        headers = self.headers()
        if headers or self.fmt != "jsonl":
            self._mapping(headers)

    def _items(self) -> Iterator[SourceItem]:
        mapping: dict[str, str] | None = None
        if self.fmt != "jsonl":
            mapping = self._mapping(self.headers())
        for n, row, err in self._rows():
            if row is None:
                yield SourceItem(self.dataset, f"row:{n}", error=err)
                continue
            if mapping is None:  # JSONL: map from the first object's keys plus overrides
                mapping = self._mapping(list(row))
            yield self._item(n, row, mapping)

    def _item(self, n: int, row: dict[str, Any], mapping: dict[str, str]) -> SourceItem:
        def get(fld: str) -> str | None:
            h = mapping.get(fld)
            if h is None:
                return None
            v = row.get(h)
            if v is None:
                return None
            v = str(v).strip()
            return v or None

        fields = {f: get(f) for f in ("url", "page_url", "path", "owner", "license", "title")}
        used = set(mapping.values())
        extra = {k: _plain(v) for k, v in row.items() if k not in used and v not in (None, "")}
        url, path = fields["url"], fields["path"]
        abspath = None
        bad_path = None
        if path:
            abspath, bad_path = self.local_path(n, path)
            if abspath is not None:
                fields["path"] = abspath
        key = get("key") or url or path or f"row:{n}"
        error, kind = None, None
        if not url and not path:
            error = f"row {n} has no image URL or path"
        elif bad_path and "outside the manifest's folder" in bad_path:
            error, kind = bad_path, "refused"  # even with a URL: the row names a file it must not
        elif bad_path and not url:
            error = bad_path
        elif "\ufffd" in (url or "") + (path or ""):
            error = f"row {n}: the image URL or path is not valid UTF-8"
        return SourceItem(self.dataset, key, url=url, path=abspath, fields=fields, extra=extra, error=error,
                          error_kind=kind)


#: Longest JSON Lines line read (characters): a longer one is a failed row, read past in blocks, never
#: held whole (a 100 MB line used to cost 500 MB). Manifest rows are a few hundred bytes; faces JSONL
#: rows with many boxes a few KB.
MAX_LINE = 4 << 20


def _bounded_lines(f) -> Iterator[str | None]:
    """The lines of a text file, each at most :data:`MAX_LINE` characters; None for a longer one."""
    while True:
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) <= MAX_LINE or line.endswith("\n"):
            yield line
            continue
        while line and not line.endswith("\n"):  # the rest of the long line, block by block
            line = f.readline(1 << 20)
        yield None


def _plain(v: Any) -> Any:
    """A manifest value as JSON stores it: Parquet columns also give dates, timestamps, decimals and bytes."""
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("utf-8", "backslashreplace")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)
