"""Does a dataset image match a registry entry? Candidates by the 64-bit codes, confirmed by the 256-bit code\nof the aligned region; the screen that workers run during `add --registry` and `filter`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
import cv2
import numpy as np
from matcher.errors import RegistryError
from matcher.hashing.hashers.phash import dct_matrix
from matcher.imaging.images import DEFAULT_LIMITS, Limits
from matcher.optout.photos import confirm_code
from matcher.optout.registry import CONFIRM_HASH_SIZE, CONFIRM_SIDE, GIVE_UP, Registry, SEARCH_SIDE, _hasher


# --- the curator's side: screening a dataset image -----------------------------------------------
_D = dct_matrix(CONFIRM_HASH_SIZE, CONFIRM_SIDE).astype(np.float32)


def _soft(px: np.ndarray, sign: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """How far the region's DCT signs are from ``sign`` (+1/-1): weighted by the coefficients' size (0 = all
    agree; what the search minimises), and as a plain count of disagreeing bits."""
    c = (_D @ px @ _D.T).ravel()
    v = c - np.median(c)
    return float(np.maximum(0.0, -sign * v).sum() / (np.abs(v).sum() + 1e-6)), int(((v > 0) != ref).sum())


def confirm_distance(region: np.ndarray, ref: np.ndarray, *, give_up: int | None = GIVE_UP) -> int:
    """The smallest 256-bit distance between ``ref`` (unpacked bits) and the confirmation code of ``region``
    (greyscale pixels of a dataset entry) or of a slightly moved copy of its box.

    The box's four edges move in or out (first by 5% of its size, halving down to 0.3%; up to 15%
    beyond the region, edge pixels repeated) while a soft version of the distance (sign disagreements
    weighted by the coefficients' magnitudes) improves, on a copy of the region about SEARCH_SIDE px
    across; the distance is then computed exactly (:func:`confirm_code`, as on the person's side) at the
    box found and at the region as given, and the smaller one returned.

    A search still more than ``give_up`` bits away after its first, coarsest round is abandoned and
    returns that (approximate, > ``give_up``) distance: no copy in the benchmark was ever further than
    82 bits at that point, and most different photos are (see :data:`GIVE_UP`).
    """
    h, w = region.shape
    d0 = int((np.unpackbits(confirm_code(region, (0.0, 0.0, float(w), float(h)))).astype(bool) != ref).sum())
    f = min(1.0, SEARCH_SIDE / max(h, w))
    g = region if f == 1.0 else cv2.resize(region, (max(1, round(w * f)), max(1, round(h * f))),
                                           interpolation=cv2.INTER_AREA)
    gh, gw = g.shape
    pad = max(2, round(0.15 * max(gh, gw)))
    gp = np.pad(g, pad, mode="edge").astype(np.float32)
    H, W = gp.shape
    sign = np.where(ref, 1.0, -1.0).astype(np.float32)
    n = float(CONFIRM_SIDE)

    def soft(b) -> tuple[float, int]:
        l, t, r, bt = b
        sx, sy = (r - l) / n, (bt - t) / n
        m = np.array([[sx, 0.0, l + 0.5 * sx - 0.5], [0.0, sy, t + 0.5 * sy - 0.5]], np.float32)
        px = cv2.warpAffine(gp, m, (CONFIRM_SIDE, CONFIRM_SIDE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
        return _soft(px, sign, ref)

    start = (float(pad), float(pad), float(pad + gw), float(pad + gh))
    cur = start
    best, hard = soft(start)
    step = 0.05
    while step >= 0.003:
        improved = False
        for edge in range(4):
            unit = gw if edge in (0, 2) else gh
            for s in (-1, 1):
                nb = list(cur)
                nb[edge] += s * step * unit
                nb = [max(0.0, nb[0]), max(0.0, nb[1]), min(float(W), nb[2]), min(float(H), nb[3])]
                if nb[2] - nb[0] < 8 or nb[3] - nb[1] < 8:
                    continue
                v, d = soft(tuple(nb))
                if v < best - 1e-6:
                    best, hard, cur, improved = v, d, tuple(nb), True
        if not improved:
            if step == 0.05 and give_up is not None and hard > give_up:
                return min(d0, hard)  # hopeless: a different picture
            step /= 2
    if cur == start:
        return d0
    # the box found, in the region's own pixels (the region padded the same way, edge pixels repeated)
    p = max(2, round(pad / f))
    box = tuple(p + (v - pad) / f for v in cur)
    d1 = int((np.unpackbits(confirm_code(np.pad(region, p, mode="edge"), box)).astype(bool) != ref).sum())
    return min(d0, d1)


@dataclass
class Hit:
    """A dataset image that matched a registry entry (or, with ``report_all``, its best unconfirmed try)."""

    entry_id: str
    variant: str  # the registry code's kind (the query variant)
    kind: str  # the dataset entry's kind: full, trim, content...
    distance: int  # 64-bit
    confirm_distance: int | None  # 256-bit, after alignment (None: the region could not be read)
    confirmed: bool
    # with report_all: every try, confirmed or not: [(distance, variant, dataset entry kind, confirm distance)]
    tries: list | None = None

    def reason(self) -> str:
        return (f"opted out (registry entry {self.entry_id}: variant {self.variant} ~ {self.kind}, "
                f"distance {self.distance}, confirmation {self.confirm_distance})")


def _confirm_tries(tries: Sequence[tuple[int, str, np.ndarray, str]], region: Callable[[str], np.ndarray | str],
                   confirm_threshold: int, entry_id: str, pixels: dict, exhaustive: bool = False) -> Hit:
    """Confirm one candidate: ``tries`` = ``[(distance, variant, confirm bits, dataset entry kind)]``, best
    first; stops at the first confirmed (unless ``exhaustive``: every try, listed in ``Hit.tries``).
    Returns that hit, or the best unconfirmed one. ``pixels`` caches ``region(kind)`` across candidates
    of the same dataset image."""
    best: Hit | None = None
    done = []
    for d, variant, ref, kind in tries:
        if kind not in pixels:
            pixels[kind] = region(kind)
        px = pixels[kind]
        if isinstance(px, str):
            hit = Hit(entry_id, variant, kind, d, None, False)
        else:
            c = confirm_distance(px, ref)
            hit = Hit(entry_id, variant, kind, d, c, c <= confirm_threshold)
        done.append((d, variant, kind, hit.confirm_distance))
        if best is None or (hit.confirm_distance is not None
                            and (best.confirm_distance is None or hit.confirm_distance < best.confirm_distance)):
            best = hit
        if hit.confirmed and not exhaustive:
            return hit
    if exhaustive:
        best.tries = done
        best = Hit(**{**best.__dict__, "confirmed": any(t[3] is not None and t[3] <= confirm_threshold for t in done)})
    return best


def screen_entries(registry: Registry, entries: Sequence[tuple[str, bytes]],
                   region: Callable[[str], np.ndarray | str], *, report_all: bool = False) -> list[Hit]:
    """Registry entries matched by a dataset image whose entries are ``[(kind, 64-bit code), ...]``.

    ``region(kind)`` gives the dataset entry's greyscale pixels (or a reason it cannot). Each registry
    entry with a code within ``registry.threshold`` of a dataset entry is a candidate; its tries are
    confirmed nearest first until one comes within ``registry.confirm_threshold``. Stops at the first
    registry entry confirmed (enough to drop the image), unless ``report_all``, which returns every
    candidate, confirmed or not, each with all its tries confirmed (``Hit.tries``), for benchmarks.
    """
    comp = registry.compiled()
    cands = comp.candidates(entries, registry.threshold)
    pixels: dict[str, np.ndarray | str] = {}
    out: list[Hit] = []
    for owner, tries in sorted(cands.items(), key=lambda kv: (kv[1][0][0], kv[0])):
        hit = _confirm_tries([(d, comp.kinds[code], comp.confirms[code], kind) for d, code, kind in tries], region,
                             registry.confirm_threshold, registry.entries[owner].id, pixels, exhaustive=report_all)
        if hit.confirmed or report_all:
            out.append(hit)
        if hit.confirmed and not report_all:
            break
    return out


class Screen:
    """What a worker process needs to screen dataset images against a registry (picklable).

    A registry saved to a file travels as its path and digest (each worker reads it once); one that
    lives only in memory travels whole.
    """

    def __init__(self, registry: Registry, limits: Limits = DEFAULT_LIMITS):
        self.path = str(Path(registry.path).resolve()) if registry.path is not None else None
        self.digest = registry.digest()
        self.limits = limits
        self._registry: Registry | None = registry
        self.hasher = registry.hasher

    @property
    def index_batch(self):
        """The worker task that hashes dataset images and screens them (:func:`screened_index_batch`)."""
        return screened_index_batch

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.path is not None:
            state["_registry"] = None
        return state

    def registry(self) -> Registry:
        if self._registry is None:
            cached = _screens.get((self.path, self.digest))
            if cached is None:
                cached = Registry.load(self.path)
                if cached.digest() != self.digest:
                    raise RegistryError(f"{self.path} changed while it was being used; run again")
                _screens.clear()
                _screens[(self.path, self.digest)] = cached
            self._registry = cached
        return self._registry


_screens: dict[tuple, Registry] = {}


def _region_reader(hasher, src, limits: Limits, faces: list | None = None) -> Callable[[str], np.ndarray | str]:
    from matcher.pipeline.photo import dataset_region

    def read(kind: str) -> np.ndarray | str:
        return dataset_region(hasher, src, kind, None, limits, faces)

    return read


def _screen_outcome(screen: Screen, hasher, payload, out: tuple, report_all: bool = False) -> list[Hit]:
    """Screen one hashed dataset image: ``payload`` as :func:`matcher.pipeline.photo.index_batch` takes it (a path or
    body, or that with the manifest's face boxes), ``out`` its ``("ok", ...)`` outcome."""
    faces = None
    if isinstance(payload, tuple):  # face entries' regions come from the boxes, as index_one cut them
        from matcher.imaging.facebox import normalise

        payload, faces = payload[0], normalise(payload[1], (out[3], out[4]))
    entries = [(e[0], e[1]) for e in out[2]]
    return screen_entries(screen.registry(), entries, _region_reader(hasher, payload, screen.limits, faces),
                          report_all=report_all)


def screened_index_batch(spec, screen: Screen, payloads: Sequence) -> list[tuple]:
    """:func:`matcher.pipeline.photo.index_batch`, with every image that matches the registry turned into the
    failure ``("err", "opted out (registry entry ...)", "opted_out")`` (``matcher add --registry``)."""
    from matcher.pipeline.photo import index_batch

    hasher = _hasher()
    outs = index_batch(spec, payloads)
    result = []
    for payload, out in zip(payloads, outs):
        if out[0] == "ok":
            hits = _screen_outcome(screen, hasher, payload, out)
            if hits:
                out = ("err", hits[0].reason(), "opted_out")
        result.append(out)
    return result


def filter_batch(spec, screen: Screen, payloads: Sequence, report_all: bool = False) -> list[tuple]:
    """Screen each dataset image: ``("ok", [Hit, ...])`` (empty: keep it) or ``("err", reason, kind)``."""
    from matcher.pipeline.photo import index_batch

    hasher = _hasher()
    result = []
    for payload, out in zip(payloads, index_batch(spec, payloads)):
        if out[0] != "ok":
            result.append(out)
        else:
            result.append(("ok", _screen_outcome(screen, hasher, payload, out, report_all)))
    return result
