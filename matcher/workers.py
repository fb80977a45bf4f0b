"""Work that runs in worker processes: decode + hash, one batch per task.

Each task returns one outcome per input, in order, never raising for a bad image:
``("ok", code bytes, width, height, format)`` or ``("err", reason, kind)``.
The hasher is rebuilt once per worker process from its identity and decode options.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

from .errors import ImageTooLarge, MatcherError
from .hashers import get_hasher
from .images import Limits

__all__ = ["HashSpec", "hash_batch", "Outcome"]

Outcome = tuple  # ("ok", bytes, w, h, fmt) | ("err", reason, kind)


class HashSpec:
    """Picklable description of how to hash: hasher name + parameters + decode options + limits."""

    def __init__(self, name: str, params: dict[str, Any], options: dict[str, Any], limits: Limits):
        self.name = name
        self.params = params
        self.options = options
        self.limits = limits

    @classmethod
    def of(cls, hasher, limits: Limits) -> "HashSpec":
        options = {"draft": getattr(hasher, "draft", None)} if hasattr(hasher, "draft") else {}
        return cls(hasher.name, hasher.params(), options, limits)

    def build(self):
        return get_hasher(self.name, **self.params, **self.options)


_cache: dict[str, Any] = {}


def _hasher_for(spec: HashSpec):
    key = repr((spec.name, sorted(spec.params.items()), sorted(spec.options.items())))
    h = _cache.get(key)
    if h is None:
        h = _cache[key] = spec.build()
    return h


def hash_one(hasher, src: Union[str, bytes], limits: Limits) -> Outcome:
    try:
        r = hasher.hash_file(src, limits)
    except ImageTooLarge as e:
        return ("err", e.reason, "too_large")
    except MatcherError as e:
        return ("err", e.reason, "unreadable")
    return ("ok", r.hash.data, r.width, r.height, r.format)


def hash_batch(spec: HashSpec, sources: Sequence[Union[str, bytes]]) -> list[Outcome]:
    """Hash each path or body. Used by the process pool (and in-process when workers=0)."""
    hasher = _hasher_for(spec)
    return [hash_one(hasher, s, spec.limits) for s in sources]

