"""``--format faces-jsonl``: JSON Lines with per-face boxes, as face datasets publish them.

The shapes of a face are those of :mod:`matcher.imaging.facebox`; each face also becomes an index entry of its item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matcher.errors import ManifestError
from matcher.imaging.facebox import FACES_KEYS, parse_faces
from matcher.ingest.sources import ManifestSource, SourceItem, _base_suffix

__all__ = ["FacesSource", "looks_faces_jsonl"]


def looks_faces_jsonl(obj: Any) -> bool:
    """A JSON Lines first object that lists faces."""
    return isinstance(obj, dict) and any(isinstance(obj.get(k), list) for k in FACES_KEYS)


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
        return super()._mapping([h for h in headers if h not in FACES_KEYS])

    def _item(self, n: int, row: dict[str, Any], mapping: dict[str, str]) -> SourceItem:
        item = super()._item(n, row, mapping)
        faces, errors = parse_faces(row)
        for key in FACES_KEYS + ("box_format", "box_units", "units"):
            item.extra.pop(key, None)
        item.faces = faces
        if errors:
            item.extra["face_errors"] = errors[:20]
        return item
