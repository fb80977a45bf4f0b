"""Manifest presets: the layouts real datasets publish, each read with its documented fields.

``matcher add --format NAME`` (``open_source(..., preset=NAME)``); one module a format under
:mod:`matcher.ingest.formats`:

* ``yfcc100m`` (:mod:`matcher.ingest.formats.yfcc`): the YFCC100M metadata lines, both releases.
* ``laion`` / ``img2dataset`` (:mod:`matcher.ingest.formats.laion`): LAION metadata Parquet and its CSV/TSV
  exports; img2dataset's output, its downloaded images used where they are.
* ``faces-jsonl`` (:mod:`matcher.ingest.formats.faces_jsonl`): JSON Lines with per-face boxes.
* ``dif`` (:mod:`matcher.ingest.formats.dif`): IBM's Diversity in Faces ``DiF_v1.csv``.
* ``megaface`` (:mod:`matcher.ingest.formats.megaface`): MegaFace's ``FlickrFinal2`` tree and its lists.
* ``facescrub`` (:mod:`matcher.ingest.formats.facescrub`): ``facescrub_actors.txt`` / ``facescrub_actresses.txt``.
* ``auto`` (:func:`detect_preset`): one of these when the file's (or folder's) layout says so
  unambiguously, else the plain reading of :class:`matcher.ingest.sources.ManifestSource` / ``FolderSource``.

A folder given with a manifest format is read as the parts in it (:func:`part_files`).
"""

from __future__ import annotations

import csv
import glob
import json
import zlib
from pathlib import Path
from typing import Mapping

from matcher.errors import ManifestError
from matcher.ingest.formats.dif import DIF_COLUMNS, DifSource, looks_dif
from matcher.ingest.formats.faces_jsonl import FacesSource, looks_faces_jsonl
from matcher.ingest.formats.facescrub import FacescrubSource, looks_facescrub
from matcher.ingest.formats.laion import Img2datasetSource, LaionSource, looks_img2dataset, looks_laion
from matcher.ingest.formats.megaface import MegafaceSource, looks_megaface
from matcher.ingest.formats.yfcc import YFCC_AWS_FIELDS, YFCC_FIELDS, YfccSource, looks_yfcc
from matcher.ingest.sources import COMPRESSED, Source, _base_suffix, _norm, open_text, sniff_delimiter

__all__ = ["PRESETS", "YFCC_FIELDS", "YFCC_AWS_FIELDS", "YfccSource", "LaionSource", "Img2datasetSource",
           "FacesSource", "DifSource", "MegafaceSource", "FacescrubSource", "detect_preset", "open_preset",
           "suggest_formats", "part_files"]

#: Names accepted by ``--format`` (besides ``auto``).
PRESETS = ("yfcc100m", "laion", "img2dataset", "faces-jsonl", "dif", "megaface", "facescrub")

#: What reading the start of a file may raise when it is damaged (a truncated .gz, bytes that are not Parquet).
_UNREADABLE = (OSError, EOFError, ValueError, zlib.error, csv.Error)

#: Files in a folder of parts that are not parts (Spark's markers and checksums, img2dataset's stats).
_NOT_PARTS = ("_SUCCESS", "_stats.json", ".crc", "_committed_", "_started_")


def _first_line(path: Path) -> str:
    try:
        with open_text(path) as f:
            for line in f:
                if line.strip():
                    return line
    except _UNREADABLE:
        return ""
    return ""


def _first_row(path: Path) -> list[str]:
    line = _first_line(path)
    return next(csv.reader([line.rstrip("\r\n")], delimiter=sniff_delimiter(line)), []) if line else []


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.ParquetFile(path).schema_arrow.names)


def detect_preset(path: str | Path) -> str | None:
    """The preset a manifest's (or folder's) layout names unambiguously, or None (read it plainly).

    Parquet/CSV/TSV with img2dataset's url/key/status/error_message -> img2dataset; with LAION's columns
    (URL and TEXT or caption, plus similarity, punsafe, pwatermark, NSFW, SAMPLE_ID or AESTHETIC_SCORE)
    -> laion; JSON Lines whose first object lists faces -> faces-jsonl; a first line of 23 or 25
    tab-separated YFCC100M fields -> yfcc100m; a headerless first row of 191 comma-separated fields (a
    face id, a URL, numbers) -> dif; a header with name, url, bbox and face_id -> facescrub. A folder:
    a MegaFace tree -> megaface; Parquet parts (img2dataset's output, Spark's ``part-*``) -> the preset
    of its first part.
    """
    p = Path(path)
    if p.is_dir():
        if looks_megaface(p):
            return "megaface"
        parts = part_files(p, quiet=True)
        return detect_preset(parts[0]) if parts else None
    if not p.is_file():
        return None
    suffix = _base_suffix(p)
    try:
        if suffix in (".parquet", ".pq"):
            cols = _parquet_columns(p)
            return "img2dataset" if looks_img2dataset(cols) else "laion" if looks_laion(cols) else None
        line = _first_line(p)
        if suffix in (".jsonl", ".ndjson", ".json"):
            try:
                obj = json.loads(line)
            except ValueError:
                return None
            return "faces-jsonl" if looks_faces_jsonl(obj) else None
        if looks_yfcc(line):
            return "yfcc100m"
        row = _first_row(p)
        if looks_dif(row):
            return "dif"
        if looks_facescrub(row):
            return "facescrub"
        if suffix in (".csv", ".tsv", ".tab", ".txt"):
            return "img2dataset" if looks_img2dataset(row) else "laion" if looks_laion(row) else None
    except _UNREADABLE:
        return None
    return None


