"""Pixel verification: align a candidate's region of the query photo to the dataset copy, then correlate.

A 64-bit hash finds candidates; it cannot tell a copy from a different shot of the same
scene (a stereo pair, a burst, two cabinets photographed alike): all of them agree on the
coarse structure. Counting matching local features has the same weakness. What differs
is the fine detail at the *same* place: so every dataset entry keeps a 64x64 greyscale
thumbnail of its region, and a candidate is accepted only when some small shift/scale of
the query region reproduces that thumbnail: aligned by normalised cross-correlation, then
scored cell by cell (:func:`cell_score`), so that a watermark spoils a few cells while a
different shot disagrees in most.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["THUMB", "thumb_array", "encode_thumb", "decode_thumb", "cell_score", "align", "DEFAULT_MIN_SCORE"]

THUMB = 64
#: Score (median local correlation after alignment) a candidate needs to be reported;
#: chosen with benchmarks/bench_recall.py (two cabinets photographed alike score 0.92).
DEFAULT_MIN_SCORE = 0.95
#: Local correlation is measured in CELLS x CELLS cells of the 64x64 thumbnails.
CELLS = 8
#: Fewest textured cells (of CELLS x CELLS) a verification needs.
MIN_CELLS = 12


def thumb_array(img: Image.Image, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """64x64 uint8 greyscale of ``img`` (or of ``box`` = pixel (l, t, r, b) inside it), aspect ignored."""
    g = img if img.mode == "L" else img.convert("L")
    return np.asarray(g.resize((THUMB, THUMB), Image.Resampling.BILINEAR, box=box, reducing_gap=2.0))


def encode_thumb(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a, "L").save(b, "PNG", optimize=False, compress_level=6)
    return b.getvalue()


def decode_thumb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def _normalise(a: np.ndarray) -> np.ndarray:
    x = a.astype(np.float32).ravel()
    x -= x.mean()
    n = float(np.linalg.norm(x))
    return x / n if n > 1e-6 else x


def cell_score(a: np.ndarray, b: np.ndarray, cells: int = CELLS, ring: int = 0,
               cells_ok: np.ndarray | None = None) -> float:
    """Median, over a grid of cells, of the local correlation of two aligned thumbnails.

    A copy agrees almost everywhere (a watermark or caption spoils a few cells); a different
    shot of the same scene (a stereo pair, a burst, twin objects) disagrees in the fine detail
    of most cells even when the picture as a whole correlates well. Cells without texture on
    either side are skipped; with fewer than :data:`MIN_CELLS` textured cells there is not
    enough evidence and the score is 0 (a near-blank picture, or one whose only structure is
    the corners a rotation filled in). ``ring`` leaves out that many rings of border cells (used
    when the query region was rotated with filled corners: the corners are not evidence);
    ``cells_ok`` (cells x cells bools, row-major) leaves out the cells it marks False (parts of the
    dataset picture a geometrically aligned query does not cover).
    """
    n = a.shape[0] // cells
    x = a[: n * cells, : n * cells].astype(np.float32).reshape(cells, n, cells, n).transpose(0, 2, 1, 3)
    y = b[: n * cells, : n * cells].astype(np.float32).reshape(cells, n, cells, n).transpose(0, 2, 1, 3)
    x = x.reshape(cells * cells, n * n)
    y = y.reshape(cells * cells, n * n)
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    sx, sy = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    ok = (x.std(axis=1) > 2) & (y.std(axis=1) > 2)
    if ring:
        idx = np.arange(cells)
        inner = (idx >= ring) & (idx < cells - ring)
        ok &= (inner[:, None] & inner[None, :]).ravel()
    if cells_ok is not None:
        ok &= np.asarray(cells_ok, bool).ravel()
    if ok.sum() < MIN_CELLS:
        return 0.0
    r = (x[ok] * y[ok]).sum(axis=1) / (sx[ok] * sy[ok])
    return float(np.median(r))


def align(src: Image.Image, box: tuple[float, float, float, float], target: np.ndarray, *,
          filled_corners: bool = False) -> tuple[float, tuple]:
    """Verification score of ``target`` against the best-aligned region near ``box`` (pixels) of ``src``.

    Returns (:func:`cell_score` at the aligned region, that region).

    A pattern search over the box's four edges: each edge moves in or out by a step (first
    ~5% of the box, halved down to ~0.3%) while the correlation improves. Crops, padding
    and stretches change edges independently, so this reaches them in ~100 evaluations.
    The region may reach up to 15% beyond the photo (edge pixels repeated): a dataset region
    that holds a strip of something else (the line of text under a photo in a screenshot)
    then still lines up everywhere else, and only that strip disagrees.
    """
    tgt = _normalise(target)
    g = src if src.mode == "L" else src.convert("L")
    # work on a copy where the region is ~128 px: as exact for a 64x64 thumbnail, ~10x cheaper
    f = 128.0 / max(box[2] - box[0], box[3] - box[1], 1.0)
    if f < 0.8:
        g = g.resize((max(1, round(g.width * f)), max(1, round(g.height * f))), Image.Resampling.BOX)
        box = tuple(v * f for v in box)
    else:
        f = 1.0
    pad = max(1, round(0.15 * max(g.size)))
    g = Image.fromarray(np.pad(np.asarray(g), pad, mode="edge"))
    box = tuple(v + pad for v in box)
    W, H = g.size

    def score(b) -> float:
        return float(np.dot(_normalise(thumb_array(g, b)), tgt))

    cur = (max(0.0, float(box[0])), max(0.0, float(box[1])), min(float(W), float(box[2])), min(float(H), float(box[3])))
    best = score(cur)
    w, h = cur[2] - cur[0], cur[3] - cur[1]
    step = 0.05
    while step >= 0.003:
        improved = False
        for edge in range(4):
            unit = w if edge in (0, 2) else h
            for sign in (-1, 1):
                nb = list(cur)
                nb[edge] += sign * step * unit
                if nb[2] - nb[0] < 8 or nb[3] - nb[1] < 8:
                    continue
                nb = [max(0.0, nb[0]), max(0.0, nb[1]), min(float(W), nb[2]), min(float(H), nb[3])]
                s = score(tuple(nb))
                if s > best + 1e-5:
                    best, cur, improved = s, tuple(nb), True
        if not improved:
            step /= 2
    return (cell_score(thumb_array(g, cur), target, ring=1 if filled_corners else 0),
            tuple((v - pad) / f for v in cur))
