"""64-bit pHash, bit-for-bit ``imagehash.phash`` on the same pixels, vectorised in numpy.

imagehash.phash: grayscale, Lanczos resize to 32x32, 2-D DCT-II (scipy.fftpack, no
normalisation), keep the top-left 8x8 coefficients, bit = coefficient > their median.
Here the DCT is two small matrix products (8x32 @ 32x32 @ 32x8), which works on a whole
batch at once and needs no scipy.

Speed: the decode dominates. ``draft`` (on by default, 32: the hash's own input size) lets
libjpeg decode JPEGs at 1/2..1/8 scale straight to luminance while keeping both sides >=
``draft`` pixels (see benchmarks/bench_hash_speed.py for the speed and the bit difference it costs).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from matcher.hashing.hashes import Hash
from matcher.imaging.images import DEFAULT_LIMITS, Limits, LoadedImage, load_image
from matcher.hashing.hashers.base import HashedFile

__all__ = ["PHash", "phash_pixels", "dct_matrix"]


@lru_cache(maxsize=8)
def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Rows k < n_out of the unnormalised DCT-II matrix of size n_in (scipy.fftpack convention)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


def phash_pixels(pixels: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """Boolean pHash bits, shape (..., hash_size*hash_size), of uint8 arrays shaped (..., N, N)."""
    x = np.asarray(pixels, dtype=np.float64)
    d = dct_matrix(hash_size, x.shape[-1])
    low = d @ x @ d.T  # (..., hash_size, hash_size)
    n = hash_size * hash_size
    flat = low.reshape(*low.shape[:-2], n)
    # the median as np.median computes it, from a partial sort (4x cheaper on one image)
    if n % 2:
        med = np.partition(flat, n // 2, axis=-1)[..., n // 2 : n // 2 + 1]
    else:
        part = np.partition(flat, (n // 2 - 1, n // 2), axis=-1)
        med = (part[..., n // 2 - 1 : n // 2] + part[..., n // 2 : n // 2 + 1]) / 2
    return flat > med


class PHash:
    """The default hasher: 64-bit DCT perceptual hash (imagehash.phash compatible)."""

    name = "phash"
    version = 1

    def __init__(self, hash_size: int = 8, highfreq_factor: int = 4, draft: int | None = 32):
        self.hash_size = hash_size
        self.highfreq_factor = highfreq_factor
        self.img_size = hash_size * highfreq_factor
        self.bits = hash_size * hash_size
        self.draft = draft

    # identity -------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Parameters that change hash values. ``draft`` is a decode option, recorded elsewhere."""
        return {"hash_size": self.hash_size, "highfreq_factor": self.highfreq_factor}

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.bits, "version": self.version, "params": self.params()}

    def __repr__(self) -> str:
        return f"PHash(hash_size={self.hash_size}, highfreq_factor={self.highfreq_factor}, draft={self.draft})"

    # hashing --------------------------------------------------------------
    def pixels(self, image: Image.Image) -> np.ndarray:
        """The img_size x img_size grayscale array imagehash.phash would compute from."""
        gray = image if image.mode == "L" else image.convert("L")
        small = gray.resize((self.img_size, self.img_size), Image.Resampling.LANCZOS)
        return np.asarray(small)

    def hash_image(self, image: Image.Image) -> Hash:
        return Hash.from_bits(phash_pixels(self.pixels(image), self.hash_size))

    def hash_pixels_batch(self, batch: np.ndarray) -> list[Hash]:
        bits = phash_pixels(batch, self.hash_size)
        packed = np.packbits(bits, axis=-1)
        return [Hash(row.tobytes(), self.bits) for row in packed]

    def hash_loaded(self, loaded: LoadedImage) -> HashedFile:
        px = self.pixels(loaded.image)
        h = Hash.from_bits(phash_pixels(px, self.hash_size))
        return HashedFile(h, loaded.width, loaded.height, loaded.format, float(px.std()))

    def load(self, src, limits: Limits = DEFAULT_LIMITS) -> LoadedImage:
        """Decode ``src`` as this hasher needs it (JPEG draft decoding when enabled)."""
        draft = ("L", self.draft) if self.draft else None
        return load_image(src, limits=limits, draft=draft)

    def hash_file(self, src, limits: Limits = DEFAULT_LIMITS) -> HashedFile:
        return self.hash_loaded(self.load(src, limits))
