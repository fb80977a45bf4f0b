"""The FAISS binary index: integer ids and their codes, nothing else.

Metadata lives in the catalog; this file only answers "which ids lie within Hamming
distance t of this code". FAISS's range search radius is strict (``d < radius``), so a
threshold ``t`` (inclusive, what users think in) is searched with radius ``t + 1``.
Saving is atomic: write a temporary file in the same directory, fsync, rename.

Two layouts, chosen by size (:func:`choose_layout`), both measured by
``benchmarks/bench_search_scale.py`` (figures in README, "Search at scale"):

* ``flat``: ``IndexBinaryIDMap`` over ``IndexBinaryFlat``, an exact scan. Fastest while
  small; a single query costs ~0.5 ns per entry (0.5 ms at 1M, 51 ms at 100M).
* ``ivf``: ``IndexBinaryIVF``; the codes are split into ``nlist`` lists around centroids
  (a seeded sample of the codes: k-means buys nothing on evenly spread 64-bit codes and
  costs minutes at 100M) and a query scans the ``nprobe`` lists nearest to it. Not exact:
  ``nprobe`` (:func:`ivf_nprobe`) is set so that recall at the engine's default threshold (10 bits)
  is >= 0.99 in the benchmarks, with a smaller probe factor for large indexes (measured at 10M). A search with a larger threshold than that scans every list, which
  is exact again (and as slow as flat), so results are always either exact or measured.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from pathlib import Path

# OpenMP threads that wait for work sleep instead of spinning: on a busy machine spinning threads made
# an IVF build 8x slower with 2 threads than with 1 (bench_search_scale.py). Read when FAISS loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from matcher.atomic import fsync_dir  # noqa: E402
from matcher.errors import CatalogError, DamagedIndex, InvalidHash  # noqa: E402
from matcher.testpoints import pause  # noqa: E402

__all__ = ["BinaryIndex", "choose_layout", "FLAT_MAX_ENTRIES", "MEASURED_THRESHOLD", "read_trailer", "checksum_problem",
           "one_search_thread"]

# A trailer appended after FAISS's own bytes (FAISS ignores trailing data): JSON, its length, a magic.
_TRAILER_MAGIC = b"MTCHTRL1"

#: Up to this many entries the index is an exact flat scan; above it, IVF: the crossover measured by
#: benchmarks/bench_search_scale.py (p50 per query, flat vs IVF: 100K 0.068 vs 0.076 ms, 150K 0.092 vs
#: 0.079 ms, 300K 0.18 vs 0.12 ms, 1M 0.53 vs 0.26 ms).
FLAT_MAX_ENTRIES = 125_000
#: The largest threshold (bits, inclusive) at which IVF's recall was measured (>= 0.99); this is the
#: engine's default threshold (matcher.engine.api.DEFAULT_THRESHOLD; tests check they agree). Larger
#: thresholds scan every list (exact).
MEASURED_THRESHOLD = 10
#: IVF lists: the power of two at or above 2 sqrt(n) (1M -> 2,048; 10M -> 8,192; 100M -> 16,384),
#: at most this many: adding costs ~1 ns per entry per list (the nearest centroid is found by a
#: scan), so 16,384 lists make a 100M build take ~25 min on one core. More lists scan a smaller
#: share for the same recall (1M: 1,024 lists 0.33 ms, 2,048 lists faster at recall 0.997).
IVF_MAX_LISTS = 16_384
#: Lists probed per query = this x sqrt(nlist) up to :data:`IVF_PROBE_SMALL_LISTS` lists (indexes up to ~1M
#: entries): recall >= 0.99 at 10 bits on planted near-copies (bench_search_scale.py; 1,024 lists -> 224
#: probed, 2,048 -> 317). Where FAISS is a small part of a photo check, the margin costs little.
IVF_PROBE_FACTOR = 7.0
#: Lists probed per query = this x sqrt(nlist) above :data:`IVF_PROBE_SMALL_LISTS` (8,192 lists -> 181
#: probed, 16,384 -> 256). FAISS's time is proportional to the lists probed and dominates a photo check
#: there (~150 codes a photo); bench_photo_check.py --nprobe-sweep at 10M entries (8,192 lists): factor 7
#: reached 213 of the 214 copy entries an exact scan reaches at 842 ms a photo, factor 2 reached 212 at
#: 283 ms (docs/scale.md, "the probe count"). The recall of planted copies and the false matches at 10M
#: were measured with both (bench_photo_check.py, same table).
IVF_PROBE_FACTOR_LARGE = 2.0
#: Indexes with at most this many lists probe at :data:`IVF_PROBE_FACTOR`, larger at
#: :data:`IVF_PROBE_FACTOR_LARGE`.
IVF_PROBE_SMALL_LISTS = 2048
#: An IVF index is laid out again (new lists for the new size) when it has grown this much.
IVF_REGROW = 4.0


def one_search_thread() -> None:
    """FAISS searches on the calling thread from now on (in this process).

    A search looks up ~150 codes per photo while worker processes hash the next photos on every core;
    FAISS's OpenMP threads would spin for each of these small batches: 12 ms of CPU per photo instead of
    0.5 ms on a 41-entry index (benchmarks/bench_stages.py)."""
    faiss.omp_set_num_threads(1)


def ivf_nlist(n: int) -> int:
    """IVF lists for ``n`` entries (see :data:`IVF_MAX_LISTS`)."""
    return min(1 << max(0, math.ceil(math.log2(2 * math.sqrt(max(n, 1))))), IVF_MAX_LISTS)


def choose_layout(n: int) -> tuple[str, int]:
    """(layout, nlist) for an index of ``n`` entries: ("flat", 0) or ("ivf", nlist)."""
    if n <= FLAT_MAX_ENTRIES:
        return "flat", 0
    return "ivf", ivf_nlist(n)


def ivf_nprobe(nlist: int) -> int:
    """Lists an IVF index of ``nlist`` lists probes at thresholds up to :data:`MEASURED_THRESHOLD`: 7 sqrt(nlist)
    up to 2,048 lists (~1M entries: every index the match-quality benchmarks build is below, most are flat),
    2 sqrt(nlist) above, where FAISS's time dominates the photo check (see :data:`IVF_PROBE_FACTOR_LARGE`)."""
    factor = IVF_PROBE_FACTOR if nlist <= IVF_PROBE_SMALL_LISTS else IVF_PROBE_FACTOR_LARGE
    return max(1, min(nlist, round(factor * math.sqrt(nlist))))


