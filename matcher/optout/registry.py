"""An opt-out registry by hash: a person's photos are honoured by content, re-hosted copies included.

Today's do-not-train registries key on URLs, so a photo re-hosted under another URL (resized,
recompressed, mirrored, cropped, captioned, inside a screenshot) is not covered. Here a person
registers *hashes* of their photos, computed on their own machine; the photos never leave it.
A curator then screens every dataset image against the registry (``matcher filter``, ``matcher
add --registry``, ``matcher remove --registry``) and drops what matches.

**What an entry holds.** For each registered photo, one *code pair* per query variant of
:func:`matcher.imaging.regions.query_variants` (the ~150-170 variants ``matcher search`` hashes: 8
orientations x the crops re-hosts keep, small rotations, crops around each face):

* ``hash``: the variant's 64-bit pHash, exactly as ``matcher search`` computes it. It finds
  *candidates*: a dataset entry (the whole image, or the photo inside padding, a caption bar or a
  screenshot, as :func:`matcher.pipeline.photo.index_one` cuts it) within :data:`DEFAULT_THRESHOLD` bits;
* ``confirm``: a 256-bit pHash of the same region (:func:`confirm_code`: 64x64 by area averaging,
  16x16 low DCT coefficients, one bit per coefficient above their median). It
  *confirms* a candidate: the curator, who has the dataset image, moves the edges of the dataset
  entry's region a little (a pattern search, as :func:`matcher.hashing.verify.align` does on the query side)
  and computes the same 256-bit hash there; the candidate is a match when it comes within
  :data:`DEFAULT_CONFIRM_THRESHOLD` bits.

No pixels are stored: no thumbnail, no grey level, only the signs of low-frequency DCT coefficients
(PDQ, which platforms exchange openly, carries the same kind of 256 bits). ``matcher search``
verifies a candidate against the dataset's 64x64 thumbnail; without the person's pixels the
registry cannot, so the 256-bit code is what tells a copy from a photo that only looks alike.
``benchmarks/bench_optout.py`` measures both sides (recall per copy family, false drops among
10,500 real distractors and same-scene pairs); see docs/optout.md.

**The file** (JSON, UTF-8; ``.gz`` names are gzip-compressed), format version 1::

    {"format": "matcher-optout-registry", "version": 1,
     "hasher": {"name": "phash", "bits": 64, "version": 1, "params": {...}},   # as in an index's meta.json
     "confirm": {"name": "phash", "bits": 256, "version": 1, "params": {"hash_size": 16, "highfreq_factor": 4}},
     "variants": {"recipe_version": 1},       # matcher.engine.recipe: how the query variants are cut
     "threshold": 10, "confirm_threshold": 32,
     "created_at": "...", "updated_at": "...",
     "entries": [{"id": "o-3f2a...", "added_at": "...", "note": "contact: ...", "source_name": "IMG_0002.jpg",
                  "codes": [{"kind": "id/full", "hash": "aca29c1c33dc23d7", "confirm": "<64 hex>"}, ...]}]}

Writes are atomic (temporary file, fsync, rename) under a lock file (``FILE.lock``); a file that
does not validate raises :class:`~matcher.errors.RegistryError` and is never overwritten.
"""

from __future__ import annotations

import csv
import fcntl
import gzip
import hashlib
import io
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
from PIL import Image

from matcher.atomic import write_bytes
from matcher.hashing.detail import DEFAULT_MAX_MOTION
from matcher.errors import ManifestError, MatcherError, RegistryError
from matcher.hashing.hashers import DEFAULT_HASHER, get_hasher
from matcher.hashing.hashers.phash import dct_matrix, phash_pixels
from matcher.imaging.images import DEFAULT_LIMITS, Limits
from matcher.engine.recipe import RECIPE_VERSION
from matcher.hashing.verify import DEFAULT_MIN_SCORE

__all__ = [
    "FORMAT", "FORMAT_VERSION", "CONFIRM", "DEFAULT_THRESHOLD", "DEFAULT_CONFIRM_THRESHOLD", "MAX_TRIES",
    "RegistryCode", "RegistryEntry", "Registry", "Hit", "Screen", "photo_codes", "register_photos",
    "confirm_code", "confirm_distance", "screen_entries", "screened_index_batch", "filter_batch",
    "FilterStats", "filter_manifest", "remove_matching", "remove_registered", "LOG_COLUMNS", "locked",
]

FORMAT = "matcher-optout-registry"
FORMAT_VERSION = 1
#: The confirmation hash (:func:`confirm_code`): 64x64 area-averaged region, 16x16 DCT, median.
CONFIRM_HASH_SIZE = 16
CONFIRM_SIDE = CONFIRM_HASH_SIZE * 4
CONFIRM = {"name": "phash", "bits": CONFIRM_HASH_SIZE ** 2, "version": 1,
           "params": {"hash_size": CONFIRM_HASH_SIZE, "highfreq_factor": 4}}
