"""Manifest presets: the layouts real datasets publish, read with their documented fields.

``matcher add --format NAME`` (``open_source(..., preset=NAME)``):

* ``yfcc100m`` (:class:`YfccSource`): the tab-separated metadata lines of ``yfcc100m_dataset``, no
  header; optionally ``.gz``/``.bz2``. Both releases are read: the original Webscope files
  (``yfcc100m_dataset-0`` .. ``-9``, 23 fields a line) and the later single file hosted on AWS, which
  adds a line number and the photo hash in front (25 fields). See :data:`YFCC_FIELDS`.
* ``laion`` (:class:`LaionSource`): LAION-400M / LAION-5B / LAION-Aesthetics metadata Parquet files and
  their CSV/TSV exports, and img2dataset's output Parquet (``url``, ``caption``, ``key`` ...).
* ``faces-jsonl`` (:class:`FacesSource`): JSON Lines with per-face boxes, as face datasets publish
  them (shapes in :mod:`matcher.imaging.facebox`); each face also becomes an index entry of its item.
* ``auto`` (:func:`detect_preset`): one of the above when the file's layout says so unambiguously,
  else the plain CSV/TSV/JSONL/Parquet reading of :class:`matcher.ingest.sources.ManifestSource`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import unquote_plus

from matcher.errors import ManifestError
from matcher.imaging.facebox import parse_faces
from matcher.ingest.sources import ManifestSource, Source, SourceItem, _base_suffix, _norm

__all__ = ["PRESETS", "YFCC_FIELDS", "YFCC_AWS_FIELDS", "YfccSource", "LaionSource", "FacesSource", "detect_preset",
           "open_preset"]

#: Names accepted by ``--format`` (besides ``auto``).
PRESETS = ("yfcc100m", "laion", "faces-jsonl")

# --------------------------------------------------------------------------- YFCC100M

#: The 23 tab-separated fields of a line of the original YFCC100M release (Yahoo Webscope,
#: ``yfcc100m_dataset-0`` .. ``-9``), in order. Text fields are URL-encoded (``+`` for a space).
YFCC_FIELDS = (
    "photo_id", "user_nsid", "user_nickname", "date_taken", "date_uploaded", "capture_device", "title",
    "description", "user_tags", "machine_tags", "longitude", "latitude", "accuracy", "page_url", "download_url",
    "license_name", "license_url", "server_id", "farm_id", "secret", "secret_original", "extension", "marker",
)
#: The 25 fields of the single-file release on AWS (``yfcc100m_dataset``, multimedia-commons): a line
#: number and the photo hash (the MD5-derived key used to name the files in that bucket) come first.
YFCC_AWS_FIELDS = ("line_number", YFCC_FIELDS[0], "photo_hash") + YFCC_FIELDS[1:]
#: URL-encoded text fields, decoded (``unquote_plus``) when read.
_YFCC_ENCODED = {"user_nickname", "capture_device", "title", "description", "user_tags", "machine_tags",
                 "license_name"}
_NSID = re.compile(r"^\d+@N\d\d$")


def _open_any(path: Path) -> io.TextIOBase:
    """Text of a possibly ``.gz``/``.bz2`` file; bytes that are not UTF-8 become U+FFFD."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        raw = gzip.open(path, "rb")
    elif suffix == ".bz2":
        raw = bz2.open(path, "rb")
    else:
        raw = open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def _yfcc_fields(line: str) -> dict[str, str] | None:
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) == len(YFCC_FIELDS):
        return dict(zip(YFCC_FIELDS, parts))
    if len(parts) == len(YFCC_AWS_FIELDS):
        return dict(zip(YFCC_AWS_FIELDS, parts))
    return None


def _looks_yfcc(line: str) -> bool:
    f = _yfcc_fields(line)
    return (f is not None and f["photo_id"].isdigit() and f["marker"] in ("0", "1")
            and bool(_NSID.match(f["user_nsid"])) and "flickr.com/photos/" in f["page_url"])


