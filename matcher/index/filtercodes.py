"""The candidate filter: a 256-bit code per index entry, memory-mapped beside FAISS, aligned by entry id.

The 64-bit code finds candidates; at scale most of them are chance: for random 64-bit codes, an
entry falls within 10 bits of a query code with probability 1.0e-8, so an index of 100M entries
gives ~1.0 chance hit per variant code and ~160 per photo of ~160 variants (every one a catalog
read and a pixel verification), 60x that at LAION-5B's size. Before any of that, each candidate's
*filter code* (a 256-bit pHash of the same region: 64x64 by area averaging, the 16x16 lowest DCT
coefficients, one bit per coefficient above their median; the opt-out registry's confirmation code)
is compared with the same code of the variant that found it. Two unrelated regions are ~128 bits
apart (sd 8); copies are much nearer. The threshold follows the index size (:func:`filter_threshold`):
the largest distance at which the expected number of chance candidates per photo that survive both
codes stays under :data:`CHANCE_PER_PHOTO`, never above :data:`MAX_FILTER_THRESHOLD`.

The file ``filter.codes`` holds 32 bytes per entry id (row ``id`` at byte ``32 * id``; a sparse file
where ids are missing). A row of zeros means "no code" (an entry added before this file existed, or
whose code a crash lost): such a candidate is never dropped, only not filtered. A real code is never
all zeros (half its bits are set: each is "above the median"). Rows are written with ``pwrite`` as
entries are recorded and fsynced with each FAISS save; the catalog stays the truth, and a lost row
only costs filtering, never a match.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["FilterCodes", "FILTER_FILE", "FILTER_BITS", "FILTER_BYTES", "filter_threshold", "chance_rate",
           "CHANCE_PER_PHOTO", "MAX_FILTER_THRESHOLD", "VARIANTS_PER_PHOTO"]

FILTER_FILE = "filter.codes"
FILTER_BITS = 256
FILTER_BYTES = FILTER_BITS // 8
#: Expected chance candidates per photo (both codes within their thresholds) the threshold allows.
CHANCE_PER_PHOTO = 0.01
#: The filter threshold never exceeds this (bits of 256): on the bench corpus the copies' filter
#: distance (unaligned, variant that found them) stayed below it (benchmarks/bench_photo_check.py).
MAX_FILTER_THRESHOLD = 100
#: Variant codes a photo is searched with (regions.query_variants: ~150-170).
VARIANTS_PER_PHOTO = 160


@lru_cache(maxsize=None)
def chance_rate(bits: int, radius: int) -> float:
    """P(two independent uniform ``bits``-bit codes are within ``radius`` bits, inclusive)."""
    return math.fsum(math.comb(bits, k) for k in range(0, min(radius, bits) + 1)) / 2.0 ** bits


def filter_threshold(entries: int, threshold: int = 10, *, variants: int = VARIANTS_PER_PHOTO, bits: int = 64,
                     target: float = CHANCE_PER_PHOTO) -> int:
    """The filter distance (inclusive) for an index of ``entries`` searched at ``threshold`` bits of ``bits``:
    the largest r <= MAX_FILTER_THRESHOLD with entries x variants x P64(<= threshold) x P256(<= r) <= target."""
    hits = max(entries, 1) * variants * chance_rate(bits, threshold)
    r = MAX_FILTER_THRESHOLD
    while r > 0 and hits * chance_rate(FILTER_BITS, r) > target:
        r -= 1
    return r


_POP8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def hamming_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between the rows of ``a`` and ``b`` (uint8 (n, 32) each, or one side broadcast)."""
    x = np.bitwise_xor(a, b)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).sum(axis=-1, dtype=np.int32)
    return _POP8[x].sum(axis=-1, dtype=np.int32)


class FilterCodes:
    """``filter.codes`` of an index directory (see the module doc). Readers map it; one writer appends."""

    def __init__(self, path: str | os.PathLike, *, writable: bool = False):
        self.path = Path(path)
        self.writable = writable
        self._fd: int | None = None
        if writable:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._map: np.ndarray | None = None
        self._rows = 0
        self._remap()

    @property
    def exists(self) -> bool:
        return self._rows > 0 or self.path.exists()

    def _remap(self) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        rows = size // FILTER_BYTES
        if rows == self._rows and self._map is not None:
            return
        self._rows = rows
        self._map = (np.memmap(self.path, dtype=np.uint8, mode="r", shape=(rows, FILTER_BYTES)) if rows
                     else np.zeros((0, FILTER_BYTES), np.uint8))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._map = None

    def put(self, ids, codes) -> None:
        """Write the codes of entries ``ids`` (rows of ``codes``; a None or empty code writes nothing)."""
        if self._fd is None:
            raise ValueError("filter codes opened read-only")
        ids = [int(i) for i in ids]
        runs: list[tuple[int, list[bytes]]] = []
        for i, c in zip(ids, codes):
            if c is None or len(c) != FILTER_BYTES:
                continue
            if runs and runs[-1][0] + len(runs[-1][1]) == i:
                runs[-1][1].append(bytes(c))
            else:
                runs.append((i, [bytes(c)]))
        for start, rows in runs:
            os.pwrite(self._fd, b"".join(rows), start * FILTER_BYTES)

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes (n, 32), has_code (n,)) of entries ``ids``; entries without a code get zeros and False."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and ids.max() >= self._rows:
            self._remap()
        inside = (ids >= 0) & (ids < self._rows)
        out = np.zeros((len(ids), FILTER_BYTES), np.uint8)
        if inside.any():
            order = np.argsort(ids[inside], kind="stable")  # sorted reads: pages in file order
            picked = ids[inside][order]
            rows = np.empty((len(picked), FILTER_BYTES), np.uint8)
            rows[:] = self._map[picked]
            tmp = np.empty_like(rows)
            tmp[order] = rows
            out[inside] = tmp
        return out, out.any(axis=1)

    def keep(self, ids: np.ndarray, query: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """(keep mask, distances) for candidates ``ids`` against the query filter codes ``query`` (one row of
        32 bytes for all, or one per candidate): kept when within ``radius``, or without a code (distance -1)."""
        codes, has = self.get(ids)
        d = hamming_rows(codes, np.asarray(query, np.uint8).reshape(-1, FILTER_BYTES))
        d[~has] = -1
        return (~has) | (d <= radius), d

    def size_on_disk(self) -> int:
        """Bytes the file occupies (its blocks: a sparse file counts only what was written)."""
        try:
            return self.path.stat().st_blocks * 512
        except FileNotFoundError:
            return 0
