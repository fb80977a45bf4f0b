"""``--format yfcc100m``: the YFCC100M metadata lines (``yfcc100m_dataset``), both releases.

The original Webscope files (``yfcc100m_dataset-0`` .. ``-9``, 23 tab-separated fields a line) and the
later single file hosted on AWS, which adds a line number and the photo hash in front (25 fields); no
header; plain, ``.gz`` or ``.bz2``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote_plus

from matcher.errors import ManifestError
from matcher.provenance.flickr import flickr_details
from matcher.ingest.sources import Source, SourceItem, dataset_name, guarded, open_text

__all__ = ["YFCC_FIELDS", "YFCC_AWS_FIELDS", "YfccSource", "looks_yfcc"]

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


def _yfcc_fields(line: str) -> dict[str, str] | None:
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) == len(YFCC_FIELDS):
        return dict(zip(YFCC_FIELDS, parts))
    if len(parts) == len(YFCC_AWS_FIELDS):
        return dict(zip(YFCC_AWS_FIELDS, parts))
    return None


def looks_yfcc(line: str) -> bool:
    """A YFCC100M metadata line: 23 or 25 tab-separated fields, a numeric photo id, an NSID, a flickr.com
    page URL and a marker 0 or 1."""
    f = _yfcc_fields(line)
    return (f is not None and f["photo_id"].isdigit() and f["marker"] in ("0", "1")
            and bool(_NSID.match(f["user_nsid"])) and "flickr.com/photos/" in f["page_url"])


class YfccSource(Source):
    """Lines of a ``yfcc100m_dataset`` file (23 or 25 tab-separated fields, no header; ``.gz``/``.bz2``).

    Key = the photo id. Fields: user NSID -> owner, licence name -> license, title (decoded) ->
    title, page URL -> page_url, download URL -> url. Extra: ``photo_id``, ``owner_nsid``,
    ``owner_name`` (the nickname, decoded), ``date_taken``, ``license_url``, ``flickr`` (farm, server,
    secret, original secret, extension) and, in the 25-field release, ``line_number`` and ``photo_hash``. Videos (marker 1) are recorded as failed items of
    kind ``video`` with the reason, and never downloaded.
    """

    preset = "yfcc100m"
    counts_rows = True

    def __init__(self, path: str | Path, dataset: str | None = None):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise ManifestError(f"{path}: no such manifest file")
        self.dataset = dataset or dataset_name(self.path)
        self.location = str(self.path)

    def _items(self) -> Iterator[SourceItem]:
        return guarded(self.path.name, self._read())

    def _read(self) -> Iterator[SourceItem]:
        with open_text(self.path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                self.counts.rows += 1
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
        details = flickr_details(fields, {k: v[k] for k in ("farm_id", "server_id", "secret", "secret_original",
                                                             "extension") if v[k]})
        if details:
            extra["flickr"] = details
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
