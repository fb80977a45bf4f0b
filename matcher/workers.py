"""Work that runs in worker processes: decode + hash, one batch per task.

Each task returns one outcome per input, in order, never raising for a bad image:
``("ok", code, verify code or None, width, height, format)`` or ``("err", reason, kind)``.
Nearly uniform images (blank, placeholders) are ``("err", ..., "uniform")``: their hash bits
are noise and would match every other blank image.
The hasher is rebuilt once per worker process from its identity and decode options.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, Union

from .errors import ImageTooLarge, MatcherError
from .hashers import get_hasher
from .hashers.base import MIN_DETAIL
from .images import Limits

__all__ = ["HashSpec", "hash_batch", "Outcome", "make_pool"]


def make_pool(workers: int):
    """A process pool whose workers are started by a fork server, not forked from us.

    Forked workers would inherit the index's write lock and the downloader's threads: a
    killed ``add`` would leave its orphaned workers holding the lock. Fork-server workers
    inherit neither, and exit when their parent dies.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: leave as soon as the process that made the pool is gone (even if kill -9'ed)."""
    import threading
    import time

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(3)
            except PermissionError:  # alive, owned by someone else (cannot happen for our own parent)
                pass

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()

Outcome = tuple  # ("ok", code, verify, w, h, fmt) | ("err", reason, kind)


def _recipe(h) -> tuple | None:
    if h is None:
        return None
    options = {"draft": h.draft} if hasattr(h, "draft") else {}
    return (h.name, tuple(sorted(h.params().items())), tuple(sorted(options.items())))


class HashSpec:
    """Picklable description of how to hash: index hasher, optional verifier, decode options, limits."""

    def __init__(self, hasher: tuple, verifier: tuple | None, limits: Limits):
        self.hasher = hasher
        self.verifier = verifier
        self.limits = limits

    @classmethod
    def of(cls, hasher, verifier, limits: Limits) -> "HashSpec":
        return cls(_recipe(hasher), _recipe(verifier), limits)


_cache: dict[tuple, Any] = {}


def _build(recipe: tuple | None):
    if recipe is None:
        return None
    h = _cache.get(recipe)
    if h is None:
        name, params, options = recipe
        h = _cache[recipe] = get_hasher(name, **dict(params), **dict(options))
    return h


def hash_one(hasher, verifier, src: Union[str, bytes], limits: Limits) -> Outcome:
    """Decode once, hash with the index hasher and (on the same pixels) the verifier."""
    try:
        loaded = hasher.load(src, limits)
        r = hasher.hash_loaded(loaded)
        v = verifier.hash_image(loaded.image).data if verifier is not None else None
    except ImageTooLarge as e:
        return ("err", e.reason, "too_large")
    except MatcherError as e:
        return ("err", e.reason, "unreadable")
    if not r.informative:
        return ("err", f"nearly uniform image (grey-level spread {r.detail:.1f} < {MIN_DETAIL}): "
                "too little detail to match by content", "uniform")
    return ("ok", r.hash.data, v, r.width, r.height, r.format)


def hash_batch(spec: HashSpec, sources: Sequence[Union[str, bytes]]) -> list[Outcome]:
    """Hash each path or body. Used by the process pool (and in-process when workers=0)."""
    hasher, verifier = _build(spec.hasher), _build(spec.verifier)
    return [hash_one(hasher, verifier, s, spec.limits) for s in sources]