class YfccSource(Source):
    """Lines of a ``yfcc100m_dataset`` file (23 or 25 tab-separated fields, no header; ``.gz``/``.bz2``).

    Key = the photo id. Fields: user NSID -> owner, licence name -> license, title (decoded) ->
    title, page URL -> page_url, download URL -> url. Extra: ``photo_id``, ``owner_nsid``,
    ``owner_name`` (the nickname, decoded), ``date_taken``, ``license_url`` and, in the 25-field
    release, ``line_number`` and ``photo_hash``. Videos (marker 1) are recorded as failed items of
    kind ``video`` with the reason, and never downloaded.
    """

    preset = "yfcc100m"

    def __init__(self, path: str | Path, dataset: str | None = None):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise ManifestError(f"{path}: no such manifest file")
        self.dataset = dataset or self.path.name.split(".")[0]
        self.location = str(self.path)

    def items(self) -> Iterator[SourceItem]:
        with _open_any(self.path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = _yfcc_fields(line)
                if row is None:
                    got = len(line.rstrip("\r\n").split("\t"))
                    yield SourceItem(self.dataset, f"line:{n}", error=f"line {n}: {got} tab-separated fields; a "
                                     f"yfcc100m_dataset line has {len(YFCC_FIELDS)} or {len(YFCC_AWS_FIELDS)}")
                    continue
                yield self._item(n, row)

    def _item(self, n: int, row: dict[str, str]) -> SourceItem:
        v = {k: (unquote_plus(x) if k in _YFCC_ENCODED else x).strip() for k, x in row.items()}
        key = v["photo_id"] or f"line:{n}"
        url = v["download_url"] or None
        fields = {"url": url, "page_url": v["page_url"] or None, "path": None, "owner": v["user_nsid"] or None,
                  "license": v["license_name"] or None, "title": v["title"] or None}
        extra = {"photo_id": v["photo_id"], "owner_nsid": v["user_nsid"], "owner_name": v["user_nickname"],
                 "date_taken": v["date_taken"], "license_url": v["license_url"]}
        if "line_number" in v:
            extra.update(line_number=v["line_number"], photo_hash=v["photo_hash"])
        extra = {k: x for k, x in extra.items() if x}
        error = kind = None
        if v["marker"] == "1":
            error, kind = f"line {n}: a video (YFCC100M marker 1), not a photo: skipped", "video"
        elif v["marker"] != "0":
            error = f"line {n}: marker {v['marker']!r} is neither 0 (photo) nor 1 (video)"
        elif not url:
            error = f"line {n} has no download URL"
        elif not v["photo_id"].isdigit():
            error = f"line {n}: photo id {v['photo_id']!r} is not a number"
        return SourceItem(self.dataset, key, url=url, fields=fields, extra=extra, error=error, error_kind=kind)


# --------------------------------------------------------------------------- LAION

#: LAION columns (compared case-insensitively, '_' ignored) -> what they become. Fields first, then
#: ``extra`` keys. LAION-400M: SAMPLE_ID, URL, TEXT, HEIGHT, WIDTH, LICENSE, NSFW, similarity.
#: LAION-5B (laion2B-en/-multi/-nolang): URL, TEXT, WIDTH, HEIGHT, similarity, hash, punsafe, pwatermark
#: (+ LANGUAGE). LAION-Aesthetics: + AESTHETIC_SCORE (or aesthetic). img2dataset output: url, caption,
#: key, status, error_message, width, height, original_width, original_height, exif, sha256 (or md5).
_LAION_FIELDS = {"url": ("url",), "title": ("text", "caption"), "key": ("key",), "license": ("license",),
                 "path": ("path",)}
_LAION_EXTRA = {
    "sampleid": "sample_id", "width": "width", "height": "height", "originalwidth": "original_width",
    "originalheight": "original_height", "similarity": "similarity", "punsafe": "punsafe",
    "pwatermark": "pwatermark", "aestheticscore": "aesthetic", "aesthetic": "aesthetic", "hash": "hash",
    "sha256": "sha256", "md5": "md5", "nsfw": "nsfw", "language": "language",
}
_LAION_MARKERS = {"similarity", "punsafe", "pwatermark", "nsfw", "sampleid", "aestheticscore"}


def _looks_laion(headers: list[str]) -> bool:
    h = {_norm(x) for x in headers}
    if "url" not in h or not h & {"text", "caption"}:
        return False
    return bool(h & _LAION_MARKERS) or {"key", "status", "errormessage"} <= h


def _number(v: Any) -> Any:
    """Numbers as numbers (CSV exports give text); NaN and empty cells are dropped (None)."""
    if v is None:
        return None
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            v = int(s)
        except ValueError:
            try:
                v = float(s)
            except ValueError:
                return s
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        if v.is_integer() and abs(v) < 2**53:
            return int(v)
    return v


class LaionSource(ManifestSource):
    """A LAION metadata file (Parquet, or a CSV/TSV export; ``.gz`` for text).

    URL -> url, TEXT (or caption) -> title, LICENSE -> license (LAION-400M; ``?`` means unknown and is
    dropped), key -> key, else SAMPLE_ID, else ``<file name>#<row>`` (the 0-based row of the file, as
    pandas and pyarrow number it). Kept in extra: ``width``, ``height`` (the published size),
    ``original_width``/``original_height``, ``similarity``, ``punsafe``, ``pwatermark``, ``aesthetic``,
    ``hash``, ``sha256``/``md5``, ``nsfw``, ``language``, ``sample_id``, ``row``. Other columns (img2dataset's
    status/exif, index columns) are not kept.
    """

    preset = "laion"

    def __init__(self, path, dataset=None, columns=None):
        super().__init__(path, dataset, columns)
        if self.fmt == "jsonl":
            raise ManifestError(f"{self.path.name}: --format laion reads Parquet, CSV or TSV, not JSON Lines")

    def _mapping(self, headers: list[str]) -> dict[str, str]:
        by_norm: dict[str, str] = {}
        for h in headers:
            by_norm.setdefault(_norm(h), h)
        mapping: dict[str, str] = {}
        for fld, header in self.columns.items():
            if header not in headers:
                raise ManifestError(f"{self.path.name}: --column {fld}={header}: no such column (have: {', '.join(headers)})")
            mapping[fld] = header
        for fld, names in _LAION_FIELDS.items():
            if fld not in mapping:
                for name in names:
                    if name in by_norm:
                        mapping[fld] = by_norm[name]
                        break
        if "url" not in mapping and "path" not in mapping:
            raise ManifestError(f"{self.path.name}: no URL column among {', '.join(headers) or '(none)'} "
                                "(a LAION file has URL and TEXT)")
        return mapping

    def items(self) -> Iterator[SourceItem]:
        mapping = self._mapping(self.headers())
        extra_cols = {h: _LAION_EXTRA[_norm(h)] for h in self.headers() if _norm(h) in _LAION_EXTRA}
        row_index = 0
        for n, row, err in self._rows():
            if row is None:
                yield SourceItem(self.dataset, f"{self.path.name}#{row_index}", error=err)
            else:
                yield self._laion_item(row_index, row, mapping, extra_cols)
            row_index += 1

    def _laion_item(self, i: int, row: dict[str, Any], mapping: dict[str, str], extra_cols: dict[str, str]
                    ) -> SourceItem:
        def get(fld: str) -> str | None:
            h = mapping.get(fld)
            v = None if h is None else row.get(h)
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                return None
            return str(v).strip() or None

        fields = {f: get(f) for f in ("url", "page_url", "path", "owner", "license", "title")}
        if fields["license"] in ("?", "None", "nan"):
            fields["license"] = None
        extra: dict[str, Any] = {"row": i}
        for h, name in extra_cols.items():
            if h in mapping.values():
                continue
            v = _number(row.get(h))
            if v is not None and v != "":
                extra[name] = v
        url, path = fields["url"], fields["path"]
        abspath = bad_path = None
        if path:
            abspath, bad_path = self.local_path(i, path)
            fields["path"] = abspath
        key = get("key")
        if key is None and "sample_id" in extra:
            key = str(extra["sample_id"])
        key = key or f"{self.path.name}#{i}"
        error, kind = None, None
        if not url and not path:
            error = f"row {i} has no image URL"
        elif bad_path:
            error, kind = bad_path, "refused" if "outside the manifest's folder" in bad_path else None
        elif "\ufffd" in (url or "") + (path or ""):
            error = f"row {i}: the image URL is not valid UTF-8"
        return SourceItem(self.dataset, key, url=url, path=abspath, fields=fields, extra=extra, error=error,
                          error_kind=kind)


# --------------------------------------------------------------------------- faces JSONL

class FacesSource(ManifestSource):
    """JSON Lines, one image a line, with the boxes of the faces in it (``.gz`` allowed).

    The image, key and provenance are read as any JSONL manifest (``url``/``image_url``/``path``,
    ``id``/``key``, ``owner``, ``license``, ``title``... and ``--column``). The faces are the list
    under ``faces`` (or ``face_boxes``, ``boxes``, ``bboxes``); the shapes of one face are those of
    :func:`matcher.imaging.facebox.parse_face`. Row-level ``box_format`` (``xywh``, the default, or ``xyxy``)
    and ``box_units`` (``pixels``/``fractions``) apply to lists; pixel boxes are measured on the
    image the row's ``width``/``height`` (or ``image_width``/``image_height``) describe, else on the
    dataset image itself (upright: EXIF orientation applied). The boxes are stored normalised in the
    item's ``extra["faces"]`` (``[[l, t, r, b], ...]`` fractions) and each one also gets an index entry
    (``face0``, ``face1``...). Faces that cannot be read are listed in ``extra["face_errors"]``.
    """

    preset = "faces-jsonl"

    def __init__(self, path, dataset=None, columns=None):
        if _base_suffix(Path(path)) in (".csv", ".tsv", ".tab", ".parquet", ".pq"):
            raise ManifestError(f"{path}: --format faces-jsonl reads JSON Lines (one object per line), not "
                                f"{_base_suffix(Path(path))[1:].upper()}")
        super().__init__(path, dataset, columns, fmt="jsonl")

    def _mapping(self, headers: list[str]) -> dict[str, str]:
        from matcher.imaging.facebox import FACES_KEYS

        return super()._mapping([h for h in headers if h not in FACES_KEYS])

    def _item(self, n: int, row: dict[str, Any], mapping: dict[str, str]) -> SourceItem:
        from matcher.imaging.facebox import FACES_KEYS

        item = super()._item(n, row, mapping)
        faces, errors = parse_faces(row)
        for key in FACES_KEYS + ("box_format", "box_units", "units"):
            item.extra.pop(key, None)
        item.faces = faces
        if errors:
            item.extra["face_errors"] = errors[:20]
        return item


# --------------------------------------------------------------------------- detection

def _first_line(path: Path) -> str:
    try:
        with _open_any(path) as f:
            for line in f:
                if line.strip():
                    return line
    except (OSError, EOFError, ValueError):
        return ""
    return ""


def detect_preset(path: str | Path) -> str | None:
    """The preset a manifest's layout names unambiguously, or None (read it as a plain manifest).

    Parquet/CSV/TSV with LAION's columns (URL and TEXT or caption, plus similarity, punsafe, pwatermark,
    NSFW, SAMPLE_ID or AESTHETIC_SCORE; or img2dataset's url/caption/key/status/error_message) -> laion;
    JSON Lines whose first object has a list of faces -> faces-jsonl; a headerless file whose first
    line is a YFCC100M metadata line (23 or 25 tab-separated fields, a numeric photo id, an NSID, a
    flickr.com page URL, marker 0 or 1) -> yfcc100m.
    """
    p = Path(path)
    if p.is_dir() or not p.is_file():
        return None
    suffix = _base_suffix(p)
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return "laion" if _looks_laion(list(pq.ParquetFile(p).schema_arrow.names)) else None
        line = _first_line(p)
        if suffix in (".jsonl", ".ndjson", ".json"):
            try:
                obj = json.loads(line)
            except ValueError:
                return None
            from matcher.imaging.facebox import FACES_KEYS

            return "faces-jsonl" if isinstance(obj, dict) and any(isinstance(obj.get(k), list) for k in FACES_KEYS) else None
        if _looks_yfcc(line):
            return "yfcc100m"
        if suffix in (".csv", ".tsv", ".tab"):
            import csv

            headers = next(csv.reader([line.rstrip("\r\n")], delimiter="," if suffix == ".csv" else "\t"), [])
            return "laion" if _looks_laion(headers) else None
    except (OSError, ValueError):
        return None
    return None


def open_preset(spec: str | Path, preset: str, dataset: str | None = None,
                columns: Mapping[str, str] | None = None) -> Source:
    """A manifest read with ``preset`` (one of :data:`PRESETS`)."""
    p = Path(spec)
    if p.is_dir():
        raise ManifestError(f"{spec}: --format {preset} reads a manifest file, not a folder")
    if not p.is_file():
        raise ManifestError(f"{spec}: no such file or folder")
    if preset == "yfcc100m":
        if columns:
            raise ManifestError("--column does not apply to --format yfcc100m (its fields are fixed)")
        return YfccSource(p, dataset)
    if preset == "laion":
        return LaionSource(p, dataset, columns)
    if preset == "faces-jsonl":
        return FacesSource(p, dataset, columns)
    raise ManifestError(f"unknown manifest format {preset!r} (known: {', '.join(PRESETS)}, auto)")