#: Largest 64-bit distance between a registry code and a dataset entry that makes a candidate, as search's.
#: 12 would find one more copy in 891 on the bench but makes 10x more candidates among photos nobody opted
#: out (4.3e-4 against 4.3e-5 per dataset image and registered photo), each costing a confirmation
#: (bench_optout.py, docs/optout.md).
DEFAULT_THRESHOLD = 10
#: Largest 256-bit distance, after alignment, that confirms a candidate. On the bench: copies mostly <= 8,
#: watermarked ones up to ~50 (the misses); different photos >= 62; other shots of the same scene 38-52
#: (stereo views, twin objects: kept), consecutive video frames 4-16 (dropped) (docs/optout.md).
DEFAULT_CONFIRM_THRESHOLD = 32
#: Code pairs of one registry entry tried per dataset image (nearest first) before giving up on it.
MAX_TRIES = 6
#: Two photos are "the same photo" (not registered twice) when their whole-image codes are this close.
SAME_PHOTO_DISTANCE = (2, 8)
#: Long side of the copy of a person's photo its orientation x crop variants' confirmation codes are cut from.
CONFIRM_SOURCE_SIDE = 256
#: Long side of the copy of a dataset region the alignment search works on.
SEARCH_SIDE = 96
#: A confirmation search still this many 256-bit bits away after its coarsest round gives up. On the bench
#: (bench_optout.py), every copy that was confirmed was <= 82 bits away at that point; 78% of the tries on
#: different photos were > 96 (they cost ~25 steps instead of ~120).
GIVE_UP = 96


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _hasher():
    return get_hasher(DEFAULT_HASHER)


# --- the registry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryCode:
    kind: str  # the query variant: "id/full", "mirror/c80", "id/rot+4", "face0/x2.1", ...
    hash: bytes  # 64-bit pHash of the variant's region
    confirm: bytes  # 256-bit pHash of the same region


@dataclass
class RegistryEntry:
    """One registered photo."""

    id: str
    added_at: str
    codes: list[RegistryCode]
    note: str | None = None
    source_name: str | None = None

    @property
    def full(self) -> RegistryCode:
        """The code pair of the whole photo, as it is (``id/full``)."""
        for c in self.codes:
            if c.kind == "id/full":
                return c
        return self.codes[0]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "added_at": self.added_at}
        if self.note:
            out["note"] = self.note
        if self.source_name:
            out["source_name"] = self.source_name
        out["codes"] = [{"kind": c.kind, "hash": c.hash.hex(), "confirm": c.confirm.hex()} for c in self.codes]
        return out

    @classmethod
    def make(cls, codes: Sequence[RegistryCode], *, note: str | None = None,
             source_name: str | None = None) -> "RegistryEntry":
        """A new entry; its id is derived from the whole photo's codes (the same pixels, the same id)."""
        full = next((c for c in codes if c.kind == "id/full"), codes[0])
        digest = hashlib.sha256(full.hash + full.confirm).hexdigest()[:16]
        return cls(f"o-{digest}", _now(), list(codes), note or None, source_name or None)


