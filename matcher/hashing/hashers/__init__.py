"""Hash algorithms, one module each, behind the :class:`~matcher.hashing.hashers.base.Hasher` protocol."""

from __future__ import annotations

from typing import Any

from matcher.errors import IndexMismatch
from matcher.hashing.hashers.base import HashedFile, Hasher
from matcher.hashing.hashers.phash import PHash

__all__ = ["Hasher", "HashedFile", "PHash", "DEFAULT_HASHER", "get_hasher", "hasher_from_identity"]

DEFAULT_HASHER = "phash"

_REGISTRY = {"phash": PHash}


def get_hasher(name: str = DEFAULT_HASHER, **params: Any) -> Hasher:
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise IndexMismatch(f"unknown hasher {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None
    return cls(**params)


def hasher_from_identity(identity: dict[str, Any]) -> Hasher:
    """Rebuild the hasher an index recorded; refuse versions this code cannot reproduce."""
    h = get_hasher(identity.get("name", "?"), **identity.get("params", {}))
    if h.identity() != {k: identity.get(k) for k in ("name", "bits", "version", "params")}:
        raise IndexMismatch(
            f"index was built with {identity}, this matcher produces {h.identity()}: rebuild the index"
        )
    return h
