"""matcher: are my photos in this AI training dataset?

Dataset images are perceptually hashed into a FAISS binary index with a SQLite catalog
of where each came from; a person's photos are hashed and looked up by Hamming distance.
"""

from __future__ import annotations

__version__ = "0.1.0"

from matcher.errors import (  # noqa: E402
    CatalogError,
    FetchError,
    ImageTooLarge,
    IndexMismatch,
    InvalidHash,
    ManifestError,
    MatcherError,
    UnreadableImage,
)
from matcher.hashing.hashes import Hash  # noqa: E402

__all__ = [
    "__version__",
    "Hash",
    "MatcherError",
    "UnreadableImage",
    "ImageTooLarge",
    "InvalidHash",
    "CatalogError",
    "IndexMismatch",
    "FetchError",
    "ManifestError",
]
