"""The Hasher protocol every algorithm implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from PIL import Image

from matcher.hashing.hashes import Hash
from matcher.imaging.images import DEFAULT_LIMITS, Limits, LoadedImage

__all__ = ["Hasher", "HashedFile", "MIN_DETAIL"]

#: Grey-level standard deviation below which an image is too uniform to match (benchmarks/bench_threshold.py:
#: blank and transparent wallpapers at std 0-0.9 moved 20-36 bits under mild edits; real photos sit above 3).
MIN_DETAIL = 2.0


class HashedFile:
    """A file's hash, the upright size of the original image, and how much detail the hash saw.

    ``detail`` is the standard deviation (in 8-bit grey levels) of the pixels the hash was
    computed from. Below :data:`MIN_DETAIL` an image is nearly uniform (blank, a placeholder,
    a transparent PNG) and its hash bits are decided by noise: such images are not matched.
    """

    __slots__ = ("hash", "width", "height", "format", "detail")

    def __init__(self, hash: Hash, width: int, height: int, format: str | None, detail: float = float("inf")):
        self.hash = hash
        self.width = width
        self.height = height
        self.format = format
        self.detail = detail

    @property
    def informative(self) -> bool:
        return self.detail >= MIN_DETAIL

    def __repr__(self) -> str:
        return f"HashedFile({self.hash!r}, {self.width}x{self.height}, {self.format})"


@runtime_checkable
class Hasher(Protocol):
    """A perceptual hash algorithm.

    ``name``, ``bits``, ``version`` and :meth:`params` identify the hash values it
    produces; an index built with one hasher refuses queries from another.
    """

    name: str
    bits: int
    version: int

    def params(self) -> dict[str, Any]: ...

    def identity(self) -> dict[str, Any]: ...

    def hash_image(self, image: Image.Image) -> Hash:
        """Hash an already normalised (upright, 8-bit) image."""
        ...

    def hash_loaded(self, loaded: LoadedImage) -> HashedFile: ...

    def load(self, src, limits: Limits = DEFAULT_LIMITS) -> LoadedImage:
        """Decode ``src`` (path or bytes) the way this hasher wants it."""
        ...

    def hash_file(self, src, limits: Limits = DEFAULT_LIMITS) -> HashedFile:
        """Decode ``src`` (path or bytes) and hash it; raises UnreadableImage."""
        ...
