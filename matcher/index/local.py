"""The local-feature tier of an index: ORB descriptors of every dataset image in a FAISS binary index.

An optional tier (``matcher add --local-features``), beside the 64-bit codes. Files in the index
directory, all written by this module only:

* ``local.json``: format, counts (images, descriptors) and the features kept per image. It is the
  commit record: data files may hold more bytes than it counts (an append killed midway), never
  fewer, and what lies beyond its counts is ignored and overwritten by the next append.
* ``local-desc.bin``: the 32-byte descriptors, one row each, in order (the truth for FAISS).
* ``local-xy.bin``: each descriptor's position in its image, two uint16 (x, y as 1/65535 of the
  width and height): 4 bytes.
* ``local-img.bin``: per image, two int64: the catalog entry id of the image's ``full`` entry and
  its first descriptor's row. FAISS ids are descriptor rows; rows map to images by this table, and
  images to items through the catalog (removed items' entries no longer resolve, or are tombstoned).
* ``local.faiss``: the FAISS index over the descriptors (a cache, rebuilt from ``local-desc.bin``
  when its count differs). Flat (exact) up to :data:`FLAT_MAX` descriptors, IVF above.

No pickle: fixed-width little-endian binary and JSON.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from matcher.atomic import fsync_dir  # noqa: E402
from matcher.errors import CatalogError  # noqa: E402
from matcher.hashing.local_features import DESC_BYTES, INDEX_FEATURES  # noqa: E402

__all__ = ["LocalIndex", "LocalHit", "MATCH_BITS", "MIN_VOTES", "FLAT_MAX", "META", "FILES"]

META = "local.json"
DESC, XY, IMG, FAISS = "local-desc.bin", "local-xy.bin", "local-img.bin", "local.faiss"
FILES = (META, DESC, XY, IMG, FAISS)
FORMAT = "matcher-local-features"
VERSION = 1
#: Up to this many descriptors FAISS scans them all (exact); above, IVF.
FLAT_MAX = 200_000
#: Neighbours looked up per query descriptor, and the largest Hamming distance (of 256 bits) that counts.
NEIGHBOURS = 8
MATCH_BITS = 64
#: Query keypoints that must vote for an image before it is a candidate; at most this many candidates.
MIN_VOTES = 8
MAX_CANDIDATES = 8
#: IVF: lists probed per query descriptor (recall of true keypoint matches measured by the bench).
IVF_NPROBE = 24


def _nlist(n: int) -> int:
    return int(min(8192, max(64, 1 << round(math.log2(max(1.0, math.sqrt(n)))))))


class LocalHit:
    """A dataset image many query keypoints voted for: its ``full`` entry id, and the matched pairs."""

    __slots__ = ("entry_id", "votes", "query_idx", "dataset_xy", "one_to_one")

    def __init__(self, entry_id: int, votes: int, query_idx: np.ndarray, dataset_xy: np.ndarray,
                 one_to_one: np.ndarray):
        self.entry_id = entry_id
        self.votes = votes
        self.query_idx = query_idx  # indices into the query's keypoints
        self.dataset_xy = dataset_xy  # (k, 2) float32 fractions of the dataset image
        self.one_to_one = one_to_one  # bool (k,): the pairs whose dataset keypoint is used once


class LocalIndex:
    """An open local-feature tier (see the module doc)."""

    def __init__(self, root: Path, meta: dict, writable: bool):
        self.root = root
        self.meta = meta
        self.writable = writable
        self.features = int(meta.get("features", INDEX_FEATURES))
        n_img, n_desc = int(meta["images"]), int(meta["descriptors"])
        self.images = self._read(IMG, np.int64, n_img * 2).reshape(n_img, 2)
        self.xy = self._read(XY, np.uint16, n_desc * 2).reshape(n_desc, 2)
        self.pending: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.index = self._load_faiss(n_desc)

    # opening and saving -----------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike, *, create: bool = False, writable: bool = False,
             features: int = INDEX_FEATURES) -> "LocalIndex | None":
        """The tier of the index at ``root``; ``None`` when it has none (and ``create`` is not set)."""
        root = Path(root)
        path = root / META
        if not path.exists():
            if not create:
                return None
            meta = {"format": FORMAT, "version": VERSION, "features": int(features), "images": 0, "descriptors": 0}
            _write_json(path, meta)
            for name in (DESC, XY, IMG):
                (root / name).touch()
            writable = True
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CatalogError(f"cannot read {path}: {e}") from None
        if meta.get("format") != FORMAT or int(meta.get("version", 0)) > VERSION:
            raise CatalogError(f"{path} is not a local-feature tier this matcher reads")
        return cls(root, meta, writable)

    def _read(self, name: str, dtype, count: int) -> np.ndarray:
        p = self.root / name
        have = p.stat().st_size // np.dtype(dtype).itemsize if p.exists() else 0
        if have < count:
            raise CatalogError(f"{p} holds {have} values, {META} counts {count}: the local-feature tier is damaged "
                               "(rebuild the index with --local-features)")
        return np.fromfile(p, dtype=dtype, count=count) if count else np.empty(0, dtype)

    def _desc(self, n: int) -> np.ndarray:
        if n == 0:
            return np.empty((0, DESC_BYTES), np.uint8)
        return np.memmap(self.root / DESC, dtype=np.uint8, mode="r", shape=(n, DESC_BYTES))

    def _load_faiss(self, n: int):
        p = self.root / FAISS
        if p.exists() and self.meta.get("faiss_count") == n:
            idx = faiss.read_index_binary(str(p))
            if idx.ntotal == n:
                _set_probe(idx)
                return idx
        idx = _build(self._desc(n))
        if self.writable and n:
            self._save_faiss(idx)
        return idx

    def _save_faiss(self, idx) -> None:
        p = self.root / FAISS
        tmp = p.with_name(f".{FAISS}.tmp-{os.getpid()}")
        faiss.write_index_binary(idx, str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
        fsync_dir(self.root)
        self.meta["faiss_count"] = int(idx.ntotal)
        _write_json(self.root / META, self.meta)

    def add(self, entry_id: int, xy: np.ndarray, desc: np.ndarray) -> None:
        """Queue one image's keypoints (``xy`` fractions, ``desc`` uint8 (k, 32)) under its full entry id."""
        if len(desc):
            self.pending.append((int(entry_id), np.asarray(xy, np.float32), np.asarray(desc, np.uint8)))

    def flush(self) -> int:
        """Append the queued images to the files, then commit them in ``local.json``; add them to FAISS."""
        if not self.pending:
            return 0
        if not self.writable:
            raise CatalogError("local-feature tier opened read-only")
        n_img, n_desc = len(self.images), len(self.xy)
        starts = n_desc + np.cumsum([0] + [len(d) for _, _, d in self.pending[:-1]])
        img = np.array([[e, s] for (e, _, _), s in zip(self.pending, starts.tolist())], np.int64).reshape(-1, 2)
        xy = np.concatenate([np.clip(np.round(x * 65535), 0, 65535) for _, x, _ in self.pending]).astype(np.uint16)
        desc = np.ascontiguousarray(np.concatenate([d for _, _, d in self.pending]))
        for name, arr, done in ((DESC, desc, n_desc * DESC_BYTES), (XY, xy, n_desc * 4), (IMG, img, n_img * 16)):
            with open(self.root / name, "r+b") as f:
                f.truncate(done)  # whatever an earlier killed append left beyond the commit record goes
                f.seek(done)
                f.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
                f.flush()
                os.fsync(f.fileno())
        self.meta.update(images=n_img + len(img), descriptors=n_desc + len(desc))
        _write_json(self.root / META, self.meta)
        self.images = np.concatenate([self.images, img])
        self.xy = np.concatenate([self.xy, xy])
        self.pending = []
        total = len(self.xy)
        if isinstance(self.index, faiss.IndexBinaryFlat) and total > FLAT_MAX or (
                not isinstance(self.index, faiss.IndexBinaryFlat) and total > 4 * self.meta.get("trained_on", total)):
            self.index = _build(self._desc(total))
            self.meta["trained_on"] = total
        else:
            self.index.add(desc)
        return len(img)

    def save(self) -> None:
        self.flush()
        if self.writable and self.meta.get("faiss_count") != self.index.ntotal and self.index.ntotal:
            self._save_faiss(self.index)

    # searching ---------------------------------------------------------------------------
    def search(self, desc: np.ndarray, *, dead: np.ndarray | None = None, limit: int = MAX_CANDIDATES) -> list[LocalHit]:
        """The dataset images most query keypoints (``desc``) vote for, most votes first.

        Each query descriptor votes once for every image among its :data:`NEIGHBOURS` nearest
        descriptors within :data:`MATCH_BITS`; images with :data:`MIN_VOTES` votes or more are
        returned (at most ``limit``), with the matched pairs for the geometric fit.
        ``dead``: entry ids never to return (removed items).
        """
        if self.index.ntotal == 0 or len(desc) == 0:
            return []
        k = min(NEIGHBOURS, self.index.ntotal)
        dist, rows = self.index.search(np.ascontiguousarray(desc, np.uint8), k)
        ok = (rows >= 0) & (dist <= MATCH_BITS)
        q_idx = np.repeat(np.arange(len(desc)), k).reshape(len(desc), k)[ok]
        rows, dist = rows[ok], dist[ok]
        if not len(rows):
            return []
        img = np.searchsorted(self.images[:, 1], rows, side="right") - 1
        # one pair per (image, query keypoint): its nearest descriptor in that image (one vote each)
        order = np.argsort(dist, kind="stable")
        _, first = np.unique(np.stack([img[order], q_idx[order]]), axis=1, return_index=True)
        keep = order[np.sort(first)]  # still nearest first
        img, q_idx, rows = img[keep], q_idx[keep], rows[keep]
        # the one-to-one subset: each dataset keypoint with its nearest query keypoint only (a second chance for
        # the geometric fit when many query keypoints piled onto a few dataset ones)
        one = np.zeros(len(rows), bool)
        one[np.unique(rows, return_index=True)[1]] = True
        votes = np.bincount(img, minlength=len(self.images))
        top = np.nonzero(votes >= MIN_VOTES)[0]
        if dead is not None and len(dead) and len(top):
            top = top[~np.isin(self.images[top, 0], dead)]
        top = top[np.argsort(-votes[top], kind="stable")][:limit]
        out = []
        for t in top.tolist():
            sel = img == t
            out.append(LocalHit(int(self.images[t, 0]), int(votes[t]), q_idx[sel],
                                self.xy[rows[sel]].astype(np.float32) / 65535.0, one[sel]))
        return out

    def bytes_on_disk(self) -> int:
        return sum((self.root / n).stat().st_size for n in FILES if (self.root / n).exists())


def _set_probe(idx) -> None:
    if isinstance(idx, faiss.IndexBinaryIVF):
        idx.nprobe = min(IVF_NPROBE, idx.nlist)


def _build(desc: np.ndarray):
    """A FAISS binary index over ``desc``: flat up to FLAT_MAX rows, else IVF trained on a seeded sample."""
    n = len(desc)
    if n <= FLAT_MAX:
        idx = faiss.IndexBinaryFlat(DESC_BYTES * 8)
    else:
        nlist = _nlist(n)
        idx = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(DESC_BYTES * 8), DESC_BYTES * 8, nlist)
        sample = np.sort(np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False))
        idx.train(np.ascontiguousarray(desc[sample]))
        _set_probe(idx)
    for start in range(0, n, 1_000_000):
        idx.add(np.ascontiguousarray(desc[start : start + 1_000_000]))
    return idx


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