def suggest_formats(path: str | Path) -> list[str]:
    """Presets a manifest not understood might be in, by looser signs than :func:`detect_preset`'s: a row
    of about DiF's 191 fields, tab-separated lines of about YFCC100M's 23/25 fields, a bbox or faces
    column, URL and caption/TEXT columns, a folder of ``.jpg.json`` sidecars."""
    p = Path(path)
    found = detect_preset(p)
    out = [found] if found else []
    try:
        if p.is_dir():
            if any(True for _ in zip(range(1), p.rglob("*.jpg.json"))):
                out.append("megaface")
            return list(dict.fromkeys(out))
        suffix = _base_suffix(p)
        if suffix in (".parquet", ".pq"):
            names = {_norm(c) for c in _parquet_columns(p)}
        else:
            line = _first_line(p)
            row = _first_row(p)
            names = {_norm(c) for c in row}
            if line.count("\t") + 1 in range(20, 28):
                out.append("yfcc100m")
            if len(row) in range(DIF_COLUMNS - 10, DIF_COLUMNS + 10):
                out.append("dif")
            if line.lstrip().startswith("{") and any(k in line for k in ('"faces"', '"boxes"', '"bbox"')):
                out.append("faces-jsonl")
        if "bbox" in names or "facebox" in names:
            out.append("facescrub")
        if "url" in names and names & {"text", "caption"}:
            out.append("img2dataset" if "status" in names else "laion")
    except _UNREADABLE:
        pass
    return list(dict.fromkeys(out))


def part_files(folder: str | Path, *, quiet: bool = False) -> list[Path]:
    """The manifest parts in a folder, sorted: Parquet files (``part-00000-<uuid>-c000.snappy.parquet``,
    img2dataset's ``00000.parquet``...) when it has any, else its CSV/TSV/TXT/JSONL files (also
    ``.gz``/``.bz2``); Spark's ``_SUCCESS`` and checksums and img2dataset's ``_stats.json`` are not parts."""
    folder = Path(folder)
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
             and not any(m in p.name for m in _NOT_PARTS)]
    parquet = [p for p in files if _base_suffix(p) in (".parquet", ".pq")]
    if parquet:
        return parquet
    text = [p for p in files if _base_suffix(p) in (".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson")
            or (p.suffix.lower() in COMPRESSED and _base_suffix(p) == "")]
    if not text and not quiet:
        raise ManifestError(f"{folder}: no manifest parts in this folder (Parquet, CSV, TSV, TXT, JSON Lines)")
    return text


def expand(spec: str) -> list[str]:
    """A glob (``data/part-*.parquet``, quoted so the shell left it) -> the files it names, sorted."""
    if Path(spec).exists() or not any(c in spec for c in "*?["):
        return [spec]
    found = sorted(glob.glob(spec))
    if not found:
        raise ManifestError(f"{spec}: no file matches this pattern")
    return found


def open_preset(spec: str | Path, preset: str, dataset: str | None = None,
                columns: Mapping[str, str] | None = None) -> Source:
    """A manifest (a MegaFace folder) read with ``preset`` (one of :data:`PRESETS`)."""
    p = Path(spec)
    if preset not in PRESETS:
        raise ManifestError(f"unknown manifest format {preset!r} (known: {', '.join(PRESETS)}, auto)")
    if preset == "megaface":
        if columns:
            raise ManifestError("--column does not apply to --format megaface (its fields are fixed)")
        return MegafaceSource(p, dataset)
    if p.is_dir():
        raise ManifestError(f"{spec}: --format {preset} reads a manifest file, not a folder")
    if not p.is_file():
        raise ManifestError(f"{spec}: no such file or folder")
    if preset in ("yfcc100m", "dif"):
        if columns:
            raise ManifestError(f"--column does not apply to --format {preset} (its fields are fixed)")
        return YfccSource(p, dataset) if preset == "yfcc100m" else DifSource(p, dataset)
    cls = {"laion": LaionSource, "img2dataset": Img2datasetSource, "faces-jsonl": FacesSource,
           "facescrub": FacescrubSource}[preset]
    return cls(p, dataset, columns)
