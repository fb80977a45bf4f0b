"""Where to look inside an image: the content box of a dataset image, the variants of a query photo.

Dataset copies are rarely the exact frame a person holds. Two complementary moves:

* **Index side** (:func:`content_box`): a copy that sits inside padding, a letterbox, a
  caption bar or a screenshot is found again by also hashing its *content box*: the
  largest block of photo-like pixels once flat backgrounds and thin text are set aside.
* **Query side** (:func:`query_boxes` and :data:`DIHEDRAL`): the person's photo is
  hashed as the crops a re-host is likely to have made (centre and one-sided crops) in
  each of the 8 orientations (mirrors and quarter turns), and slightly rotated.

Everything here works on small numpy arrays (the caller downsizes first); no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "Box", "content_box", "content_boxes", "trim_box", "index_boxes", "query_boxes", "DIHEDRAL", "dihedral", "crop", "ROTATIONS",
    "Variant", "Sources", "query_variants", "FACE_SCALES",
]

Box = tuple[float, float, float, float]  # (left, top, right, bottom) as fractions of width/height

#: The 8 orientations: name -> PIL transpose (None = as is).
DIHEDRAL: dict[str, Image.Transpose | None] = {
    "id": None,
    "mirror": Image.Transpose.FLIP_LEFT_RIGHT,
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "flipv": Image.Transpose.FLIP_TOP_BOTTOM,
    "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}

#: Rotations (degrees) tried on the upright and mirrored photo: each cropped to the inner rectangle, on
#: the same canvas with black or white corners, and on a canvas grown to hold the whole rotated photo.
ROTATIONS = (-4.0, -2.0, 2.0, 4.0)
#: Larger rotations, tried on the upright photo only (inner rectangle and grown canvas).
WIDE_ROTATIONS = (-10.0, -7.0, 7.0, 10.0)
#: Long side of the copy rotated variants are made from (a rotation costs per pixel; the hash needs 32 px
#: and the verification thumbnail 64 px of a region that covers most of the photo).
SMALL_SIDE = 160


def dihedral(img: Image.Image, name: str) -> Image.Image:
    op = DIHEDRAL[name]
    return img if op is None else img.transpose(op)


def crop(img: Image.Image, box: Box) -> Image.Image:
    w, h = img.size
    l, t, r, b = box
    return img.crop((round(l * w), round(t * h), round(r * w), round(b * h)))


def query_boxes(fine: bool = False) -> dict[str, Box]:
    """Crops of the person's photo that re-hosts commonly keep: whole, centre 90/80/70%, one side 85%.

    ``fine`` adds every combination of 7% trimmed off any of the four sides (16 boxes in all),
    for the upright and mirrored photo, where uneven crops are common.
    """
    boxes: dict[str, Box] = {"full": (0.0, 0.0, 1.0, 1.0)}
    for keep in (0.9, 0.8, 0.7) + ((0.6, 0.5) if fine else ()):
        m = (1 - keep) / 2
        boxes[f"c{round(keep * 100)}"] = (m, m, 1 - m, 1 - m)
    boxes["l85"] = (0.15, 0.0, 1.0, 1.0)
    boxes["r85"] = (0.0, 0.0, 0.85, 1.0)
    boxes["t85"] = (0.0, 0.15, 1.0, 1.0)
    boxes["b85"] = (0.0, 0.0, 1.0, 0.85)
    if fine:
        for mask in range(1, 16):
            sides = [0.07 if mask >> k & 1 else 0.0 for k in range(4)]
            name = "e" + "".join("ltrb"[k] for k in range(4) if mask >> k & 1)
            boxes[name] = (sides[0], sides[1], 1 - sides[2], 1 - sides[3])
    return boxes


def _flat(gray: np.ndarray) -> np.ndarray:
    """Pixels that differ by at most 2 grey levels from each of their 4 neighbours."""
    out = np.ones(gray.shape, bool)
    steep = cv2.absdiff(gray[:, 1:], gray[:, :-1]) > 2
    out[:, 1:] &= ~steep
    out[:, :-1] &= ~steep
    steep = cv2.absdiff(gray[1:], gray[:-1]) > 2
    out[1:] &= ~steep
    out[:-1] &= ~steep
    return out


def _spread_at_most(hist: np.ndarray, limit: float, values) -> bool:
    """``np.percentile(v, 95) - np.percentile(v, 5) <= limit`` for the grey levels ``v`` counted in ``hist``.

    Each percentile lies between two neighbouring order statistics, read off the histogram; only when
    those brackets straddle the limit are the values themselves (``values()``) asked for."""
    c = np.cumsum(hist)
    n = int(c[-1])
    lo_i, hi_i = int(0.05 * (n - 1)), int(0.95 * (n - 1))
    order = np.searchsorted(c, [lo_i, min(lo_i + 1, n - 1), hi_i, min(hi_i + 1, n - 1)], side="right")
    lo_min, lo_max, hi_min, hi_max = (float(v) for v in order)
    if hi_max - lo_min <= limit:
        return True
    if hi_min - lo_max > limit:
        return False
    lo, hi = np.percentile(values(), (5, 95))
    return bool(hi - lo <= limit)


def content_box(gray: np.ndarray, *, min_area: float = 0.08, max_area: float = 0.92) -> Box | None:
    """The largest photo-like block inside a frame (see :func:`content_boxes`), or None."""
    boxes = content_boxes(gray, min_area=min_area, max_area=max_area, most=1)
    return boxes[0] if boxes else None


def content_boxes(gray: np.ndarray, *, min_area: float = 0.08, max_area: float = 0.92, most: int = 3) -> list[Box]:
    """The photo inside a frame of flat colour (padding, letterbox, caption bar, screenshot UI), or None.

    ``gray`` is a uint8 image, ideally 128-512 px on its long side. The *background* is made
    of flat regions that touch the image border and hold one colour (a padding bar, a UI
    panel; not a photo's smooth sky, whose colour drifts). What is left, after an opening
    that erases thin strokes of text, is the content; the largest block's bounding box is
    returned when it covers between ``min_area`` and ``max_area`` of the image; up to ``most``
    blocks, largest first (a collage holds several photos).
    """
    h, w = gray.shape
    if h < 16 or w < 16:
        return []
    flat = _flat(gray)
    if not (flat[0].any() or flat[-1].any() or flat[:, 0].any() or flat[:, -1].any()):
        return []  # no flat region touches the border: no background (most photos end here)
    # 4-connected flat regions; OpenCV's per-component statistics cost 3x the labelling on a texture of
    # tiny flat specks, so areas and grey levels of the regions touching the border come from one
    # histogram per region instead (one pass over the pixels for all of them)
    n, labels = cv2.connectedComponents(flat.view(np.uint8), connectivity=4)
    if n <= 1:
        return []
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    if border.size == 0:
        return []
    slot = np.full(n, -1, np.int32)
    slot[border] = np.arange(border.size, dtype=np.int32)
    where = slot[labels]
    inside = where >= 0
    hist = np.bincount(where[inside] * 256 + gray[inside], minlength=border.size * 256).reshape(border.size, 256)
    # background = flat border regions of >= 1% of the image in one colour (5th-95th percentile within 6 levels)
    one_colour = np.zeros(n, bool)
    for i in np.flatnonzero(hist.sum(axis=1) >= 0.01 * h * w):
        one_colour[border[i]] = _spread_at_most(hist[i], 6.0, lambda lab=border[i]: gray[labels == lab])
    if not one_colour.any():
        return []
    background = one_colour[labels]
    content = (~background).view(np.uint8)
    k = max(3, round(min(h, w) * 0.025))
    # an opening that erases thin strokes (text); outside the image counts as background
    kernel = np.ones((k, k), np.uint8)
    a = k - 1 - k // 2  # the dilation's anchor mirrors the erosion's (k // 2): no shift for even k
    core = cv2.dilate(cv2.erode(content, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0), kernel,
                      anchor=(a, a), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    n, _, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=4)
    if n <= 1:
        return []
    out: list[Box] = []
    for best in np.argsort(-stats[1:, cv2.CC_STAT_AREA], kind="stable")[: most * 2] + 1:
        left, top, bw, bh = (int(v) for v in stats[best, :4])
        area = bh * bw / (h * w)
        if min_area <= area <= max_area:
            out.append((left / w, top / h, (left + bw) / w, (top + bh) / h))
        if len(out) >= most:
            break
    return out


def trim_box(gray: np.ndarray, *, max_std: float = 5.0, max_step: float = 8.0) -> Box | None:
    """Uniform borders trimmed from each side (padding, letterbox bars), or None if there are none.

    From each edge inwards, a row/column belongs to the border while it is nearly uniform
    and close to the edge line's colour.
    """
    g = gray.astype(np.float32)
    h, w = g.shape
    if h < 16 or w < 16:
        return None

    def run(lines: np.ndarray) -> int:
        """How many lines, from the first, are uniform and close to the first line's colour."""
        if lines[0].std() > max_std:  # the usual case, decided without looking further in
            return 0
        ref = float(np.median(lines[0]))
        bad = (lines.std(axis=1) > max_std) | (np.abs(lines.mean(axis=1) - ref) > max_step)
        return int(np.argmax(bad)) if bad.any() else len(lines)

    top = run(g)
    bottom = run(g[::-1])
    left = run(g.T)
    right = run(g.T[::-1])
    if top + bottom >= h * 0.8 or left + right >= w * 0.8:
        return None
    area = (h - top - bottom) * (w - left - right) / (h * w)
    if area > 0.97:
        return None
    return (left / w, top / h, (w - right) / w, (h - bottom) / h)


def _iou(a: Box, b: Box) -> float:
    l, t = max(a[0], b[0]), max(a[1], b[1])
    r, bt = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, r - l) * max(0.0, bt - t)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def index_boxes(gray: np.ndarray) -> dict[str, Box]:
    """Regions of a dataset image that get their own index entry: the whole image, and the photo
    inside any padding/letterbox (``trim``) or caption/screenshot frame (``content``) when distinct."""
    boxes: dict[str, Box] = {"full": (0.0, 0.0, 1.0, 1.0)}
    found = [("trim", trim_box(gray))]
    found += [("content" if i == 0 else f"content{i + 1}", b) for i, b in enumerate(content_boxes(gray))]
    for kind, b in found:
        if b is None:
            continue
        # step 2% inside: the frame's edge pixels (JPEG ringing, a bar's last row) must not be part of
        # the region, or no crop of the person's photo could reproduce it
        dx, dy = (b[2] - b[0]) * 0.02, (b[3] - b[1]) * 0.02
        b = (b[0] + dx, b[1] + dy, b[2] - dx, b[3] - dy)
        if all(_iou(b, other) < 0.97 for other in boxes.values()):
            boxes[kind] = b
    return boxes


