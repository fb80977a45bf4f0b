"""Registering a person's photos: the codes of each photo's query variants (64-bit and 256-bit), computed\non this machine; no pixels leave it."""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Sequence
import cv2
import numpy as np
from PIL import Image
from matcher.hashing.hashers.phash import phash_pixels
from matcher.imaging.images import DEFAULT_LIMITS, Limits
from matcher.optout.registry import CONFIRM_HASH_SIZE, CONFIRM_SIDE, CONFIRM_SOURCE_SIDE, RegistryCode, _hasher


# --- the person's side: code pairs of a photo ----------------------------------------------------
def confirm_code(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The 256-bit confirmation code (packed, 32 bytes) of pixel ``box`` (rounded to whole pixels) in the
    greyscale array ``img``: the region resampled to 64x64 by area averaging (OpenCV ``INTER_AREA``), its
    2-D DCT-II, the 16x16 lowest coefficients, one bit per coefficient above their median."""
    h, w = img.shape
    l, t = min(max(0, round(box[0])), w - 1), min(max(0, round(box[1])), h - 1)
    r, b = max(l + 1, min(w, round(box[2]))), max(t + 1, min(h, round(box[3])))
    px = cv2.resize(np.ascontiguousarray(img[t:b, l:r]), (CONFIRM_SIDE, CONFIRM_SIDE), interpolation=cv2.INTER_AREA)
    return np.packbits(phash_pixels(px, CONFIRM_HASH_SIZE))


def photo_codes(hasher, src: str | bytes, limits: Limits) -> tuple:
    """``("ok", [RegistryCode, ...])`` for one photo (its query variants, as ``matcher search`` cuts them),
    or ``("err", reason, kind)``."""
    from matcher.imaging.regions import query_variants
    from matcher.pipeline.photo import query_one

    out = query_one(hasher, True, src, limits)
    if out[0] != "ok":
        return out
    q = out[2]
    sources, _ = query_variants(Image.fromarray(q.image, "L"), q.faces)
    codes = []
    # orientation x crop variants from a copy of at most CONFIRM_SOURCE_SIDE px (a crop keeps >= half of each
    # side: >= 2x the 64 px the code needs; 4x cheaper than the working image); faces and rotations as they are
    arrays: dict[tuple[str, bool], tuple[np.ndarray, float, float]] = {}
    for i, v in enumerate(q.variants):
        key = (v.source, "@" not in v.source and not v.name.startswith("face"))
        if key not in arrays:
            img = sources[v.source]
            a = np.asarray(img if img.mode == "L" else img.convert("L"))
            sx = sy = 1.0
            if key[1] and max(a.shape) > CONFIRM_SOURCE_SIDE:
                f = CONFIRM_SOURCE_SIDE / max(a.shape)
                small = cv2.resize(a, (max(1, round(a.shape[1] * f)), max(1, round(a.shape[0] * f))),
                                   interpolation=cv2.INTER_AREA)
                sx, sy = small.shape[1] / a.shape[1], small.shape[0] / a.shape[0]
                a = small
            arrays[key] = (a, sx, sy)
        a, sx, sy = arrays[key]
        l, t, r, b = v.box
        codes.append(RegistryCode(v.name, q.codes[i].tobytes(), confirm_code(a, (l * sx, t * sy, r * sx, b * sy)).tobytes()))
    return ("ok", codes)


def _photo_batch(limits: Limits, files: Sequence[str]) -> list[tuple]:
    h = _hasher()
    return [photo_codes(h, f, limits) for f in files]


def register_photos(paths: Iterable[str | os.PathLike], *, workers: int | None = None,
                    limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[str, list[RegistryCode] | None, str | None]]:
    """``(file, codes, None)`` or ``(file, None, reason)`` for every photo under ``paths``, in order."""
    from matcher.ingest.run import default_workers
    from matcher.engine.api import iter_query_files
    from matcher.pipeline.pool import make_pool

    files = [str(p) for p in iter_query_files(paths)]
    workers = default_workers() if workers is None else workers
    chunks = [files[i : i + 4] for i in range(0, len(files), 4)]
    pool = make_pool(workers) if workers > 0 and len(files) > 4 else None
    try:
        results = pool.map(_photo_batch, [limits] * len(chunks), chunks) if pool else (
            _photo_batch(limits, c) for c in chunks)
        for chunk, outs in zip(chunks, results):
            for f, o in zip(chunk, outs):
                yield (f, o[1], None) if o[0] == "ok" else (f, None, o[1])
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