def _distance(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def _hex(value: Any, nbytes: int, where: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * nbytes:
        raise RegistryError(f"{where}: expected {2 * nbytes} hex digits, got {value!r:.80}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise RegistryError(f"{where}: not hexadecimal: {value!r:.80}") from None


def _text(value: Any, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not optional and not value):
        raise RegistryError(f"{where}: expected a{'' if optional else ' non-empty'} string, got {value!r:.80}")
    return value


class Registry:
    """An opt-out registry in memory: entries, the thresholds a screen uses, and where it came from."""

    def __init__(self, entries: Iterable[RegistryEntry] = (), *, threshold: int = DEFAULT_THRESHOLD,
                 confirm_threshold: int = DEFAULT_CONFIRM_THRESHOLD, created_at: str | None = None,
                 updated_at: str | None = None, path: str | os.PathLike | None = None):
        self.entries: list[RegistryEntry] = list(entries)
        self.threshold = threshold
        self.confirm_threshold = confirm_threshold
        self.created_at = created_at or _now()
        self.updated_at = updated_at or self.created_at
        self.path = Path(path) if path is not None else None
        self.hasher = _hasher().identity()
        self._compiled = None

    def __len__(self) -> int:
        return len(self.entries)

    # reading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, *, missing_ok: bool = False) -> "Registry":
        """Read and validate the registry at ``path`` (an empty one when it does not exist and ``missing_ok``)."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if missing_ok:
                return cls(path=path)
            raise RegistryError(f"{path}: no such registry file (create one with `matcher optout add "
                                f"--registry {path} PHOTOS`)") from None
        except IsADirectoryError:
            raise RegistryError(f"{path}: is a folder, not a registry file") from None
        except OSError as e:
            raise RegistryError(f"{path}: cannot read: {e.strerror or e}") from None
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as e:
                raise RegistryError(f"{path}: corrupt gzip data ({e})") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise RegistryError(f"{path}: not a registry file (not UTF-8 text: {e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise RegistryError(f"{path}: not a registry file, or damaged (invalid JSON at line {e.lineno} "
                                f"column {e.colno}: {e.msg})") from None
        return cls.from_json(data, path=path)

    @classmethod
    def from_json(cls, data: Any, *, path: str | os.PathLike | None = None) -> "Registry":
        where = str(path) if path is not None else "registry"
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise RegistryError(f"{where}: not a matcher opt-out registry (no \"format\": \"{FORMAT}\")")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RegistryError(f"{where}: invalid registry format version {version!r}")
        if version > FORMAT_VERSION:
            raise RegistryError(f"{where} uses registry format version {version}; this matcher reads up to "
                                f"version {FORMAT_VERSION}: upgrade matcher")
        mine = _hasher().identity()
        if data.get("hasher") != mine:
            raise RegistryError(f"{where}: its codes were made with hasher {data.get('hasher')}; this matcher "
                                f"makes {mine}")
        if data.get("confirm") != CONFIRM:
            raise RegistryError(f"{where}: its confirmation codes are {data.get('confirm')}; this matcher makes {CONFIRM}")
        variants = data.get("variants")
        if not isinstance(variants, dict) or variants.get("recipe_version") != RECIPE_VERSION:
            raise RegistryError(f"{where}: its variants follow recipe {variants!r}; this matcher cuts recipe "
                                f"version {RECIPE_VERSION}")
        thresholds = {}
        for name, bits in (("threshold", 64), ("confirm_threshold", CONFIRM["bits"])):
            t = data.get(name)
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t <= bits:
                raise RegistryError(f"{where}: \"{name}\" must be an integer 0..{bits}, got {t!r}")
            thresholds[name] = t
        entries_raw = data.get("entries")
        if not isinstance(entries_raw, list):
            raise RegistryError(f"{where}: \"entries\" must be a list")
        entries: list[RegistryEntry] = []
        seen: set[str] = set()
        for n, e in enumerate(entries_raw):
            at = f"{where}: entry {n + 1}"
            if not isinstance(e, dict):
                raise RegistryError(f"{at}: expected an object")
            eid = _text(e.get("id"), f"{at}: id")
            at = f"{where}: entry {n + 1} ({eid})"
            if eid in seen:
                raise RegistryError(f"{at}: the id appears twice")
            seen.add(eid)
            codes_raw = e.get("codes")
            if not isinstance(codes_raw, list) or not codes_raw:
                raise RegistryError(f"{at}: \"codes\" must be a non-empty list")
            codes = []
            for k, c in enumerate(codes_raw):
                if not isinstance(c, dict):
                    raise RegistryError(f"{at}: code {k + 1}: expected an object")
                codes.append(RegistryCode(_text(c.get("kind"), f"{at}: code {k + 1}: kind"),
                                          _hex(c.get("hash"), 8, f"{at}: code {k + 1}: hash"),
                                          _hex(c.get("confirm"), CONFIRM["bits"] // 8, f"{at}: code {k + 1}: confirm")))
            entries.append(RegistryEntry(eid, _text(e.get("added_at"), f"{at}: added_at"), codes,
                                         _text(e.get("note"), f"{at}: note", optional=True),
                                         _text(e.get("source_name"), f"{at}: source_name", optional=True)))
        return cls(entries, threshold=thresholds["threshold"], confirm_threshold=thresholds["confirm_threshold"],
                   created_at=_text(data.get("created_at"), f"{where}: created_at", optional=True),
                   updated_at=_text(data.get("updated_at"), f"{where}: updated_at", optional=True), path=path)

    # writing ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "hasher": self.hasher, "confirm": CONFIRM,
                "variants": {"recipe_version": RECIPE_VERSION}, "threshold": self.threshold,
                "confirm_threshold": self.confirm_threshold, "created_at": self.created_at,
                "updated_at": self.updated_at, "entries": [e.to_json() for e in self.entries]}

    def dumps(self) -> str:
        """The file's text: the header indented, one line per entry (diffable, and half the size of indenting)."""
        data = self.to_json()
        entries = data.pop("entries")
        head = json.dumps(data, indent=2, ensure_ascii=False)
        body = ",\n".join("    " + json.dumps(e, ensure_ascii=False) for e in entries)
        return head[:-2] + ',\n  "entries": [' + (f"\n{body}\n  " if body else "") + "]\n}\n"

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write atomically (temporary file in the same folder, fsync, rename, fsync of the folder)."""
        path = Path(path) if path is not None else self.path
        if path is None:
            raise RegistryError("no path to save the registry to")
        self.updated_at = _now()
        data = self.dumps().encode("utf-8")
        if path.name.endswith(".gz"):
            data = gzip.compress(data, mtime=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)
        self.path = path
        self._compiled = None
        return path

    # editing ------------------------------------------------------------------------------
    def get(self, entry_id: str) -> RegistryEntry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def same_photo(self, codes: Sequence[RegistryCode]) -> RegistryEntry | None:
        """The entry already holding this photo (the same pixels or a re-save: whole-photo codes within
        :data:`SAME_PHOTO_DISTANCE`), or None."""
        full = next((c for c in codes if c.kind == "id/full"), codes[0])
        for e in self.entries:
            f = e.full
            if (_distance(f.hash, full.hash) <= SAME_PHOTO_DISTANCE[0]
                    and _distance(f.confirm, full.confirm) <= SAME_PHOTO_DISTANCE[1]):
                return e
        return None

    def add(self, entry: RegistryEntry) -> tuple[RegistryEntry, bool]:
        """Add ``entry`` unless the photo is registered already: (the entry that holds it, added?)."""
        existing = self.same_photo(entry.codes)
        if existing is not None:
            return existing, False
        if self.get(entry.id) is not None:  # pragma: no cover - an id is a digest of the codes compared above
            entry.id = f"{entry.id}-{len(self.entries)}"
        self.entries.append(entry)
        self._compiled = None
        return entry, True

    def remove(self, entry_id: str) -> RegistryEntry:
        e = self.get(entry_id)
        if e is None:
            raise RegistryError(f"no entry {entry_id!r} in {self.path or 'the registry'} "
                                f"(`matcher optout list` shows the ids)")
        self.entries.remove(e)
        self._compiled = None
        return e

    def digest(self) -> str:
        """A digest of what a screen uses (entries and thresholds)."""
        h = hashlib.sha256()
        h.update(f"{self.threshold}/{self.confirm_threshold}\n".encode())
        for e in self.entries:
            h.update(e.id.encode() + b"\n")
            for c in e.codes:
                h.update(c.kind.encode() + b"\0" + c.hash + c.confirm)
        return h.hexdigest()

    def compiled(self) -> "_Compiled":
        if self._compiled is None:
            self._compiled = _Compiled(self)
        return self._compiled


@contextmanager
def locked(path: str | os.PathLike):
    """Hold the registry's lock file (``FILE.lock``) for a read-modify-write."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- the person's side: code pairs of a photo ----------------------------------------------------
def confirm_code(img: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The 256-bit confirmation code (packed, 32 bytes) of pixel ``box`` (rounded to whole pixels) in the
    greyscale array ``img``: the region resampled to 64x64 by area averaging (OpenCV ``INTER_AREA``), its
    2-D DCT-II, the 16x16 lowest coefficients, one bit per coefficient above their median."""
    h, w = img.shape
    l, t = min(max(0, round(box[0])), w - 1), min(max(0, round(box[1])), h - 1)
    r, b = max(l + 1, min(w, round(box[2]))), max(t + 1, min(h, round(box[3])))
    px = cv2.resize(np.ascontiguousarray(img[t:b, l:r]), (CONFIRM_SIDE, CONFIRM_SIDE), interpolation=cv2.INTER_AREA)
    return np.packbits(phash_pixels(px, CONFIRM_HASH_SIZE))


def photo_codes(hasher, src: str | bytes, limits: Limits) -> tuple:
    """``("ok", [RegistryCode, ...])`` for one photo (its query variants, as ``matcher search`` cuts them),
    or ``("err", reason, kind)``."""
    from matcher.imaging.regions import query_variants
    from matcher.pipeline.photo import query_one

    out = query_one(hasher, True, src, limits)
    if out[0] != "ok":
        return out
    q = out[2]
    sources, _ = query_variants(Image.fromarray(q.image, "L"), q.faces)
    codes = []
    # orientation x crop variants from a copy of at most CONFIRM_SOURCE_SIDE px (a crop keeps >= half of each
    # side: >= 2x the 64 px the code needs; 4x cheaper than the working image); faces and rotations as they are
    arrays: dict[tuple[str, bool], tuple[np.ndarray, float, float]] = {}
    for i, v in enumerate(q.variants):
        key = (v.source, "@" not in v.source and not v.name.startswith("face"))
        if key not in arrays:
            img = sources[v.source]
            a = np.asarray(img if img.mode == "L" else img.convert("L"))
            sx = sy = 1.0
            if key[1] and max(a.shape) > CONFIRM_SOURCE_SIDE:
                f = CONFIRM_SOURCE_SIDE / max(a.shape)
                small = cv2.resize(a, (max(1, round(a.shape[1] * f)), max(1, round(a.shape[0] * f))),
                                   interpolation=cv2.INTER_AREA)
                sx, sy = small.shape[1] / a.shape[1], small.shape[0] / a.shape[0]
                a = small
            arrays[key] = (a, sx, sy)
        a, sx, sy = arrays[key]
        l, t, r, b = v.box
        codes.append(RegistryCode(v.name, q.codes[i].tobytes(), confirm_code(a, (l * sx, t * sy, r * sx, b * sy)).tobytes()))
    return ("ok", codes)


def _photo_batch(limits: Limits, files: Sequence[str]) -> list[tuple]:
    h = _hasher()
    return [photo_codes(h, f, limits) for f in files]


def register_photos(paths: Iterable[str | os.PathLike], *, workers: int | None = None,
                    limits: Limits = DEFAULT_LIMITS) -> Iterator[tuple[str, list[RegistryCode] | None, str | None]]:
    """``(file, codes, None)`` or ``(file, None, reason)`` for every photo under ``paths``, in order."""
    from matcher.ingest.run import default_workers
    from matcher.engine.api import iter_query_files
    from matcher.pipeline.pool import make_pool

    files = [str(p) for p in iter_query_files(paths)]
    workers = default_workers() if workers is None else workers
    chunks = [files[i : i + 4] for i in range(0, len(files), 4)]
    pool = make_pool(workers) if workers > 0 and len(files) > 4 else None
    try:
        results = pool.map(_photo_batch, [limits] * len(chunks), chunks) if pool else (
            _photo_batch(limits, c) for c in chunks)
        for chunk, outs in zip(chunks, results):
            for f, o in zip(chunk, outs):
                yield (f, o[1], None) if o[0] == "ok" else (f, None, o[1])
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


# --- the curator's side: screening a dataset image -----------------------------------------------
class _Compiled:
    """Every code of a registry in one flat FAISS index (exact), with what each code belongs to."""

    def __init__(self, registry: Registry):
        from matcher.index.binary import BinaryIndex

        self.registry = registry
        self.owner: list[int] = []
        self.kinds: list[str] = []
        codes, confirms = [], []
        for n, e in enumerate(registry.entries):
            for c in e.codes:
                self.owner.append(n)
                self.kinds.append(c.kind)
                codes.append(c.hash)
                confirms.append(c.confirm)
        self.codes = np.frombuffer(b"".join(codes), np.uint8).reshape(len(codes), 8)
        self.confirms = np.unpackbits(np.frombuffer(b"".join(confirms), np.uint8).reshape(len(confirms), -1),
                                      axis=1).astype(bool) if confirms else np.zeros((0, CONFIRM["bits"]), bool)
        self.index = BinaryIndex.build(64, np.arange(len(codes)), self.codes, layout="flat")

    def candidates(self, entries: Sequence[tuple[str, bytes]], threshold: int
                   ) -> dict[int, list[tuple[int, int, str]]]:
        """Registry entry number -> its tries ``(distance, code number, dataset entry kind)``, best first
        (nearest; unrotated variants first; then by name), at most :data:`MAX_TRIES`."""
        if not entries or len(self.index) == 0:
            return {}
        q = np.frombuffer(b"".join(code for _, code in entries), np.uint8).reshape(len(entries), 8)
        out: dict[int, list[tuple[int, int, str]]] = {}
        for (kind, _), (ids, dists) in zip(entries, self.index.range_search(q, threshold)):
            for i, d in zip(ids.tolist(), dists.tolist()):
                out.setdefault(self.owner[i], []).append((int(d), int(i), kind))
        for tries in out.values():
            tries.sort(key=lambda t: (t[0], "/rot" in self.kinds[t[1]], self.kinds[t[1]], t[2]))
            del tries[MAX_TRIES:]
        return out


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


# --- matcher filter: a clean manifest -------------------------------------------------------------
#: Columns of the filter log, one row per dropped image and per image that could not be read.
LOG_COLUMNS = ("row", "key", "url", "path", "action", "reason", "registry_entry", "variant", "entry_kind",
               "distance", "confirm_distance", "error_kind", "source", "rule", "value", "detail", "reservations", "notes")
ON_ERROR = ("drop", "keep")


@dataclass
class FilterStats:
    rows: int = 0
    kept: int = 0
    dropped: int = 0  # matched a registry entry
    unreadable: int = 0  # could not be read or screened (dropped or kept by on_error)
    unreadable_kept: int = 0
    by_entry: dict = field(default_factory=dict)  # registry entry id -> images dropped for it
    by_source: dict = field(default_factory=dict)  # reservation source -> images dropped for it (registry too)
    reserved: dict = field(default_factory=dict)  # reservation source -> images that carry one (dropped or not)
    errors: dict = field(default_factory=dict)  # failure kind -> count
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.kept + self.dropped + self.unreadable - self.unreadable_kept

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


def _numbered_items(src) -> Iterator[tuple[int, Any, bool]]:
    """``(row number, SourceItem, parsed?)`` for every row of a manifest, numbered as
    :class:`~matcher.ingest.sources.ManifestSource` numbers them (CSV/TSV: records, the header being 1; JSONL:
    lines; Parquet: rows from 1). ``parsed`` is False for a record that could not be read at all."""
    from matcher.ingest.sources import SourceItem

    mapping = None if src.fmt == "jsonl" else src._mapping(src.headers())
    for n, row, err in src._rows():
        if row is None:
            yield n, SourceItem(src.dataset, f"row:{n}", error=err), False
            continue
        if mapping is None:
            mapping = src._mapping(list(row))
        yield n, src._item(n, row, mapping), True


def _open_out_text(path: Path, gz: bool):
    if gz:
        return io.TextIOWrapper(gzip.open(path, "wb"), encoding="utf-8", newline="")
    return open(path, "w", encoding="utf-8", newline="")


def _path_rebaser(src, out: Path):
    """``(path header, rebase)`` when the clean manifest lands in another folder than ``src``: ``rebase(cell)``
    makes a relative path cell relative to the new folder, so it still names the same file; else None."""
    base, target = src.path.parent, out.resolve().parent
    if base == target:
        return None
    try:
        header = src._mapping(src.headers()).get("path") if src.fmt != "jsonl" else None
    except MatcherError:
        header = None
    if header is None and src.fmt != "jsonl":
        return None

    def rebase(cell):
        if not isinstance(cell, str) or not cell.strip() or Path(cell.strip()).is_absolute():
            return cell
        return os.path.relpath(base / cell.strip(), target)

    return header, rebase


def _write_clean(src, out: Path, dropped: set[int], gz: bool = False) -> int:
    """Copy the manifest's rows, except ``dropped`` (row numbers), to ``out`` in its format and columns
    (text formats gzip-compressed with ``gz``). Relative paths are rewritten relative to ``out``'s folder
    when it is not the manifest's, so each still names the same file."""
    from matcher.ingest.sources import _open_text

    rebaser = _path_rebaser(src, out)
    written = 0
    if src.fmt in ("csv", "tsv"):
        delim = "\t" if src.fmt == "tsv" else ","
        with _open_text(src.path) as f, _open_out_text(out, gz) as g:
            reader = csv.reader(f, delimiter=delim)
            writer = csv.writer(g, delimiter=delim, lineterminator="\n")
            try:
                header = next(reader)
            except StopIteration:
                return 0
            writer.writerow(header)
            col = header.index(rebaser[0]) if rebaser and rebaser[0] in header else None
            n = 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error:  # an unreadable record: never written (it names no image)
                    n += 1
                    continue
                n += 1
                if any(c.strip() for c in row) and n not in dropped:
                    if col is not None and col < len(row):
                        row[col] = rebaser[1](row[col])
                    writer.writerow(row)
                    written += 1
    elif src.fmt == "jsonl":
        with _open_text(src.path) as f, _open_out_text(out, gz) as g:
            for n, line in enumerate(f, 1):
                if line.strip() and n not in dropped:
                    g.write(_rebased_json_line(src, line, rebaser) if rebaser else
                            line if line.endswith("\n") else line + "\n")
                    written += 1
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(src.path)
        drop = np.fromiter(sorted(dropped), np.int64, len(dropped))
        n = 0
        with pq.ParquetWriter(out, pf.schema_arrow) as writer:
            for batch in pf.iter_batches(batch_size=8192):
                rows = np.arange(n + 1, n + 1 + batch.num_rows)
                n += batch.num_rows
                keep = ~np.isin(rows, drop)
                table = pa.Table.from_batches([batch], schema=pf.schema_arrow).filter(pa.array(keep))
                if rebaser and rebaser[0] in table.column_names:
                    i = table.column_names.index(rebaser[0])
                    column = pa.array([rebaser[1](v) for v in table.column(i).to_pylist()], table.schema.field(i).type)
                    table = table.set_column(i, table.schema.field(i), column)
                writer.write_table(table)
                written += int(keep.sum())
    return written


def _rebased_json_line(src, line: str, rebaser) -> str:
    """A JSON Lines row with its path field rebased (:func:`_path_rebaser`); a line that is not a JSON object
    with a path is copied as it is."""
    try:
        row = json.loads(line)
    except ValueError:
        row = None
    if isinstance(row, dict):
        try:
            header = src._mapping(list(row)).get("path")
        except MatcherError:
            header = None
        if header is not None and isinstance(row.get(header), str):
            row[header] = rebaser[1](row[header])
            return json.dumps(row, ensure_ascii=False) + "\n"
    return line if line.endswith("\n") else line + "\n"


def filter_manifest(
    manifest: str | os.PathLike,
    registry: Registry,
    out: str | os.PathLike,
    *,
    log: str | os.PathLike | None = None,
    fmt: str | None = None,
    columns: dict[str, str] | None = None,
    on_error: str = "drop",
    fetch=None,
    workers: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Callable[[FilterStats], None] | None = None,
    batch: int = 16,
    respect: Sequence[str] = ("registry",),
    checker=None,
    allow_paths: Sequence[str | os.PathLike] = (),
) -> FilterStats:
    """Write ``out``: the rows of ``manifest`` whose image matches no entry of ``registry``.

    Every image is read (a local ``path`` that exists) or downloaded (its ``url``, with matcher's
    fetcher and its address guard), hashed as ``matcher add`` hashes it, and screened
    (:func:`screen_entries`). ``out`` has the manifest's format and columns (CSV/TSV/JSONL/Parquet;
    a ``.gz`` name is compressed); it is written by a temporary file and a rename. ``log`` (CSV,
    :data:`LOG_COLUMNS`) gets one row per dropped image and per image that could not be read, in the
    order they were decided. An image that cannot be read or screened (a failed download, not an image,
    a row without URL or path) is dropped with ``on_error="drop"`` (the default: what was not screened
    does not pass) and kept with ``"keep"``; a record that cannot be parsed at all is never written.

    ``checker`` (a :class:`matcher.ingest.reservations.Checker`) reads each image's reservations (embedded,
    response headers, site files); an image with one whose source is in ``respect`` (or a registry match,
    with ``"registry"``) is dropped for the first of them; the others are logged as kept.
    """
    from matcher.ingest.fetch import FetchSettings, fetch_iter
    from matcher.ingest.run import default_workers, is_local
    from matcher.ingest.sources import ManifestSource
    from matcher.pipeline.photo import HashSpec
    from matcher.pipeline.pool import Batches
    from matcher.ingest.reservations import log_cells, respected_drop

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    src = ManifestSource(manifest, fmt=fmt, columns=columns, allow_paths=allow_paths)  # paths: its folder only
    if src.fmt == "sniff":  # a .txt manifest: filter rewrites it row for row, in a layout it must be told
        raise ManifestError(f"{src.path.name}: unknown manifest format for filter (a .txt file): say --format csv, "
                            "tsv or jsonl")
    out = Path(out)
    if out.resolve() == src.path or (log is not None and Path(log).resolve() in (src.path, out.resolve())):
        raise MatcherError("the clean manifest and the log must be new files, not the manifest itself")
    fetch = fetch or FetchSettings()
    workers = default_workers() if workers is None else workers
    stats = FilterStats()
    dropped: set[int] = set()
    logf = open(log, "w", newline="", encoding="utf-8") if log is not None else None
    logw = csv.writer(logf) if logf else None
    if logw:
        logw.writerow(LOG_COLUMNS)
    found_of: dict[int, Any] = {}  # row -> its reservations (checker), until the row is decided

    def record(n: int, item, parsed: bool, outcome: tuple) -> None:
        found = found_of.pop(n, None)
        for source in {r.source for r in found.reservations} if found else ():
            stats.reserved[source] = stats.reserved.get(source, 0) + 1
        if outcome[0] == "ok":
            hits = outcome[1] if "registry" in respect else []
            drop = respected_drop(found, respect, hits)
            if drop is None:
                stats.kept += 1
                if logw and found:
                    logw.writerow([n, item.key, item.url or "", item.path or "", "kept", "reservation not respected",
                                   "", "", "", "", "", "", *log_cells(found, None)])
            else:
                dropped.add(n)
                stats.dropped += 1
                stats.by_source[drop.source] = stats.by_source.get(drop.source, 0) + 1
                h = hits[0] if drop.source == "registry" else None
                if h is not None:
                    stats.by_entry[h.entry_id] = stats.by_entry.get(h.entry_id, 0) + 1
                if logw:
                    reg = [h.entry_id, h.variant, h.kind, h.distance, h.confirm_distance] if h else [""] * 5
                    logw.writerow([n, item.key, item.url or "", item.path or "", "dropped",
                                   "opted out" if h else "reserved", *reg, "", *log_cells(found, drop)])
        else:
            _, reason, kind = outcome
            stats.unreadable += 1
            stats.errors[kind] = stats.errors.get(kind, 0) + 1
            keep = on_error == "keep" and parsed
            if keep:
                stats.unreadable_kept += 1
                stats.kept += 1
            else:
                dropped.add(n)
            if logw:
                logw.writerow([n, item.key, item.url or "", item.path or "", "kept" if keep else "dropped", reason,
                               "", "", "", "", "", kind, *log_cells(found, None)])
        if progress:
            progress(stats)

    jobs = Batches(workers, (filter_batch, HashSpec.of(_hasher(), True, limits), Screen(registry, limits)),
                   lambda r, o: record(*r, o))
    try:
        # pass 1: rows that name no image, and local files
        rows, payloads = [], []
        remote = 0
        for n, item, parsed in _numbered_items(src):
            stats.rows += 1
            if item.error:
                record(n, item, parsed, ("err", item.error, "bad_row"))
            elif is_local(item.url, item.path):
                if checker is not None:
                    found_of[n] = checker.collect(item.url, item.path)
                rows.append((n, item, parsed))
                payloads.append(item.path)
                if len(rows) >= batch:
                    jobs.submit(rows, payloads)
                    rows, payloads = [], []
                jobs.harvest()
            else:
                remote += 1
        if rows:
            jobs.submit(rows, payloads)
        # pass 2: remote images, downloaded concurrently, screened as they arrive
        if remote:
            wanted = ((r, r[1].url) for r in _numbered_items(src)
                      if not r[1].error and not is_local(r[1].url, r[1].path))
            if checker is not None:  # each new site's files are asked for as its first image is
                wanted = checker.prefetching(wanted)
            rows, payloads = [], []
            for r, body, err in fetch_iter(wanted, fetch, read=checker.read if checker is not None else None):
                if err is not None:
                    record(*r, ("err", err.reason, err.kind))
                else:
                    if checker is not None:
                        body, headers = checker.split(body)
                        found_of[r[0]] = checker.collect(r[1].url, body, headers)
                    rows.append(r)
                    payloads.append(body)
                    if len(rows) >= batch or jobs.idle_workers():
                        jobs.submit(rows, payloads)
                        rows, payloads = [], []
                jobs.harvest()
            if rows:
                jobs.submit(rows, payloads)
        jobs.drain()
    finally:
        jobs.close()
        if logf:
            logf.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        _write_clean(src, tmp, dropped, gz=out.name.endswith(".gz"))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return stats


# --- honouring requests against an existing index ------------------------------------------------
def remove_matching(index_dir: str | os.PathLike, photos: Sequence[str | os.PathLike], *, threshold: int | None = None,
                    min_score: float = DEFAULT_MIN_SCORE, max_motion: float | None = DEFAULT_MAX_MOTION,
                    workers: int | None = None, limits: Limits = DEFAULT_LIMITS) -> tuple[list, list]:
    """Search ``photos`` in the index exactly as ``matcher search`` does (verification included; ``threshold``
    None is search's default) and remove every item that matched (tombstones, as
    :meth:`IndexStore.remove_items`). Returns ``(search results, removed)``: ``removed`` is
    ``[(Match, query photo)]``, one per item.
    """
    from matcher.engine.api import DEFAULT_THRESHOLD as SEARCH_THRESHOLD
    from matcher.engine.api import search
    from matcher.index.store import IndexStore

    with IndexStore.open(index_dir, writable=True) as store:
        results = list(search(store, photos, threshold=SEARCH_THRESHOLD if threshold is None else threshold,
                              min_score=min_score, max_motion=max_motion, workers=workers, limits=limits))
        removed = _remove(store, ((m.item, (m, r.query)) for r in results for m in r.matches))
    return results, removed


def remove_registered(index_dir: str | os.PathLike, registry: Registry, *, limits: Limits = DEFAULT_LIMITS,
                      local_files: bool = True) -> tuple[list, list]:
    """Remove every item of the index that matches an entry of ``registry`` (tombstones).

    Each registry entry's codes are searched in the index (within ``registry.threshold``); a candidate
    is confirmed as :func:`screen_entries` confirms a dataset image, on the dataset image itself when it
    is a local file that still hashes as indexed (and ``local_files``), else on the entry's 64x64
    verification thumbnail. Returns ``(removed, unconfirmed)``: ``[(Item, Hit)]`` each; an item with
    neither file nor thumbnail cannot be confirmed and is not removed.
    """
    from matcher.errors import IndexMismatch
    from matcher.index.store import IndexStore
    from matcher.hashing.verify import decode_thumb
    from matcher.pipeline.photo import dataset_region

    with IndexStore.open(index_dir, writable=True) as store:
        if store.hasher.identity() != registry.hasher:
            raise IndexMismatch(f"index {index_dir} was built with hasher {store.hasher.identity()}; the registry's "
                                f"codes are {registry.hasher}")
        matched: dict[int, tuple] = {}
        unconfirmed: dict[int, tuple] = {}
        for e in registry.entries:
            codes = np.frombuffer(b"".join(c.hash for c in e.codes), np.uint8).reshape(len(e.codes), 8)
            tries: dict[int, list] = {}
            items = {}
            for c, row in zip(e.codes, store.search_codes(codes, registry.threshold)):
                for item, kind, d, thumb in row:
                    if item.id in matched:
                        continue
                    items[item.id] = item
                    tries.setdefault(item.id, []).append((d, c, kind, thumb))
            for item_id, ts in tries.items():
                ts.sort(key=lambda t: (t[0], "/rot" in t[1].kind, t[1].kind, t[2]))
                item = items[item_id]
                thumbs = {kind: thumb for _, _, kind, thumb in ts}

                def region(kind: str, item=item, thumbs=thumbs) -> np.ndarray | str:
                    why = "dataset image not available locally"
                    if local_files and item.path and os.path.isfile(item.path):
                        px = dataset_region(store.hasher, item.path, kind, item.hash, limits)
                        if not isinstance(px, str):
                            return px
                        why = px
                    if thumbs.get(kind) is not None:
                        return decode_thumb(thumbs[kind])
                    return why

                refs = [(d, c.kind, np.unpackbits(np.frombuffer(c.confirm, np.uint8)).astype(bool), kind)
                        for d, c, kind, _ in ts[:MAX_TRIES]]
                hit = _confirm_tries(refs, region, registry.confirm_threshold, e.id, {})
                if hit.confirmed:
                    matched[item_id] = (item, hit)
                    unconfirmed.pop(item_id, None)
                elif item_id not in unconfirmed:
                    unconfirmed[item_id] = (item, hit)
        removed = _remove(store, ((item, (item, hit)) for item, hit in matched.values()))
    return removed, list(unconfirmed.values())


def _remove(store, pairs: Iterable[tuple[Any, Any]]) -> list:
    """Remove each item of ``(item, payload)`` once (grouped by dataset); the payloads of those removed."""
    by_dataset: dict[str, dict[str, Any]] = {}
    for item, payload in pairs:
        by_dataset.setdefault(item.dataset, {}).setdefault(item.key, payload)
    out = []
    for dataset in sorted(by_dataset):
        keys = by_dataset[dataset]
        store.remove_items(dataset=dataset, keys=sorted(keys))
        out += [keys[k] for k in sorted(keys)]
    return out