#: Face crops tried around each detected face: square side = scale x the face box, centred on
#: the face and shifted by FACE_SHIFT of the box (another detector puts the box elsewhere).
FACE_SCALES = (1.6, 1.85, 2.1, 2.4)
FACE_SHIFT = 0.08


@dataclass(frozen=True)
class Variant:
    """One way a dataset may hold the query photo: a region of an oriented/rotated source image."""

    name: str  # e.g. "mirror/c80", "id/rot+3.5", "face0/x2.0"
    source: str  # key into the sources dict
    box: tuple[float, float, float, float]  # pixels in that source


def _inner_rect(w: int, h: int, angle: float) -> tuple[float, float, float, float]:
    a = np.deg2rad(abs(angle))
    s = 1 / (np.cos(a) + np.sin(a) * max(w / h, h / w))
    return ((w - w * s) / 2, (h - h * s) / 2, (w + w * s) / 2, (h + h * s) / 2)


class Sources(dict):
    """The oriented/rotated versions of a query's working image, made on first use.

    Keys: an orientation name (``"id"``, ``"mirror"``, ... see :data:`DIHEDRAL`),
    ``"<orientation>@<angle>"`` (rotated, black corners) and ``"<orientation>@<angle>/white"``.
    Rotated versions are made from :attr:`small` (at most SMALL_SIDE px): plenty for a
    32x32 hash and a 64x64 thumbnail of a region that covers most of the photo, and ~10x cheaper.
    """

    def __init__(self, img: Image.Image):
        super().__init__()
        self.img = img
        self._bases: dict[str, np.ndarray] = {}
        if max(img.size) > SMALL_SIDE:
            f = SMALL_SIDE / max(img.size)
            self.small = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))),
                                    Image.Resampling.BOX)
        else:
            self.small = img

    def expanded_size(self, angle: float) -> tuple[int, int]:
        w, h = self.small.size
        a = np.deg2rad(abs(angle))
        return (int(np.ceil(w * np.cos(a) + h * np.sin(a))), int(np.ceil(w * np.sin(a) + h * np.cos(a))))

    def __missing__(self, key: str) -> Image.Image:
        if "@" not in key:
            out = dihedral(self.img, key)
        else:
            orient, rest = key.split("@", 1)
            angle_s, _, fill = rest.partition("/")
            expand = angle_s.endswith("e")
            angle = float(angle_s.rstrip("e"))
            base = self._bases.get(orient)
            if base is None:  # one per orientation, shared by its ~20 rotations
                base = self._bases[orient] = np.asarray(dihedral(self.small, orient).convert("L"))
            h, w = base.shape
            size = self.expanded_size(angle) if expand else (w, h)
            if (w, h) != self.small.size:  # a quarter turn: the expanded canvas is the transposed one
                size = size[::-1] if expand else size
            # counter-clockwise by ``angle`` degrees about the centre (as PIL's rotate), on a canvas of ``size``
            m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
            m[0, 2] += (size[0] - w) / 2
            m[1, 2] += (size[1] - h) / 2
            out = Image.fromarray(cv2.warpAffine(base, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                                 borderValue=255 if fill == "white" else 0), "L")
        self[key] = out
        return out


