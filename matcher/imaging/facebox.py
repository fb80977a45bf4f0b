"""Face boxes published with a dataset: reading them from a manifest, normalising them, the regions they index.

Face datasets publish, next to each image, the boxes of the faces in it (and often train on crops
around them). A faces manifest (:mod:`matcher.ingest.presets`, ``--format faces-jsonl``) gives each row's
boxes; this module is the one place that

* reads one face from the shapes datasets publish (:func:`parse_face`): ``[x, y, w, h]``,
  ``{"box": [x, y, w, h]}``, ``{"bbox": ...}``, ``{"xyxy": [x1, y1, x2, y2]}``,
  ``{"face_rectangle": {"left", "top", "width", "height"}}``, ``{"x1", "y1", "x2", "y2"}``...;
* turns them into fractions of the image (:func:`normalise`): ``[[l, t, r, b], ...]`` in
  ``0..1`` of the upright image's width and height, rounded to 5 decimals: the form stored in the
  catalog (the item's ``extra["faces"]``), so index time and verification derive the same region;
* gives the region a face entry indexes (:func:`face_region`): a square of ``FACE_INDEX_SCALE`` x the
  face's longer side, centred on the face, clipped to the image (as the query side crops around the
  faces it detects, :data:`matcher.imaging.regions.FACE_SCALES`).

Pure Python; no I/O.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

__all__ = [
    "FACE_INDEX_SCALE", "MAX_FACE_ENTRIES", "FACES_KEYS", "RawFaces", "parse_faces", "parse_face", "normalise",
    "face_region", "face_kind", "face_index", "FaceSpecError",
]

#: Side of the square a face entry hashes, as a multiple of the face box's longer side: between the
#: query side's face crops (1.6 .. 2.4 x the detected face), about what face datasets crop.
FACE_INDEX_SCALE = 2.0
#: Face entries made per image (the first boxes of the manifest row); every box is still stored.
MAX_FACE_ENTRIES = 8
#: A face region smaller than this (pixels of the decoded working image) is not indexed.
MIN_FACE_REGION = 16
#: A face region covering this share of the image or more adds nothing to the ``full`` entry.
MAX_FACE_AREA = 0.9

#: Keys of a manifest row that hold its list of faces, in order of preference.
FACES_KEYS = ("faces", "face_boxes", "boxes", "bboxes", "face_bboxes")
#: Keys of one face whose value is the box as [x, y, w, h] (or a dict, see parse_face).
_XYWH_KEYS = ("box", "bbox", "xywh", "rect", "rectangle", "face_box", "face_rectangle", "faceRectangle",
              "facial_area", "face")
#: Keys of one face whose value is the box as [x1, y1, x2, y2].
_XYXY_KEYS = ("xyxy", "box_xyxy", "bbox_xyxy", "ltrb")
_UNITS = {"px": True, "pixel": True, "pixels": True, "abs": True, "absolute": True,
          "fraction": False, "fractions": False, "relative": False, "normalized": False, "normalised": False,
          "rel": False, "frac": False}

#: (boxes, reference size): each box ``(l, t, r, b, in_pixels)``; the size ``(w, h)`` the pixel boxes were
#: measured on when the manifest says so, else None (the dataset image's own size).
RawFaces = tuple[tuple[tuple[float, float, float, float, bool], ...], "tuple[int, int] | None"]


class FaceSpecError(ValueError):
    """One face of a manifest row has no box we can read."""


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise FaceSpecError(f"{what} is not a number ({v!r})")
    try:
        f = float(v)
    except ValueError:
        raise FaceSpecError(f"{what} is not a number ({v!r})") from None
    if not math.isfinite(f):
        raise FaceSpecError(f"{what} is not a finite number")
    return f


def _units(value: Any) -> bool | None:
    """True for pixels, False for fractions, None when not said."""
    if value is None:
        return None
    u = _UNITS.get(str(value).strip().lower())
    if u is None:
        raise FaceSpecError(f"unknown box units {value!r} (pixels or fractions)")
    return u


def _four(v: Any, what: str) -> tuple[float, float, float, float]:
    if not isinstance(v, (list, tuple)) or len(v) != 4:
        raise FaceSpecError(f"{what} must be 4 numbers, got {v!r}"[:200])
    return tuple(_num(x, what) for x in v)  # type: ignore[return-value]


def _from_dict(d: dict[str, Any], what: str) -> tuple[float, float, float, float]:
    """(l, t, r, b) from a dict: x/y/w/h, left/top/width/height, x1/y1/x2/y2 or left/top/right/bottom."""
    k = {str(key).lower(): v for key, v in d.items()}
    if all(a in k for a in ("x1", "y1", "x2", "y2")):
        return _num(k["x1"], what), _num(k["y1"], what), _num(k["x2"], what), _num(k["y2"], what)
    if all(a in k for a in ("xmin", "ymin", "xmax", "ymax")):
        return _num(k["xmin"], what), _num(k["ymin"], what), _num(k["xmax"], what), _num(k["ymax"], what)
    x = k.get("x", k.get("left"))
    y = k.get("y", k.get("top"))
    if x is not None and y is not None:
        if "right" in k and "bottom" in k:
            return _num(x, what), _num(y, what), _num(k["right"], what), _num(k["bottom"], what)
        w, h = k.get("w", k.get("width")), k.get("h", k.get("height"))
        if w is not None and h is not None:
            x, y = _num(x, what), _num(y, what)
            return x, y, x + _num(w, what), y + _num(h, what)
    raise FaceSpecError(f"{what}: no box in {sorted(d)!r} (x/y/w/h, left/top/width/height, x1/y1/x2/y2 "
                        "or left/top/right/bottom)"[:240])


def parse_face(face: Any, *, xyxy: bool = False, units: bool | None = None
               ) -> tuple[float, float, float, float, bool]:
    """One face of a manifest row -> ``(l, t, r, b, in_pixels)``.

    ``face`` is a list ``[x, y, w, h]`` (``[x1, y1, x2, y2]`` when ``xyxy``), or a dict holding the box
    under one of ``box``, ``bbox``, ``xywh``, ``rect``, ``face_rectangle``, ``facial_area``... (a list
    ``[x, y, w, h]`` or a dict), under ``xyxy``/``box_xyxy``/``bbox_xyxy`` (``[x1, y1, x2, y2]``), or
    being the box itself (``x``/``y``/``w``/``h``, ``left``/``top``/``width``/``height``,
    ``x1``/``y1``/``x2``/``y2``, ``left``/``top``/``right``/``bottom``). ``units`` (or the face's own
    ``units`` key): pixels (True) or fractions of the image (False); when neither says, a box whose four
    numbers all lie in 0..1 and are not all whole is read as fractions, any other as pixels.
    """
    given: tuple[float, ...]  # the four numbers as the manifest wrote them (units are judged on these)
    if isinstance(face, dict):
        if "units" in face or "box_units" in face:
            units = _units(face.get("units", face.get("box_units")))
        box = None
        for key in _XYXY_KEYS:
            if key in face:
                box = given = _four(face[key], key)
                break
        if box is None:
            for key in _XYWH_KEYS:
                if key in face:
                    v = face[key]
                    if isinstance(v, dict):
                        box = given = _from_dict(v, key)
                    else:
                        given = x, y, w, h = _four(v, key)
                        box = (x, y, x + w, y + h) if not xyxy else (x, y, w, h)
                    break
        if box is None:
            box = given = _from_dict(face, "face")
    else:
        given = x, y, a, b = _four(face, "box")
        box = (x, y, a, b) if xyxy else (x, y, x + a, y + b)
    l, t, r, b = box
    if not (r > l and b > t):
        raise FaceSpecError(f"empty box (left {l:g}, top {t:g}, right {r:g}, bottom {b:g})")
    if units is None:
        units = not (all(0.0 <= v <= 1.0 for v in given) and not all(float(v).is_integer() for v in given))
    return (l, t, r, b, bool(units))


def _size_of(row: dict[str, Any]) -> tuple[int, int] | None:
    for wk, hk in (("image_width", "image_height"), ("img_width", "img_height"), ("width", "height"),
                   ("original_width", "original_height")):
        w, h = row.get(wk), row.get(hk)
        if w is None or h is None:
            continue
        try:
            w, h = int(float(w)), int(float(h))
        except (TypeError, ValueError):
            continue
        if w > 0 and h > 0:
            return (w, h)
    return None


def parse_faces(row: dict[str, Any]) -> tuple[RawFaces | None, list[str]]:
    """The faces of one manifest row: (raw faces or None when the row lists none, one reason per face
    that could not be read). Row-level ``box_format`` (``xywh``/``xyxy``) and ``box_units``
    (``pixels``/``fractions``) apply to every face that does not say otherwise."""
    faces = None
    for key in FACES_KEYS:
        if isinstance(row.get(key), list):
            faces = row[key]
            break
    if faces is None:
        return None, []
    fmt = str(row.get("box_format", "xywh")).strip().lower()
    if fmt not in ("xywh", "xyxy", "ltrb"):
        return None, [f"unknown box_format {fmt!r} (xywh or xyxy)"]
    try:
        units = _units(row.get("box_units", row.get("units")))
    except FaceSpecError as e:
        return None, [str(e)]
    boxes, errors = [], []
    for i, f in enumerate(faces):
        try:
            boxes.append(parse_face(f, xyxy=fmt != "xywh", units=units))
        except FaceSpecError as e:
            errors.append(f"face {i}: {e}")
    return (tuple(boxes), _size_of(row)), errors


def normalise(raw: RawFaces | None, image_size: tuple[int, int] | None) -> list[list[float]] | None:
    """Fractions ``[[l, t, r, b], ...]`` (clipped to 0..1, 5 decimals) of the faces' boxes.

    Pixel boxes are divided by the reference size the manifest gave, else by ``image_size`` (the
    dataset image's upright size); None when a pixel box has neither. Boxes that end up empty once
    clipped are left out (the order of the others is kept: entry ``face<i>`` is box ``i``).
    """
    if raw is None:
        return None
    boxes, ref = raw
    out = []
    for l, t, r, b, px in boxes:
        if px:
            size = ref or image_size
            if size is None:
                return None
            w, h = size
            l, t, r, b = l / w, t / h, r / w, b / h
        box = [round(min(1.0, max(0.0, v)), 5) for v in (l, t, r, b)]
        if box[2] > box[0] and box[3] > box[1]:
            out.append(box)
    return out


def face_region(box: Sequence[float], width: float, height: float) -> tuple[float, float, float, float]:
    """Pixel box (l, t, r, b) in an image of ``width`` x ``height`` that face entry ``box`` (fractions)
    hashes: a square of FACE_INDEX_SCALE x the face's longer side around its centre, clipped to the image."""
    l, t, r, b = box
    fw, fh = (r - l) * width, (b - t) * height
    cx, cy = (l + r) / 2 * width, (t + b) / 2 * height
    s = max(fw, fh) * FACE_INDEX_SCALE / 2
    return (max(0.0, cx - s), max(0.0, cy - s), min(float(width), cx + s), min(float(height), cy + s))


def indexable(region: tuple[float, float, float, float], width: float, height: float) -> bool:
    """A face region worth an entry: not tiny, and not (nearly) the whole image."""
    l, t, r, b = region
    if min(r - l, b - t) < MIN_FACE_REGION:
        return False
    return (r - l) * (b - t) < MAX_FACE_AREA * width * height


def face_kind(i: int) -> str:
    return f"face{i}"


def face_index(kind: str) -> int | None:
    """``3`` for entry kind ``face3``; None for any other kind."""
    if kind.startswith("face") and kind[4:].isdigit():
        return int(kind[4:])
    return None


def face_kinds() -> Iterable[str]:
    return (face_kind(i) for i in range(MAX_FACE_ENTRIES))
