"""The FAISS binary index: integer ids and their codes, nothing else.

Metadata lives in the catalog; this file only answers "which ids lie within Hamming
distance t of this code". FAISS's range search radius is strict (``d < radius``), so a
threshold ``t`` (inclusive, what users think in) is searched with radius ``t + 1``.
Saving is atomic: write a temporary file in the same directory, fsync, rename.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import faiss
import numpy as np

from .errors import CatalogError, InvalidHash

__all__ = ["BinaryIndex"]

# A trailer appended after FAISS's own bytes (FAISS ignores trailing data): JSON, its length, a magic.
_TRAILER_MAGIC = b"MTCHTRL1"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class BinaryIndex:
    """Exact Hamming search over ``bits``-bit codes keyed by int64 ids."""

    def __init__(self, bits: int, index: faiss.IndexBinary | None = None):
        if bits <= 0 or bits % 8:
            raise InvalidHash(f"index width must be a positive multiple of 8 bits, got {bits}")
        self.bits = bits
        self.nbytes = bits // 8
        if index is None:
            index = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(bits))
        elif index.d != bits:
            raise CatalogError(f"FAISS index holds {index.d}-bit codes, expected {bits}")
        self._index = index

    # size -----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """All ids held, as int64 (a copy)."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

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
        ids = np.ascontiguousarray(ids, dtype=np.int64).ravel()
        if not len(ids):
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))

    # search ---------------------------------------------------------------
    def range_search(self, codes, threshold: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query code, (ids, distances) of every entry at distance <= threshold, nearest first."""
        q = self._codes(codes)
        if threshold < 0:
            raise ValueError("threshold must be >= 0")
        if len(q) == 0:
            return []
        if len(self) == 0:
            empty = (np.empty(0, np.int64), np.empty(0, np.int32))
            return [empty for _ in range(len(q))]
        lims, dist, ids = self._index.range_search(q, int(threshold) + 1)  # FAISS radius is strict
        out = []
        for i in range(len(q)):
            a, b = lims[i], lims[i + 1]
            d = dist[a:b].astype(np.int32)
            order = np.argsort(d, kind="stable")
            out.append((ids[a:b][order].astype(np.int64), d[order]))
        return out

    # persistence ------------------------------------------------------------
    def save(self, path: str | os.PathLike, trailer: dict | None = None) -> None:
        """Write atomically; ``trailer`` (small JSON) is stored after the FAISS bytes, read back by :meth:`load`."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            faiss.write_index_binary(self._index, str(tmp))
            with open(tmp, "rb+") as f:
                if trailer is not None:
                    f.seek(0, os.SEEK_END)
                    blob = json.dumps(trailer, sort_keys=True).encode()
                    f.write(blob + struct.pack("<Q", len(blob)) + _TRAILER_MAGIC)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: str | os.PathLike, bits: int) -> "BinaryIndex":
        try:
            index = faiss.read_index_binary(str(path))
        except RuntimeError as e:
            raise CatalogError(f"cannot read FAISS index {path}: {str(e).splitlines()[0]}") from None
        out = cls(bits, index)
        out.trailer = read_trailer(path)
        return out

    trailer: dict | None = None


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