def query_variants(img: Image.Image, faces: list[tuple[int, int, int, int]] = ()) -> tuple[Sources, list[Variant]]:
    """Sources (oriented/rotated images, made lazily) and the variants to hash for one query photo.

    ``img`` is the upright working image (a few hundred pixels); ``faces`` are (x, y, w, h)
    boxes in its pixels.
    """
    sources = Sources(img)
    variants: list[Variant] = []
    for dn in DIHEDRAL:
        w, h = img.size if dn in ("id", "mirror", "rot180", "flipv") else img.size[::-1]
        for bn, (l, t, r, b) in query_boxes(fine=dn in ("id", "mirror")).items():
            variants.append(Variant(f"{dn}/{bn}", dn, (l * w, t * h, r * w, b * h)))
    w, h = sources.small.size
    for dn, angles in (("id", ROTATIONS + WIDE_ROTATIONS), ("mirror", ROTATIONS)):
        for angle in angles:
            key = f"{dn}@{angle:+g}"
            variants.append(Variant(f"{dn}/rot{angle:+g}", key, _inner_rect(w, h, angle)))
            if abs(angle) <= 5:
                variants.append(Variant(f"{dn}/rot{angle:+g}-black", key, (0.0, 0.0, float(w), float(h))))
                variants.append(Variant(f"{dn}/rot{angle:+g}-white", f"{key}/white", (0.0, 0.0, float(w), float(h))))
            ekey = f"{dn}@{angle:+g}e"
            ew, eh = sources.expanded_size(angle)
            variants.append(Variant(f"{dn}/rot{angle:+g}-grown-black", ekey, (0.0, 0.0, float(ew), float(eh))))
            variants.append(Variant(f"{dn}/rot{angle:+g}-grown-white", f"{ekey}/white", (0.0, 0.0, float(ew), float(eh))))
    W, H = img.size
    shifts = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
    for i, (x, y, fw, fh) in enumerate(faces):
        for k in FACE_SCALES:
            s = max(fw, fh) * k / 2
            for sx, sy in shifts:
                cx, cy = x + fw / 2 + sx * FACE_SHIFT * fw, y + fh / 2 + sy * FACE_SHIFT * fh
                box = (max(0.0, cx - s), max(0.0, cy - s), min(float(W), cx + s), min(float(H), cy + s))
                variants.append(Variant(f"face{i}/x{k:g}{'' if (sx, sy) == (0, 0) else f'@{sx:+d}{sy:+d}'}", "id", box))
    return sources, variants
