"""``--format laion`` and ``--format img2dataset``: LAION metadata and img2dataset's output.

LAION-400M / LAION-5B / LAION-Aesthetics metadata Parquet files and their CSV/TSV exports, and the
Parquet img2dataset writes beside the images it downloaded (see :class:`LaionSource`).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from matcher.errors import ManifestError
from matcher.imaging.images import IMAGE_EXTENSIONS
from matcher.ingest.sources import ManifestSource, SourceItem, _norm

from matcher.ingest.formats.values import number

__all__ = ["LaionSource", "Img2datasetSource", "looks_laion", "looks_img2dataset", "img2dataset_row"]

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


def looks_img2dataset(headers: list[str]) -> bool:
    """img2dataset's output Parquet: url, key, status and error_message (caption when it was asked for)."""
    return {"url", "key", "status", "errormessage"} <= {_norm(x) for x in headers}


def looks_laion(headers: list[str]) -> bool:
    h = {_norm(x) for x in headers}
    if "url" not in h or not h & {"text", "caption"}:
        return False
    return bool(h & _LAION_MARKERS) or {"key", "status", "errormessage"} <= h


class LaionSource(ManifestSource):
    """A LAION metadata file (Parquet, or a CSV/TSV export; ``.gz`` for text).

    URL -> url, TEXT (or caption) -> title, LICENSE -> license (LAION-400M; ``?`` means unknown and is
    dropped), key -> key, else SAMPLE_ID, else ``<file name>#<row>`` (the 0-based row of the file, as
    pandas and pyarrow number it). Kept in extra: ``width``, ``height`` (the published size),
    ``original_width``/``original_height``, ``similarity``, ``punsafe``, ``pwatermark``, ``aesthetic``,
    ``hash``, ``sha256``/``md5``, ``nsfw``, ``language``, ``sample_id``, ``row``. Other columns (img2dataset's
    exif, index columns) are not kept.

    img2dataset's output (``00000.parquet`` beside the folder ``00000/`` of ``000000000.jpg`` ...): the
    image already downloaded is hashed where it is (the URL is kept, not fetched); a row whose
    ``status`` is not ``success`` is a failed item of kind ``upstream`` with img2dataset's
    ``error_message`` (it never was in the dataset's images); a successful row whose file is missing is
    downloaded.
    """

    preset = "laion"
    aliases = _LAION_FIELDS

    def __init__(self, path, dataset=None, columns=None):
        super().__init__(path, dataset, columns)
        if self.fmt == "jsonl":
            raise ManifestError(f"{self.path.name}: --format {self.preset} reads Parquet, CSV or TSV, not JSON Lines")
        self._files: dict[str, str] | None = None

    def _items(self) -> Iterator[SourceItem]:
        headers = self.headers()
        mapping = self._mapping(headers)
        extra_cols = {h: _LAION_EXTRA[_norm(h)] for h in headers if _norm(h) in _LAION_EXTRA}
        by_norm = {_norm(h): h for h in headers}
        status_col, error_col = by_norm.get("status"), by_norm.get("errormessage")
        files = self._downloaded() if "key" in mapping else {}
        row_index = 0
        for n, row, err in self._rows():
            if row is None:
                yield SourceItem(self.dataset, f"{self.path.name}#{row_index}", error=err)
            else:
                item = self._laion_item(row_index, row, mapping, extra_cols)
                if status_col is not None:
                    _img2dataset_row(item, row.get(status_col), row.get(error_col) if error_col else None, files)
                yield item
            row_index += 1

    def _downloaded(self) -> dict[str, str]:
        """img2dataset's images beside this Parquet: ``<stem>/<key>.<ext>`` (key -> path), {} when none."""
        folder = self.path.parent / self.path.name.split(".")[0]
        if not folder.is_dir():
            return {}
        out: dict[str, str] = {}
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                stem = p.name.rsplit(".", 1)[0]
                out.setdefault(stem, str(p))
                if stem.isdigit():  # a key column written as a number: 7 for 000000007.jpg
                    out.setdefault(str(int(stem)), str(p))
        return out

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
            v = number(row.get(h))
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


class Img2datasetSource(LaionSource):
    """img2dataset's output Parquet, read as :class:`LaionSource` reads it (local images used)."""

    preset = "img2dataset"


def _img2dataset_row(item: SourceItem, status: Any, error: Any, files: dict[str, str]) -> None:
    """An img2dataset row's outcome: its local image, or the reason it failed upstream."""
    img2dataset_row(item, status, error, files.get(item.key))


def img2dataset_row(item: SourceItem, status: Any, error: Any, local: str | None) -> None:
    """Apply img2dataset's ``status``/``error_message`` and the image file it saved (``local``) to ``item``."""
    status = str(status).strip().lower() if status is not None else ""
    if status and status != "success":
        if item.error is None:
            why = str(error).strip() if error not in (None, "") else status
            item.error, item.error_kind = f"failed upstream (img2dataset: {why})", "upstream"
        return
    if local is not None and item.error is None:
        item.path = local
        item.fields["path"] = local
