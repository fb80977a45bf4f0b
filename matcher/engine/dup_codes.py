"""The codes of edited versions of a stored thumbnail (mirrored, cropped, ...), computed in closed form by
linear operators on the 32x32 grey thumbnail, so duplicates are found without re-reading dataset files."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from matcher.hashing.hashers.base import MIN_DETAIL
from matcher.hashing.hashers.phash import dct_matrix
from matcher.imaging.regions import query_boxes
from matcher.hashing.verify import THUMB


#: Edits of an entry's thumbnail searched besides its stored code: orientation / crop (``query_boxes``).
#: The whole thumbnail first (its code is the stored one), then the crops re-hosts commonly make and the
#: mirror image: 9 codes per entry. Mirrored *and* cropped, rotated copies are not searched (each
#: further edit costs one more range search per entry; see docs/duplicates.md).
VARIANTS: tuple[str, ...] = tuple(f"id/{name}" for name in query_boxes()) + ("mirror/full",)


# --- codes of edited thumbnails ---------------------------------------------------------
def _area_matrix(lo: float, hi: float, n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights resampling pixels [lo, hi) of a line of n_in pixels to n_out by area averaging."""
    step = (hi - lo) / n_out
    edges = lo + step * np.arange(n_out + 1)
    px = np.arange(n_in)
    overlap = np.minimum(edges[1:, None], px[None, :] + 1) - np.maximum(edges[:-1, None], px[None, :])
    return np.clip(overlap, 0.0, None) / step


@lru_cache(maxsize=4)
def _variant_operators(size: int, hash_size: int) -> tuple[np.ndarray, list[tuple[list[int], np.ndarray]]]:
    """The pHash DCT of each :data:`VARIANTS` edit of a THUMB x THUMB thumbnail as two matrix products,
    ``low_v = Y_k @ thumb @ X_v`` (crop + area resampling to ``size`` px + the DCT's low ``hash_size``
    frequencies, along columns then rows). Crops share row operators: returns ``Y`` (the distinct row
    operators stacked, (k * hash_size, THUMB)) and per row operator ``k`` the variants using it with
    their ``X_v`` side by side, (THUMB, hash_size * len(variants))."""
    d = dct_matrix(hash_size, size)
    ys: dict[tuple[float, float], int] = {}
    y_ops: list[np.ndarray] = []
    groups: dict[int, list[tuple[int, np.ndarray]]] = {}
    boxes = query_boxes()
    for v, name in enumerate(VARIANTS):
        orient, crop = name.split("/")
        left, top, right, bottom = boxes[crop]
        if (top, bottom) not in ys:
            ys[(top, bottom)] = len(y_ops)
            y_ops.append(d @ _area_matrix(top * THUMB, bottom * THUMB, THUMB, size))
        rx = _area_matrix(left * THUMB, right * THUMB, THUMB, size)
        if orient == "mirror":  # the crop is of the mirrored thumbnail: columns read right to left
            rx = rx[:, ::-1]
        groups.setdefault(ys[(top, bottom)], []).append((v, (d @ rx).T))
    return (np.concatenate(y_ops).astype(np.float32),
            [([v for v, _ in g], np.concatenate([x for _, x in g], axis=1).astype(np.float32))
             for _, g in sorted(groups.items())])


def variant_codes(thumbs: Sequence[bytes], size: int = 32, hash_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """pHash codes of every :data:`VARIANTS` edit of each thumbnail, shape (n, len(VARIANTS), bytes), and
    whether each edit has enough detail to be searched (a crop of a flat margin has none).

    The pHash of an edit as :mod:`matcher.hashing.hashers.phash` computes it (area resampling to ``size`` px, the
    low DCT frequencies, bits above their median), all edits of a batch in a few matrix products
    (~4x cheaper than resampling each crop with OpenCV and hashing it; the codes differ from those by
    ~1 bit on average: float32 sums, fractional crop edges).
    """
    n = len(thumbs)
    nv = len(VARIANTS)
    nbytes = hash_size * hash_size // 8
    if n == 0:
        return np.empty((0, nv, nbytes), np.uint8), np.empty((0, nv), bool)
    a = np.stack([_decode(t) for t in thumbs]).astype(np.float32)  # (n, THUMB, THUMB)
    y_ops, groups = _variant_operators(size, hash_size)
    h = hash_size
    rows = np.matmul(y_ops, a)  # (n, k * h, THUMB): every distinct row operator
    low = np.empty((n, nv, h, h), np.float32)
    for k, (vs, x_ops) in enumerate(groups):
        out = np.matmul(rows[:, k * h : (k + 1) * h, :], x_ops)  # (n, h, h * len(vs))
        low[:, vs] = out.reshape(n, h, len(vs), h).transpose(0, 2, 1, 3)
    low = low.reshape(n, nv, h * h)
    m = h * h
    part = np.partition(low, (m // 2 - 1, m // 2), axis=-1)
    med = (part[..., m // 2 - 1 : m // 2] + part[..., m // 2 : m // 2 + 1]) / 2
    codes = np.packbits(low > med, axis=-1)
    # detail: the grey-level spread of each variant's crop of the thumbnail
    crops = query_boxes()
    boxes = np.array([[round(x * THUMB) for x in crops[name.split("/")[1]]] for name in VARIANTS])
    px = np.arange(THUMB)
    in_y = ((px >= boxes[:, 1:2]) & (px < boxes[:, 3:4])).astype(np.float32)  # (boxes, THUMB)
    in_x = ((px >= boxes[:, 0:1]) & (px < boxes[:, 2:3])).astype(np.float32)
    area = in_y.sum(1) * in_x.sum(1)
    sums = [np.einsum("nbc,bc->nb", np.matmul(in_y, x), in_x) for x in (a, a * a)]
    mean = sums[0] / area
    spread = np.sqrt(np.maximum(sums[1] / area - mean * mean, 0.0))
    keep = spread >= MIN_DETAIL
    return codes, keep


def _decode(data: bytes) -> np.ndarray:
    """A stored thumbnail's grey pixels (OpenCV's PNG decoder: ~2x cheaper than Pillow's for 64x64)."""
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if a is None or a.shape != (THUMB, THUMB):
        from matcher.hashing.verify import decode_thumb

        a = decode_thumb(data)
    return a
