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

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "Box", "content_box", "trim_box", "index_boxes", "query_boxes", "DIHEDRAL", "dihedral", "crop", "ROTATIONS",
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

#: Small rotations (degrees) tried on the upright and mirrored photo, each cropped to the inner rectangle.
ROTATIONS = (-4.0, -2.0, 2.0, 4.0)


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
    for keep in (0.9, 0.8, 0.7):
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


def content_box(gray: np.ndarray, *, min_area: float = 0.08, max_area: float = 0.92) -> Box | None:
    """The photo inside a frame of flat colour (padding, letterbox, caption bar, screenshot UI), or None.

    ``gray`` is a uint8 image, ideally 128-512 px on its long side. The *background* is made
    of flat regions that touch the image border and hold one colour (a padding bar, a UI
    panel; not a photo's smooth sky, whose colour drifts). What is left, after an opening
    that erases thin strokes of text, is the content; the largest block's bounding box is
    returned when it covers between ``min_area`` and ``max_area`` of the image.
    """
    g = gray.astype(np.int16)
    h, w = g.shape
    if h < 16 or w < 16:
        return None
    diff = np.zeros_like(g)
    diff[:, 1:] = np.abs(g[:, 1:] - g[:, :-1])
    diff[:, :-1] = np.maximum(diff[:, :-1], diff[:, 1:])
    dv = np.zeros_like(g)
    dv[1:, :] = np.abs(g[1:, :] - g[:-1, :])
    dv[:-1, :] = np.maximum(dv[:-1, :], dv[1:, :])
    flat = np.maximum(diff, dv) <= 2
    labels, n = ndimage.label(flat)
    if n == 0:
        return None
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    background = np.zeros_like(flat)
    for lab in border:
        region = labels == lab
        vals = g[region]
        if vals.size >= 0.01 * h * w and np.percentile(vals, 95) - np.percentile(vals, 5) <= 6:
            background |= region
    if not background.any():
        return None
    content = ~background
    k = max(3, round(min(h, w) * 0.025))
    core = ndimage.binary_opening(content, structure=np.ones((k, k)))
    labels, n = ndimage.label(core)
    if n == 0:
        return None
    sizes = ndimage.sum(core, labels, index=np.arange(1, n + 1))
    best = int(np.argmax(sizes)) + 1
    ys, xs = np.nonzero(labels == best)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    area = (bottom - top) * (right - left) / (h * w)
    if not (min_area <= area <= max_area):
        return None
    return (left / w, top / h, right / w, bottom / h)


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
        ref = float(np.median(lines[0]))
        n = 0
        for line in lines:
            if line.std() > max_std or abs(float(line.mean()) - ref) > max_step:
                break
            n += 1
        return n

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
    for kind, fn in (("trim", trim_box), ("content", content_box)):
        b = fn(gray)
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
    """

    def __init__(self, img: Image.Image):
        super().__init__()
        self.img = img
        self._masks: dict[float, Image.Image] = {}

    def __missing__(self, key: str) -> Image.Image:
        if "@" not in key:
            out = dihedral(self.img, key)
        else:
            orient, rest = key.split("@", 1)
            angle_s, _, fill = rest.partition("/")
            angle = float(angle_s)
            black = self[f"{orient}@{angle_s}"] if fill else self[orient].rotate(angle, resample=Image.Resampling.BILINEAR)
            if fill == "white":
                mask = self._masks.get(angle)
                if mask is None:
                    full = Image.new("L", black.size, 255)
                    mask = self._masks[angle] = full.rotate(angle, resample=Image.Resampling.BILINEAR)
                out = Image.composite(black, Image.new(black.mode, black.size, 255 if black.mode == "L" else (255,) * 3),
                                      mask)
            else:
                out = black
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
    w, h = img.size
    for dn in ("id", "mirror"):
        for angle in ROTATIONS:
            key = f"{dn}@{angle:+g}"
            variants.append(Variant(f"{dn}/rot{angle:+g}", key, _inner_rect(w, h, angle)))
            variants.append(Variant(f"{dn}/rot{angle:+g}-black", key, (0.0, 0.0, float(w), float(h))))
            variants.append(Variant(f"{dn}/rot{angle:+g}-white", f"{key}/white", (0.0, 0.0, float(w), float(h))))
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
