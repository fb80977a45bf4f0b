"""The Hasher protocol every algorithm implements."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from PIL import Image

from ..hashes import Hash
from ..images import DEFAULT_LIMITS, Limits, LoadedImage

__all__ = ["Hasher", "HashedFile"]


class HashedFile:
    """A file's hash plus the upright size of the original image."""

    __slots__ = ("hash", "width", "height", "format")

    def __init__(self, hash: Hash, width: int, height: int, format: str | None):
        self.hash = hash
        self.width = width
        self.height = height
        self.format = format

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