def _new_flat(bits: int) -> faiss.IndexBinary:
    return faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(bits))


class BinaryIndex:
    """Hamming range search over ``bits``-bit codes keyed by int64 ids (flat or IVF, see the module doc)."""

    def __init__(self, bits: int, index: faiss.IndexBinary | None = None):
        if bits <= 0 or bits % 8:
            raise InvalidHash(f"index width must be a positive multiple of 8 bits, got {bits}")
        self.bits = bits
        self.nbytes = bits // 8
        if index is None:
            index = _new_flat(bits)
        elif index.d != bits:
            raise CatalogError(f"FAISS index holds {index.d}-bit codes, expected {bits}")
        if isinstance(index, faiss.IndexBinaryIVF):
            index.nprobe = ivf_nprobe(index.nlist)
        elif not isinstance(index, faiss.IndexBinaryIDMap):
            raise CatalogError(f"unexpected FAISS index type {type(index).__name__}")
        self._index = index

    @classmethod
    def build(cls, bits: int, ids, codes, *, layout: str | None = None, nlist: int | None = None,
              seed: int = 0, chunk: int = 1 << 20) -> "BinaryIndex":
        """A new index over ``ids``/``codes``, laid out for their number unless ``layout`` (and ``nlist``) say.

        IVF centroids are a seeded sample of the codes, so a build is reproducible.
        """
        out = cls(bits)
        ids = np.ascontiguousarray(ids, dtype=np.int64).ravel()
        codes = out._codes(codes) if len(ids) else np.empty((0, out.nbytes), np.uint8)
        if len(ids) != len(codes):
            raise ValueError(f"{len(ids)} ids for {len(codes)} codes")
        layout = layout or choose_layout(len(ids))[0]
        if layout == "ivf":
            nlist = int(nlist or ivf_nlist(len(ids)))
            if len(ids) < nlist:
                raise ValueError(f"an IVF index over {len(ids)} codes cannot have {nlist} lists")
            quantizer = faiss.IndexBinaryFlat(bits)
            rng = np.random.default_rng(seed)
            quantizer.add(codes[np.sort(rng.choice(len(codes), nlist, replace=False))])
            index = faiss.IndexBinaryIVF(quantizer, bits, nlist)  # keeps a Python reference to quantizer
            index.is_trained = True
            out = cls(bits, index)
        elif layout != "flat":
            raise ValueError(f"unknown layout {layout!r}")
        for start in range(0, len(ids), chunk):
            out.add(ids[start : start + chunk], codes[start : start + chunk])
        return out

    # size and layout ------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def layout(self) -> str:
        return "ivf" if isinstance(self._index, faiss.IndexBinaryIVF) else "flat"

    @property
    def nlist(self) -> int:
        return int(self._index.nlist) if self.layout == "ivf" else 0

    def wants_relayout(self) -> bool:
        """Whether the size has moved far enough from the layout's design to rebuild (hysteresis: no flapping)."""
        n = len(self)
        want, want_nlist = choose_layout(n)
        if self.layout == "flat":
            return want == "ivf"
        if want == "flat":
            return n <= FLAT_MAX_ENTRIES / 2
        return want_nlist >= 2 * self.nlist or want_nlist * 4 <= self.nlist

    def relayout(self, *, seed: int = 0) -> "BinaryIndex":
        """The same ids and codes in the layout :func:`choose_layout` picks for their number."""
        ids, codes = self.contents()
        out = BinaryIndex.build(self.bits, ids, codes, seed=seed)
        out.trailer = self.trailer
        return out

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, codes) of every entry held (copies), in storage order."""
        if self.layout == "flat":
            flat = faiss.downcast_IndexBinary(self._index.index)
            codes = faiss.vector_to_array(flat.xb).reshape(-1, self.nbytes)
            return faiss.vector_to_array(self._index.id_map).astype(np.int64), codes.copy()
        inv = self._index.invlists
        id_parts, code_parts = [], []
        for lst in range(self._index.nlist):
            size = inv.list_size(lst)
            if size:
                id_parts.append(faiss.rev_swig_ptr(inv.get_ids(lst), size).copy())
                code_parts.append(faiss.rev_swig_ptr(inv.get_codes(lst), size * self.nbytes).copy())
        if not id_parts:
            return np.empty(0, np.int64), np.empty((0, self.nbytes), np.uint8)
        return (np.concatenate(id_parts).astype(np.int64),
                np.concatenate(code_parts).reshape(-1, self.nbytes))

    def ids(self) -> np.ndarray:
        """All ids held, as int64 (a copy)."""
        if self.layout == "flat":
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        return self.contents()[0]

    # mutation -------------------------------------------------------------
    def _codes(self, codes) -> np.ndarray:
        a = np.ascontiguousarray(codes, dtype=np.uint8)
        if a.ndim == 1:
            a = a.reshape(1, -1)
        if a.ndim != 2 or a.shape[1] != self.nbytes:
            raise InvalidHash(f"codes must be (n, {self.nbytes}) uint8 for a {self.bits}-bit index, got {a.shape}")
        return a

    def add(self, ids, codes) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64).ravel()
        codes = self._codes(codes)
        if len(ids) != len(codes):
            raise ValueError(f"{len(ids)} ids for {len(codes)} codes")
        if len(ids):
            self._index.add_with_ids(codes, ids)

    def remove(self, ids) -> int:
        """Remove ``ids`` (a scan of the whole index: use for repairs and batches, not item by item)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).ravel()
        if not len(ids):
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))

    # search ---------------------------------------------------------------
    def range_search(self, codes, threshold: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query code, (ids, distances) of every entry at distance <= threshold, nearest first.

        Exact for the flat layout and, with IVF, for thresholds above :data:`MEASURED_THRESHOLD`
        (every list is scanned); IVF at or below it has the recall measured by the benchmark.
        """
        q = self._codes(codes)
        lims, dist, ids = self.range_search_arrays(q, threshold)
        out = []
        for i in range(len(q)):
            a, b = lims[i], lims[i + 1]
            d = dist[a:b].astype(np.int32)
            order = np.argsort(d, kind="stable")
            out.append((ids[a:b][order].astype(np.int64), d[order]))
        return out

    def range_search_arrays(self, codes, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`range_search` as FAISS returns it, for callers that process many queries with numpy:
        ``(lims, distances, ids)``, the hits of query ``i`` at ``lims[i]:lims[i + 1]`` (in no order)."""
        q = self._codes(codes)
        if threshold < 0:
            raise ValueError("threshold must be >= 0")
        if len(q) == 0 or len(self) == 0:
            return np.zeros(len(q) + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
        index = self._index
        if self.layout == "ivf":
            index.nprobe = ivf_nprobe(index.nlist) if threshold <= MEASURED_THRESHOLD else index.nlist
        lims, dist, ids = index.range_search(q, int(threshold) + 1)  # FAISS radius is strict
        return lims.astype(np.int64), dist.astype(np.int32), ids.astype(np.int64)

    # persistence ------------------------------------------------------------
    def save(self, path: str | os.PathLike, trailer: dict | None = None) -> None:
        """Write atomically; ``trailer`` (small JSON) is stored after the FAISS bytes, read back by :meth:`load`."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            faiss.write_index_binary(self._index, str(tmp))
            with open(tmp, "rb+") as f:
                if trailer is not None:
                    trailer = {**trailer, "crc32": file_crc32(f, tmp.stat().st_size)}
                    f.seek(0, os.SEEK_END)
                    blob = json.dumps(trailer, sort_keys=True).encode()
                    f.write(blob + struct.pack("<Q", len(blob)) + _TRAILER_MAGIC)
                f.flush()
                os.fsync(f.fileno())
            pause("faiss.before-rename")
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        fsync_dir(path.parent)

    @classmethod
    def load(cls, path: str | os.PathLike, bits: int) -> "BinaryIndex":
        """Read a saved index; its checksum (in the trailer, when it has one) is verified first: a damaged
        file raises :class:`DamagedIndex` rather than silently losing matches."""
        problem = checksum_problem(path)
        if problem:
            raise DamagedIndex(f"{path} is damaged ({problem}): `matcher repair --index {Path(path).parent}` "
                               "rebuilds it from the catalog")
        try:
            index = faiss.read_index_binary(str(path))
        except RuntimeError as e:
            raise CatalogError(f"cannot read FAISS index {path}: {str(e).splitlines()[0]}") from None
        out = cls(bits, index)
        trailer = read_trailer(path)
        # the checksum belongs to the file, not to the index in memory (a relayout or an add changes it)
        out.trailer = None if trailer is None else {k: v for k, v in trailer.items() if k != "crc32"}
        return out

    trailer: dict | None = None


def file_crc32(f, length: int) -> int:
    """CRC-32 of the first ``length`` bytes of the open binary file ``f`` (read in 4 MB blocks)."""
    f.seek(0)
    crc = 0
    while length > 0:
        block = f.read(min(length, 1 << 22))
        if not block:
            break
        crc = zlib.crc32(block, crc)
        length -= len(block)
    return crc


def checksum_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a saved index's checksum, or None: it matches, or the file has none (saved by an
    older matcher: nothing to verify). The CRC covers the FAISS bytes, before the trailer."""
    trailer = read_trailer(path)
    if trailer is None or "crc32" not in trailer:
        return None
    blob = json.dumps(trailer, sort_keys=True).encode()
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            got = file_crc32(f, size - 16 - len(blob))
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    if got != trailer["crc32"]:
        return f"checksum mismatch: CRC-32 {got:08x}, saved as {int(trailer['crc32']):08x}"
    return None


def read_trailer(path: str | os.PathLike) -> dict | None:
    """The JSON trailer written by :meth:`BinaryIndex.save`, or None if absent or unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < 16:
                return None
            f.seek(size - 16)
            tail = f.read(16)
            if tail[8:] != _TRAILER_MAGIC:
                return None
            (n,) = struct.unpack("<Q", tail[:8])
            if n > min(size - 16, 1 << 20):
                return None
            f.seek(size - 16 - n)
            data = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
