"""``--format facescrub``: the FaceScrub lists, ``facescrub_actors.txt`` and ``facescrub_actresses.txt``.

Tab-separated with a header ``name image_id face_id url bbox sha256``: one row per face of a named
person, ``bbox`` the face box as ``x1,y1,x2,y2`` in the pixels of the image at ``url`` (one field),
``sha256`` the SHA-256 of that image's bytes when the list was made. Published with a ``.txt`` suffix.
"""

from __future__ import annotations

import re
from typing import Any

from matcher.errors import ManifestError
from matcher.ingest.sources import ManifestSource, SourceItem, _norm

from matcher.ingest.formats.values import number

__all__ = ["FACESCRUB_COLUMNS", "FacescrubSource", "looks_facescrub"]

FACESCRUB_COLUMNS = ("name", "image_id", "face_id", "url", "bbox", "sha256")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def looks_facescrub(headers: list[str]) -> bool:
    """FaceScrub's header: name, url, bbox and face_id (image_id and sha256 too, in the release)."""
    return {"name", "url", "bbox", "faceid"} <= {_norm(h) for h in headers}


class FacescrubSource(ManifestSource):
    """A FaceScrub list (``.txt``, tab- or comma-separated, sniffed; ``.gz``/``.bz2`` allowed): one item per row.

    Key = ``face_id``. ``url`` -> url. ``bbox`` (``x1,y1,x2,y2``, pixels) -> the item's face (a face entry).
    ``name`` is the person the photo shows, kept as ``extra.person`` (not as the photo's title). Kept:
    ``image_id``, ``face_id``, ``sha256``: a downloaded image whose SHA-256 differs is not hashed (failed,
    kind ``sha256``: the URL now serves other bytes than the list's). A bbox that is not 4 numbers is
    named in ``extra.face_errors``; a row without a URL is a failed item.
    """

    preset = "facescrub"
    aliases = {"url": ("url",), "key": ("face_id", "faceid")}

    def __init__(self, path, dataset=None, columns=None):
        super().__init__(path, dataset, columns, fmt="sniff")
        self.fmt = "sniff"

    def _mapping(self, headers: list[str]) -> dict[str, str]:
        if not looks_facescrub(headers) and not self.columns:
            raise ManifestError(f"{self.path.name}: not a FaceScrub list (its header is {', '.join(headers[:8])}; "
                                f"FaceScrub's is {' '.join(FACESCRUB_COLUMNS)})")
        return super()._mapping(headers)

    def _item(self, n: int, row: dict[str, Any], mapping: dict[str, str]) -> SourceItem:
        item = super()._item(n, row, mapping)
        cols = {_norm(k): k for k in row}
        person = (row.get(cols.get("name", ""), "") or "").strip()
        bbox = (row.get(cols.get("bbox", ""), "") or "").strip()
        sha = (row.get(cols.get("sha256", ""), "") or "").strip().lower()
        for k in ("name", "bbox", "sha256"):
            item.extra.pop(cols.get(k, ""), None)
        for k in ("imageid", "faceid"):
            if cols.get(k) in item.extra:
                v = number(item.extra.pop(cols[k]))
                item.extra[k[:-2] + "_id"] = v
        if "faceid" in cols and "face_id" not in item.extra:
            item.extra["face_id"] = number(row.get(cols["faceid"]))
        if person:
            item.extra["person"] = person
        if sha:
            item.extra["sha256"] = sha
            if _HEX64.fullmatch(sha):
                item.sha256 = sha
        if bbox:
            parts = [number(v) for v in bbox.split(",")]
            if len(parts) == 4 and all(isinstance(v, (int, float)) for v in parts) \
                    and parts[2] > parts[0] and parts[3] > parts[1]:
                item.faces = (((float(parts[0]), float(parts[1]), float(parts[2]), float(parts[3]), True),), None)
            else:
                item.extra["face_errors"] = [f"face 0: bbox {bbox!r} is not x1,y1,x2,y2"[:200]]
        return item
