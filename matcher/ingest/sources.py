"""Dataset inputs: a folder of images, or a manifest (CSV, TSV, JSONL, Parquet) of URLs/paths.

A source yields :class:`SourceItem` records lazily (manifests may have 100M rows) and
can be iterated more than once. Manifest columns are recognised by their usual names
(``url``, ``image_url``, ``flickr_url``, ``path``, ``id``, ``owner``, ``license``,
``title``...); ``columns={"url": "MyHeader"}`` overrides. Columns that are not
recognised are kept as ``extra`` metadata. A row that has neither an image URL nor a
path still yields an item, carrying the reason in ``error``, so that it is reported.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from matcher.errors import ManifestError
from matcher.imaging.images import iter_image_files, shown_path

__all__ = ["MAX_LINE", "SourceItem", "Source", "FolderSource", "ManifestSource", "FIELD_ALIASES", "MANIFEST_SUFFIXES"]

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

MANIFEST_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")


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


class Source:
    dataset: str
    location: str

    def items(self) -> Iterator[SourceItem]:  # pragma: no cover - interface
        raise NotImplementedError


class FolderSource(Source):
    """Every image file under a folder (recursive); key = path relative to the folder."""

    def __init__(self, root: str | os.PathLike, dataset: str | None = None):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ManifestError(f"{root}: not a folder")
        self.dataset = dataset or shown_path(self.root.name)
        self.location = shown_path(self.root)

    def items(self) -> Iterator[SourceItem]:
        # key and stored path as text (a name that is not UTF-8 shows its bytes as \xNN); the file is read at ``path``
        for p in iter_image_files(self.root):
            rel = shown_path(p.relative_to(self.root).as_posix())
            yield SourceItem(self.dataset, rel, path=str(p), fields={"path": shown_path(p)})


def _open_text(path: Path) -> io.TextIOBase:
    """UTF-8 text (a BOM is skipped). Bytes that are not UTF-8 (a Latin-1 export, one corrupt byte)
    become U+FFFD in that row instead of stopping the manifest."""
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


class ManifestSource(Source):
    """Rows of a CSV/TSV/JSONL/Parquet manifest (optionally .gz for the text formats)."""

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
        stem = self.path.name.split(".")[0]
        self.dataset = dataset or stem
        self.location = str(self.path)
        self.fmt = fmt or {
            ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
            ".parquet": "parquet", ".pq": "parquet",
        }.get(_base_suffix(self.path))
        if self.fmt is None:
            raise ManifestError(f"{path}: unknown manifest format (use .csv, .tsv, .jsonl or .parquet)")
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
        for fld, aliases in FIELD_ALIASES.items():
            if fld in mapping:
                continue
            for a in aliases:
                h = by_norm.get(_norm(a))
                if h is not None and h not in taken:
                    mapping[fld] = h
                    taken.add(h)
                    break
        if "url" not in mapping and "path" not in mapping:
            raise ManifestError(
                f"{self.path.name}: no image URL or path column among {', '.join(headers) or '(none)'}; "
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
        if self.fmt in ("csv", "tsv"):
            with _open_text(self.path) as f:
                reader = csv.reader(f, delimiter="\t" if self.fmt == "tsv" else ",")
                try:
                    headers = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    raise ManifestError(f"{self.path.name}: cannot read header: {e}") from None
                self._headers = headers
                n = 1
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

    def items(self) -> Iterator[SourceItem]:
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
