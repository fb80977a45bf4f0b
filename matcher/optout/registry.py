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

import fcntl
import gzip
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from matcher.atomic import write_bytes
from matcher.errors import RegistryError
from matcher.hashing.hashers import DEFAULT_HASHER, get_hasher
from matcher.engine.recipe import RECIPE_VERSION

__all__ = ["FORMAT", "FORMAT_VERSION", "CONFIRM", "DEFAULT_THRESHOLD", "DEFAULT_CONFIRM_THRESHOLD", "MAX_TRIES", "RegistryCode", "RegistryEntry", "Registry", "locked"]

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
