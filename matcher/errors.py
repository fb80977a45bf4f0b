"""Every exception matcher raises on purpose, in one tree.

Callers catch :class:`MatcherError` for "anything matcher refused", or a
subclass for one kind of failure. Each carries a short human ``reason``.
"""

from __future__ import annotations

__all__ = [
    "MatcherError",
    "UnreadableImage",
    "ImageTooLarge",
    "InvalidHash",
    "CatalogError",
    "DamagedIndex",
    "IndexWriteError",
    "IndexMismatch",
    "FetchError",
    "ManifestError",
    "RegistryError",
    "OutputRefused",
]


class MatcherError(Exception):
    """Base class of every error matcher raises deliberately."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnreadableImage(MatcherError):
    """A file or body that is not an image we can decode (empty, truncated, corrupt, unknown format)."""


class ImageTooLarge(UnreadableImage):
    """Refused before decoding: too many pixels (decompression bomb) or too many bytes."""


class InvalidHash(MatcherError, ValueError):
    """A hash string or value of the wrong width or alphabet, or two hashes of different widths compared."""


class CatalogError(MatcherError):
    """The index directory or its SQLite catalog is missing, corrupt or of an unknown format version."""


class DamagedIndex(CatalogError):
    """An index file fails its integrity check: ``index.faiss``'s checksum, or the catalog's SQLite
    ``quick_check`` (``matcher check`` / ``matcher repair``)."""


class IndexWriteError(CatalogError):
    """The index could not be written (full disk, read-only file system or folder). What was stored
    before is intact; the operation can be run again once the cause is gone."""


class IndexMismatch(MatcherError):
    """An index was opened or searched with a different hasher than the one it was built with."""


class FetchError(MatcherError):
    """A download failed. ``kind`` is one of: http, timeout, too_large, not_image, connection, refused, bad_url."""

    def __init__(self, reason: str, *, kind: str = "connection", status: int | None = None):
        super().__init__(reason)
        self.kind = kind
        self.status = status


class ManifestError(MatcherError):
    """A manifest file could not be read, or has no usable image URL/path column."""


class RegistryError(MatcherError):
    """An opt-out registry file is missing, unreadable, corrupt, of an unknown format version or made with
    another hasher; or a registry operation was refused (no such entry)."""


class OutputRefused(MatcherError):
    """A file the user named as an output was not written: it is a photo, one of the command's inputs, or an
    existing file matcher did not write (without --force). Nothing was written."""
