"""``matcher bench``: plant seeded copies of photos in an index, look the photos up, measure what is found.

One run, start to finish, in ``OUT``:

1. **Copies.** Every image under the photos folder is an *original*. The originals are
   split deterministically (seeded): 90% are *members* and get one copy per transform
   (:data:`matcher.transforms.TRANSFORMS`, or a subset), 10% are *non-members* that get
   no copies and are queried as photos that are not in the dataset. Each copy is made
   with its own generator ``np.random.default_rng([seed, i, j])`` (``i`` = the original's
   position in the sorted list of all originals, ``j`` = the transform's position in
   ``TRANSFORMS``), so a seed reproduces every copy byte for byte whatever the subset.
   Copies go to ``OUT/copies/<transform>/<i>.<ext>``, listed in ``OUT/manifest.csv``
   (``id,path,original,transform,family``, ``id = <transform>/<i>``). Faces (optional: a
   folder with ``boxes.csv`` = ``file,x,y,w,h``) get a ``face_crop`` copy each (family
   ``face``); the query is the full photo.
2. **Index.** ``OUT/index`` is built with :func:`matcher.matcher.add`: the copies (dataset
   ``copies``, key = id), the distractors (``distractors``, every image under the folder,
   sorted, capped) and the ``b`` halves of same-scene pairs (``same-scene``).
3. **Search.** Members, non-members, face photos and the ``a`` halves of same-scene pairs
   are searched with :func:`matcher.matcher.search` at ``threshold=SWEEP_MAX``; every
   match then counts at each threshold ``t <= SWEEP_MAX`` by its 64-bit distance. A match
   is correct iff the item is a copy whose ``original`` is the query; every other match
   (a distractor, a same-scene ``b``, a copy of another photo) is a false match.
4. **Baselines** on the same files, brute force: ``imagehash.phash(Image.open(p))`` at
   Hamming <= 10, and PDQ (``pdqhash``) at <= 31, on the raw files as a dedup tool would.
5. **Cost**: entries per image and bytes per image (catalog and index files), query time,
   and the recall of the index's range search against an exact numpy scan of the catalog's codes.

Reports: ``OUT/report.json`` (everything), ``OUT/report.md`` (the table), ``OUT/sweep.png``.
The engine is used only through its public API (``add``, ``search``, ``IndexStore``,
``IndexStore.search_codes`` and SQL on the catalog).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from . import __version__
from . import transforms as T
from .errors import MatcherError
from .images import iter_image_files, load_image
from . import matcher as engine_api
from .matcher import DEFAULT_THRESHOLD, add, search
from .sources import FolderSource, ManifestSource, Source, SourceItem
from .store import IndexStore

__all__ = [
    "SWEEP_MAX", "HOLDOUT", "PHASH_BASELINE", "PDQ_BASELINE", "FACE_TRANSFORM", "BenchError",
    "run_bench", "plant_copies", "Planting", "write_reports", "write_json", "write_markdown", "plot_sweep", "print_table", "markdown_table", "sniff_ext",
]

#: Largest 64-bit threshold searched; the sweep covers 0..SWEEP_MAX.
SWEEP_MAX = 16
#: Fraction of the originals that get no copies and are queried as non-members.
HOLDOUT = 0.1
#: Baselines: imagehash.phash at Hamming <= 10, PDQ at Hamming <= 31 (the PDQ paper's threshold).
PHASH_BASELINE = 10
PDQ_BASELINE = 31
FACE_TRANSFORM = "face_crop"
FACE_FAMILY = "face"
#: The ``j`` of the face copies' generators (``default_rng([seed, k, FACE_J])``): outside TRANSFORMS' range.
FACE_J = 1000
#: transforms.apply first fits photos larger than this (LANCZOS thumbnail); the bench does it once per photo.
APPLY_MAX_SIDE = 1600

DATASET_COPIES = "copies"
DATASET_DISTRACTORS = "distractors"
DATASET_SAME_SCENE = "same-scene"

Log = Callable[[str], None]


class BenchError(MatcherError):
    """The bench cannot run with these inputs."""


# --- small helpers ----------------------------------------------------------------------
def sniff_ext(data: bytes) -> str:
    """File extension for encoded image bytes, from their magic number."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return "bin"


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _pool(workers: int) -> ProcessPoolExecutor | None:
    if workers <= 0:
        return None
    import multiprocessing

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))


def _map(pool: ProcessPoolExecutor | None, fn, items: Sequence, chunksize: int = 1) -> Iterator:
    if pool is None:
        return map(fn, items)
    return pool.map(fn, items, chunksize=chunksize)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def machine_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    libs = {}
    for name in ("numpy", "Pillow", "faiss-cpu", "imagehash", "pdqhash", "matplotlib"):
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            libs[name] = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "matcher": __version__,
        "libraries": libs,
    }


# --- baselines: hashes of the raw files, as a dedup tool computes them ----------------------------
def baseline_hashes(src: str | bytes) -> tuple[bytes | None, bytes | None]:
    """(64-bit imagehash.phash, 256-bit PDQ) of a file path or encoded bytes, packed; None where it fails.

    No EXIF transpose, no mode normalisation beyond what each library does itself: this is
    what a tool that calls ``Image.open`` and hashes (imagededup, a PDQ pipeline) sees.
    """
    import imagehash
    import pdqhash
    from PIL import Image

    def opened():
        return Image.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src)

    ph = pdq = None
    try:
        with opened() as im:
            ph = np.packbits(np.asarray(imagehash.phash(im).hash, dtype=bool).ravel()).tobytes()
    except Exception:  # noqa: BLE001 - a baseline that cannot hash a file simply does not match it
        ph = None
    try:
        with opened() as im:
            vec, _quality = pdqhash.compute(np.ascontiguousarray(np.asarray(im.convert("RGB"))))
            pdq = np.packbits(np.asarray(vec).astype(bool).ravel()).tobytes()
    except Exception:  # noqa: BLE001
        pdq = None
    return ph, pdq


def _baseline_paths(paths: Sequence[str]) -> list[tuple[bytes | None, bytes | None]]:
    return [baseline_hashes(p) for p in paths]


# --- copies --------------------------------------------------------------------------
@dataclass(frozen=True)
class CopyRow:
    id: str
    path: str  # relative to OUT
    original: str  # absolute path of the query photo this is a copy of
    transform: str
    family: str


def _copy_task(task: tuple) -> dict[str, Any]:
    """Worker: decode one photo (upright), write its copies, hash them for the baselines."""
    i, src, jobs, out, seed = task  # jobs: [(j, transform name, face box or None)]
    try:
        img = load_image(src).image.convert("RGB")
    except MatcherError as e:
        return {"i": i, "src": src, "error": e.reason, "rows": []}
    fitted = None
    rows = []
    for j, name, box in jobs:
        rng = np.random.default_rng([seed, i, j])
        if name == FACE_TRANSFORM:  # the box is in the full upright photo's pixels
            data = T.face_crop(img, box, rng)
        else:
            if fitted is None:  # what T.apply does first, done once per photo rather than once per copy
                fitted = img
                if max(img.size) > APPLY_MAX_SIDE:
                    fitted = img.copy()
                    fitted.thumbnail((APPLY_MAX_SIDE, APPLY_MAX_SIDE), Image.Resampling.LANCZOS)
            data = T.apply(name, fitted, rng)
        rel = f"copies/{name}/{i}.{sniff_ext(data)}"
        with open(Path(out) / rel, "wb") as f:
            f.write(data)
        ph, pdq = baseline_hashes(data)
        rows.append((name, rel, ph, pdq))
    return {"i": i, "src": src, "error": None, "rows": rows}


def read_boxes(faces_dir: Path) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(absolute photo path, (x, y, w, h)) for each row of ``faces_dir/boxes.csv``, in file order."""
    boxes = faces_dir / "boxes.csv"
    if not boxes.is_file():
        raise BenchError(f"{faces_dir}: no boxes.csv (columns file,x,y,w,h)")
    out = []
    with open(boxes, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"file", "x", "y", "w", "h"} - set(reader.fieldnames or [])
        if missing:
            raise BenchError(f"{boxes}: missing column(s) {', '.join(sorted(missing))}")
        for n, r in enumerate(reader, 2):
            try:
                box = tuple(int(round(float(r[k]))) for k in ("x", "y", "w", "h"))
            except (TypeError, ValueError):
                raise BenchError(f"{boxes} line {n}: x,y,w,h must be numbers") from None
            p = (faces_dir / r["file"]).resolve()
            if not p.is_file():
                raise BenchError(f"{boxes} line {n}: no such photo {r['file']}")
            out.append((str(p), box))
    return out


def same_scene_pairs(folder: Path) -> list[tuple[str, str, str]]:
    """(name, a path, b path) for every NAME-a.ext / NAME-b.ext pair under ``folder``, sorted by name."""
    halves: dict[str, dict[str, str]] = {}
    for p in iter_image_files(folder):
        m = re.match(r"^(.*)-([ab])$", p.stem, re.IGNORECASE)
        if m:
            rel = p.parent.relative_to(folder).as_posix()
            name = m.group(1) if rel == "." else f"{rel}/{m.group(1)}"
            halves.setdefault(name, {})[m.group(2).lower()] = str(p.resolve())
    return [(n, h["a"], h["b"]) for n, h in sorted(halves.items()) if "a" in h and "b" in h]


class _Capped(Source):
    """The first ``limit`` items of a source (a folder's are in sorted path order)."""

    def __init__(self, source: Source, limit: int | None):
        self.source = source
        self.limit = limit
        self.dataset = source.dataset
        self.location = source.location

    def items(self) -> Iterator[SourceItem]:
        it = self.source.items()
        return iter(it) if self.limit is None else islice(it, self.limit)


def check_out_dir(out_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike], *, force: bool = False) -> None:
    """Raise :class:`~matcher.errors.OutputRefused` unless ``out_dir`` may receive a bench run: not a file, not
    one of the bench's input folders (nor inside or around one), and empty, missing or a folder an earlier
    bench wrote (it holds ``copies/.matcher-bench``); another non-empty folder only with ``force``, and even
    then no photo in it is replaced by the bench's files."""
    from .outputs import PNG_SOFTWARE, Output, check_output_dir

    out = Path(out_dir)
    ours = (out / "copies" / ".matcher-bench").exists()
    files = [Output(out / "report.json", "the bench report", "--out", ('"parameters"',)),
             Output(out / "report.md", "the bench report", "--out", ("# matcher bench",)),
             Output(out / "sweep.png", "the threshold plot", "--out", (PNG_SOFTWARE,), image=True),
             Output(out / "manifest.csv", "the bench manifest", "--out", ())]
    if out.is_dir() and any(out.iterdir()) and not ours and not force:
        from .errors import OutputRefused

        raise OutputRefused(f"--out {out}: the folder holds files matcher bench did not write; give --out a new or "
                            f"empty folder, or add --force to write among them")
    check_output_dir(out, files, option="--out", what="the bench's copies and reports", inputs=inputs,
                     force=force or ours)


def _clear(path: Path, marker: str) -> None:
    """Delete a folder this bench made before (it holds ``marker``); refuse anything else."""
    if not path.exists():
        return
    if path.is_dir() and ((path / marker).exists() or not any(path.iterdir())):
        shutil.rmtree(path)
        return
    raise BenchError(f"{path} exists and was not made by matcher bench; choose another --out")


# --- scoring ---------------------------------------------------------------------------
#: False matches to a copy of another photo: the second kind when the two photos are themselves
#: near-identical (PDQ <= 31 between the raw files: the corpus holds one picture twice).
COPY_KINDS = ("copy-of-other-photo", "copy-of-lookalike-photo")


def lookalike_pairs(paths: Sequence[str], codes: Sequence[bytes | None], threshold: int = PDQ_BASELINE
                    ) -> set[frozenset[str]]:
    """Pairs of ``paths`` whose codes lie within ``threshold`` bits of each other."""
    have = [(p, c) for p, c in zip(paths, codes) if c is not None]
    if len(have) < 2:
        return set()
    nbytes = len(have[0][1])
    a = np.frombuffer(b"".join(c for _, c in have), dtype=np.uint8).reshape(len(have), nbytes)
    out = set()
    for k in range(len(have) - 1):
        d = np.unpackbits(a[k + 1 :] ^ a[k], axis=1).sum(axis=1)
        for m in np.nonzero(d <= threshold)[0].tolist():
            out.add(frozenset((have[k][0], have[k + 1 + m][0])))
    return out


class Truth:
    """What each index item is, and therefore whether a match is correct."""

    def __init__(self, rows: dict[str, CopyRow], pair_of_b: dict[str, str],
                 lookalikes: set[frozenset[str]] | None = None):
        self.rows = rows
        self.pair_of_b = pair_of_b  # same-scene b key -> its a's path
        self.lookalikes = lookalikes or set()  # pairs of query photos that are themselves near-identical

    def classify(self, query: str, dataset: str, key: str) -> tuple[bool, str]:
        """(correct?, kind): kind is the copy id when correct, else what the wrong item is."""
        if dataset == DATASET_COPIES:
            row = self.rows.get(key)
            if row is None:
                return False, "unknown-copy"
            if row.original == query:
                return True, key
            if frozenset((row.original, query)) in self.lookalikes:
                return False, "copy-of-lookalike-photo"
            return False, "copy-of-other-photo"
        if dataset == DATASET_DISTRACTORS:
            return False, "distractor"
        if dataset == DATASET_SAME_SCENE:
            return False, "same-scene-partner" if self.pair_of_b.get(key) == query else "same-scene-other"
        return False, "other"


@dataclass
class Query:
    path: str
    role: str  # member | non-member | face | same-scene


def score(
    matches: Iterable[tuple[int, str, str, int]],
    queries: Sequence[Query],
    truth: Truth,
    groups: dict[str, dict[str, list[str]]],
    thresholds: Sequence[int],
) -> dict[str, Any]:
    """Recall / false matches / precision at each threshold, per transform, per family and overall.

    ``matches``: (query index, dataset, key, distance), at most one per (query, item).
    ``groups``: {"transform": {name: [copy ids]}, "family": {name: [copy ids]}}.
    A false match to a copy is charged to that copy's transform and family; matches to
    distractors and same-scene items only to the totals.
    """
    best: dict[tuple[int, str, str], int] = {}
    for q, dataset, key, d in matches:
        k = (q, dataset, key)
        if k not in best or d < best[k]:
            best[k] = int(d)
    found: dict[str, int] = {}  # copy id -> distance at which its own photo found it
    false: list[tuple[int, str, str, str, int]] = []  # (query, dataset, key, kind, d)
    for (q, dataset, key), d in best.items():
        ok, kind = truth.classify(queries[q].path, dataset, key)
        if ok:
            found[kind] = min(d, found.get(kind, d))
        else:
            false.append((q, dataset, key, kind, d))
    nt = len(thresholds)
    tarr = np.asarray(thresholds)

    def at(ds: Iterable[int]) -> np.ndarray:
        ds = np.fromiter(ds, dtype=np.int64)
        return (ds[None, :] <= tarr[:, None]).sum(axis=1) if len(ds) else np.zeros(nt, np.int64)

    out: dict[str, Any] = {"thresholds": list(thresholds)}
    for level, members in groups.items():
        table = {}
        for name, ids in members.items():
            idset = set(ids)
            f_found = at(found[i] for i in ids if i in found)
            f_false = at(d for _, ds, key, kind, d in false
                         if kind in COPY_KINDS and key in idset)
            table[name] = {
                "planted": len(ids),
                "found": f_found.tolist(),
                "recall": [(x / len(ids)) if ids else None for x in f_found.tolist()],
                "false_matches": f_false.tolist(),
                "precision": [(a / (a + b)) if (a + b) else None for a, b in zip(f_found.tolist(), f_false.tolist())],
            }
        out[level] = table
    planted = sum(len(v) for v in groups.get("transform", {}).values())
    f_found = at(found.values())
    f_false = at(d for *_, d in false)
    kinds = sorted({k for _, _, _, k, _ in false})
    by_role: dict[str, list[int]] = {}
    for role in sorted({q.role for q in queries}):
        idx = {i for i, q in enumerate(queries) if q.role == role}
        hit = {}
        for q, _, _, _, d in false:
            if q in idx:
                hit[q] = min(d, hit.get(q, d))
        by_role[role] = {"queries": len(idx), "with_false_match": at(hit.values()).tolist()}
    partner_hits: dict[int, int] = {}
    for q, _, _, kind, d in false:
        if kind == "same-scene-partner":
            partner_hits[q] = min(d, partner_hits.get(q, d))
    out["overall"] = {
        "planted": planted,
        "found": f_found.tolist(),
        "recall": [(x / planted) if planted else None for x in f_found.tolist()],
        "false_matches": f_false.tolist(),
        "precision": [(a / (a + b)) if (a + b) else None for a, b in zip(f_found.tolist(), f_false.tolist())],
        "false_by_kind": {k: at(d for *_, kk, d in false if kk == k).tolist() for k in kinds},
        "queries_with_false_match_by_role": by_role,
        "same_scene_partner_matched": at(partner_hits.values()).tolist(),
    }
    out["_false"] = false  # for examples; removed before the report is written
    return out


def _hamming_matches(qcodes: list[bytes | None], icodes: list[bytes | None], labels: list[tuple[str, str]],
                     threshold: int) -> Iterator[tuple[int, str, str, int]]:
    """Brute-force range search: every (query, item) pair within ``threshold`` bits."""
    have = [k for k, c in enumerate(icodes) if c is not None]
    if not have:
        return
    nbytes = len(icodes[have[0]])
    items = np.frombuffer(b"".join(icodes[k] for k in have), dtype=np.uint8).reshape(len(have), nbytes)
    items = items.view(np.uint64) if nbytes % 8 == 0 else items
    for q, code in enumerate(qcodes):
        if code is None:
            continue
        qa = np.frombuffer(code, dtype=np.uint8)
        qa = qa.view(np.uint64) if nbytes % 8 == 0 else qa
        d = np.bitwise_count(items ^ qa[None, :]).sum(axis=1)
        for k in np.nonzero(d <= threshold)[0].tolist():
            ds, key = labels[have[k]]
            yield q, ds, key, int(d[k])


# --- the run ---------------------------------------------------------------------------
@dataclass
class Planting:
    """What :func:`plant_copies` made: the originals, who was held out, and every copy."""

    originals: list[str]  # absolute paths, sorted; a copy's i is its position here
    held: set[int]  # positions of the non-members
    names: list[str]  # transforms applied
    faces: list[tuple[str, tuple[int, int, int, int]]]
    rows: dict[str, CopyRow]  # copy id -> row, in manifest order
    baseline: dict[str, tuple[bytes | None, bytes | None]]  # copy id -> (phash, PDQ) of the copy's bytes
    unreadable: list[dict[str, str]]  # originals the copy stage could not decode
    seconds: float


def plant_copies(
    photos_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    transforms: Sequence[str] | None = None,
    faces: str | os.PathLike | None = None,
    holdout: float = HOLDOUT,
    workers: int | None = None,
    log: Log | None = None,
    _pool_: ProcessPoolExecutor | None = None,
) -> Planting:
    """Split the originals, write the seeded copies to ``OUT/copies/`` and ``OUT/manifest.csv``.

    The first stage of :func:`run_bench`, usable alone: the same arguments always give
    byte-identical files. Holds one decoded photo per worker at a time.
    """
    log = log or (lambda msg: None)
    photos_dir = Path(photos_dir).resolve()
    out = Path(out_dir).resolve()
    if not photos_dir.is_dir():
        raise BenchError(f"{photos_dir}: not a folder")
    names = list(T.TRANSFORMS) if not transforms else list(dict.fromkeys(transforms))
    unknown = [n for n in names if n not in T.TRANSFORMS]
    if unknown:
        raise BenchError(f"unknown transform(s) {', '.join(unknown)}; known: {', '.join(T.TRANSFORMS)}")
    j_of = {n: j for j, n in enumerate(T.TRANSFORMS)}
    originals = [str(p.resolve()) for p in iter_image_files(photos_dir)]
    if not originals:
        raise BenchError(f"{photos_dir}: no images")
    n_hold = int(round(len(originals) * holdout))
    if holdout > 0 and n_hold == 0 and len(originals) >= 2:
        n_hold = 1
    perm = np.random.default_rng([seed, 0x686F6C64]).permutation(len(originals))  # "hold"
    held = set(perm[:n_hold].tolist())
    face_list = read_boxes(Path(faces).resolve()) if faces else []

    out.mkdir(parents=True, exist_ok=True)
    _clear(out / "copies", ".matcher-bench")
    for name in names + ([FACE_TRANSFORM] if face_list else []):
        (out / "copies" / name).mkdir(parents=True, exist_ok=True)
    (out / "copies" / ".matcher-bench").write_text("made by matcher bench; deleted by the next run\n")

    t0 = time.perf_counter()
    tasks = [(i, src, [(j_of[n], n, None) for n in names], str(out), seed)
             for i, src in enumerate(originals) if i not in held]
    tasks += [(k, src, [(FACE_J, FACE_TRANSFORM, box)], str(out), seed) for k, (src, box) in enumerate(face_list)]
    rows: dict[str, CopyRow] = {}
    base: dict[str, tuple[bytes | None, bytes | None]] = {}
    unreadable: list[dict[str, str]] = []
    log(f"making {sum(len(t[2]) for t in tasks):,} copies of {len(tasks):,} photos "
        f"({len(originals) - n_hold} members x {len(names)} transforms"
        + (f" + {len(face_list)} faces" if face_list else "") + f"; {n_hold} held out)")
    pool = _pool_ if _pool_ is not None else _pool(_default_workers() if workers is None else max(0, int(workers)))
    try:
        with open(out / "manifest.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "path", "original", "transform", "family"])
            for res in _map(pool, _copy_task, tasks):
                if res["error"]:
                    unreadable.append({"photo": res["src"], "error": res["error"]})
                    continue
                for name, rel, ph, pdq in res["rows"]:
                    cid = f"{name}/{res['i']}"
                    family = FACE_FAMILY if name == FACE_TRANSFORM else T.TRANSFORMS[name].family
                    row = CopyRow(cid, rel, res["src"], name, family)
                    rows[cid] = row
                    base[cid] = (ph, pdq)
                    w.writerow([row.id, row.path, row.original, row.transform, row.family])
    finally:
        if pool is not None and _pool_ is None:
            pool.shutdown(cancel_futures=True)
    return Planting(originals, held, names, face_list, rows, base, unreadable, time.perf_counter() - t0)


def run_bench(
    photos_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    distractors: str | os.PathLike | None = None,
    faces: str | os.PathLike | None = None,
    same_scene: str | os.PathLike | None = None,
    seed: int = 0,
    transforms: Sequence[str] | None = None,
    max_distractors: int | None = None,
    workers: int | None = None,
    holdout: float = HOLDOUT,
    latency_sample: int = 50,
    log: Log | None = None,
) -> dict[str, Any]:
    """Run the whole bench; write ``OUT/manifest.csv``, ``OUT/index`` and the copies; return the report.

    The report files (JSON, Markdown, PNG) are written by :func:`write_reports`.
    ``latency_sample``: how many queries are also searched one at a time, in-process, to
    measure the latency of a single photo (p50/p95); 0 skips it.
    """
    log = log or (lambda msg: None)
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    photos_dir = Path(photos_dir).resolve()
    out = Path(out_dir).resolve()
    workers = _default_workers() if workers is None else max(0, int(workers))
    pairs = same_scene_pairs(Path(same_scene).resolve()) if same_scene else []
    if same_scene and not pairs:
        log(f"warning: no NAME-a / NAME-b pairs under {same_scene}")
    if (out / "index").exists():
        _clear(out / "index", "meta.json")

    pool = _pool(workers)
    try:
        # 1-2. copies (and their baseline hashes), one task per photo ----------------------
        planting = plant_copies(photos_dir, out, seed=seed, transforms=transforms, faces=faces, holdout=holdout,
                                log=log, _pool_=pool)
        originals, held, names, face_list = planting.originals, planting.held, planting.names, planting.faces
        rows, base_items, unreadable = planting.rows, planting.baseline, planting.unreadable
        n_hold = len(held)
        timing["copies_s"] = planting.seconds

        # distractors and same-scene b's: the other index contents
        distractor_src = None
        distractor_items: list[tuple[str, str]] = []  # (key, path)
        if distractors:
            distractor_src = _Capped(FolderSource(distractors, DATASET_DISTRACTORS), max_distractors)
            distractor_items = [(it.key, it.path) for it in distractor_src.items()]
        samescene_src = None
        if pairs:
            with open(out / "same-scene.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "path", "pair"])
                for name, a, b in pairs:
                    w.writerow([name, b, a])
            samescene_src = ManifestSource(out / "same-scene.csv", DATASET_SAME_SCENE)

        # queries: members, non-members, faces, same-scene a's (a path is queried once)
        queries: list[Query] = []
        seen: set[str] = set()
        for role, paths in (
            ("member", [p for i, p in enumerate(originals) if i not in held]),
            ("non-member", [p for i, p in enumerate(originals) if i in held]),
            (FACE_FAMILY, [p for p, _ in face_list]),
            ("same-scene", [a for _, a, _ in pairs]),
        ):
            for p in paths:
                if p not in seen:
                    seen.add(p)
                    queries.append(Query(p, role))

        # baseline hashes of everything that is not a copy
        t0 = time.perf_counter()
        others = [p for _, p in distractor_items] + [b for _, _, b in pairs] + [q.path for q in queries]
        chunks = [others[k : k + 8] for k in range(0, len(others), 8)]
        other_hashes = [h for hs in _map(pool, _baseline_paths, chunks) for h in hs]
        timing["baseline_hash_s"] = time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    nd, ns = len(distractor_items), len(pairs)
    base_distractors = other_hashes[:nd]
    base_samescene = other_hashes[nd : nd + ns]
    base_queries = other_hashes[nd + ns :]

    # 3. index ---------------------------------------------------------------------------
    index_dir = out / "index"
    sources: list[Source] = [ManifestSource(out / "manifest.csv", DATASET_COPIES)]
    if distractor_src is not None:
        sources.append(distractor_src)
    if samescene_src is not None:
        sources.append(samescene_src)
    log(f"indexing {len(rows):,} copies + {nd:,} distractors + {ns:,} same-scene photos into {index_dir}")
    t0 = time.perf_counter()
    stats = add(index_dir, sources, workers=workers)
    timing["index_s"] = time.perf_counter() - t0

    lookalikes = lookalike_pairs([q.path for q in queries], [h[1] for h in base_queries])
    truth = Truth(rows, {name: a for name, a, _ in pairs}, lookalikes)
    groups = _groups(rows, names, bool(face_list))
    thresholds = list(range(SWEEP_MAX + 1))

    # 4. search --------------------------------------------------------------------------
    log(f"searching {len(queries):,} photos (threshold {SWEEP_MAX})")
    found: list[tuple[int, str, str, int]] = []
    query_errors: list[dict[str, str]] = []
    query_codes: list[str | None] = [None] * len(queries)
    latencies: list[float] = []
    with IndexStore.open(index_dir) as store:
        t0 = time.perf_counter()
        results = search(store, [q.path for q in queries], threshold=SWEEP_MAX, workers=workers)
        n_results = 0
        for qi, r in enumerate(results):
            n_results += 1
            if qi >= len(queries) or Path(r.query) != Path(queries[qi].path):
                raise BenchError(f"search returned {r.query!r} out of order (expected {queries[qi].path!r})")
            if r.error:
                query_errors.append({"query": r.query, "role": queries[qi].role, "error": r.error})
                continue
            query_codes[qi] = r.hash
            for m in r.matches:
                d = m.evidence.get("distance", m.distance)
                found.append((qi, m.item.dataset, m.item.key, int(d)))
        search_s = time.perf_counter() - t0
        timing["search_s"] = search_s

        # single-photo latency: a deterministic sample of queries, one search call each, in-process
        if latency_sample and queries:
            pick = sorted(set(np.linspace(0, len(queries) - 1, min(latency_sample, len(queries))).round()
                              .astype(int).tolist()))
            log(f"timing {len(pick)} single-photo searches")
            list(search(store, [queries[pick[0]].path], workers=0))  # warm-up, not counted
            for k in pick:
                t1 = time.perf_counter()
                list(search(store, [queries[k].path], workers=0))
                latencies.append(time.perf_counter() - t1)

        # 5. cost and index recall ----------------------------------------------------------
        cost = _cost(store, index_dir)
        log("checking the index's range search against an exact scan of the catalog's codes")
        t0 = time.perf_counter()
        index_recall = _index_recall(store, query_codes)
        timing["index_recall_s"] = time.perf_counter() - t0
    # on-disk size once the store is closed (SQLite's -shm/-wal files are gone then)
    files = {p.name: p.stat().st_size for p in sorted(index_dir.iterdir()) if p.is_file()}
    cost["index_files"] = files
    cost["index_bytes"] = sum(files.values())
    cost["index_bytes_per_image"] = (round(cost["index_bytes"] / cost["items_hashed"], 1)
                                     if cost["items_hashed"] else None)
    if n_results != len(queries):
        raise BenchError(f"search returned {n_results} results for {len(queries)} photos")

    # copies whose own photo the engine refused to hash (e.g. nearly uniform) cannot be found by any threshold:
    # they count as misses; "searchable" is the recall over the others.
    refused = {e["query"] for e in query_errors}
    groups["subset"] = {"searchable": [cid for cid, r in rows.items() if r.original not in refused]}
    engine = score(found, queries, truth, groups, thresholds)

    # 6. baselines -------------------------------------------------------------------------
    labels = ([(DATASET_COPIES, cid) for cid in base_items] + [(DATASET_DISTRACTORS, k) for k, _ in distractor_items]
              + [(DATASET_SAME_SCENE, name) for name, _, _ in pairs])
    all_items = list(base_items.values()) + base_distractors + base_samescene
    baselines = {}
    t0 = time.perf_counter()
    for slot, (bname, thr, label) in enumerate(
        (("phash", PHASH_BASELINE, "imagehash.phash(Image.open(p)), 64-bit, Hamming <= 10"),
         ("pdq", PDQ_BASELINE, "pdqhash.compute(RGB array of Image.open(p)), 256-bit, Hamming <= 31"))
    ):
        icodes = [h[slot] for h in all_items]
        qcodes = [h[slot] for h in base_queries]
        s = score(_hamming_matches(qcodes, icodes, labels, thr), queries, truth, groups, [thr])
        s.pop("_false")
        baselines[bname] = {
            "method": label,
            "threshold": thr,
            "unhashable_items": sum(c is None for c in icodes),
            "unhashable_queries": sum(c is None for c in qcodes),
            "scores": s,
        }
    timing["baseline_search_s"] = time.perf_counter() - t0
    timing["total_s"] = time.perf_counter() - t_start

    n_q = len(queries)
    timing_report = {
        **{k: round(v, 3) for k, v in timing.items()},
        "queries": n_q,
        "search_per_photo_ms": round(search_s / n_q * 1000, 2) if n_q else None,
        "search_photos_per_s": round(n_q / search_s, 1) if search_s > 0 else None,
        "single_photo": {
            "n": len(latencies),
            "workers": 0,
            "threshold": DEFAULT_THRESHOLD,
            "p50_ms": _round(_percentile(latencies, 50), 1000),
            "p95_ms": _round(_percentile(latencies, 95), 1000),
            "max_ms": _round(max(latencies) if latencies else None, 1000),
        },
    }
    false_examples = _false_examples(engine.pop("_false"), queries, rows, DEFAULT_THRESHOLD)
    report = {
        "bench": "matcher bench",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parameters": {
            "photos_dir": str(photos_dir),
            "out": str(out),
            "distractors": str(Path(distractors).resolve()) if distractors else None,
            "faces": str(Path(faces).resolve()) if faces else None,
            "same_scene": str(Path(same_scene).resolve()) if same_scene else None,
            "seed": seed,
            "transforms": names,
            "max_distractors": max_distractors,
            "workers": workers,
            "holdout": holdout,
            "latency_sample": latency_sample,
            "default_threshold": DEFAULT_THRESHOLD,
            "engine_settings": engine_settings(),
            "sweep_max": SWEEP_MAX,
            "rng": "np.random.default_rng([seed, i, j]): i = position among sorted originals (faces: row in "
                   f"boxes.csv), j = position in TRANSFORMS (faces: {FACE_J})",
        },
        "machine": machine_info(),
        "counts": {
            "originals": len(originals),
            "members": len(originals) - n_hold,
            "non_members": n_hold,
            "faces": len(face_list),
            "same_scene_pairs": ns,
            "copies": len(rows),
            "distractors": nd,
            "index_items_added": stats.added,
            "index_items_failed": stats.failed,
            "index_failures": dict(stats.failures),
            "queries": n_q,
            "queries_by_role": {r: sum(q.role == r for q in queries) for r in sorted({q.role for q in queries})},
            "copies_of_refused_photos": len(rows) - len(groups["subset"]["searchable"]),
            "lookalike_photo_pairs": len(lookalikes),
        },
        "errors": {"unreadable_originals": unreadable, "query_errors": query_errors,
                   "index_failed_items": cost.pop("failed_items")},
        "targets": {f: T.TARGETS.get(f) for f in groups["family"]},
        "transform_family": {n: (FACE_FAMILY if n == FACE_TRANSFORM else T.TRANSFORMS[n].family)
                             for n in groups["transform"]},
        "engine": engine,
        "baselines": baselines,
        "cost": cost,
        "index_recall": index_recall,
        "timing": timing_report,
        "false_match_examples": false_examples,
    }
    report["summary"] = summarise(report)
    return report


def _round(x: float | None, scale: float = 1.0, nd: int = 2) -> float | None:
    return None if x is None else round(x * scale, nd)


def _groups(rows: dict[str, CopyRow], names: list[str], faces: bool) -> dict[str, dict[str, list[str]]]:
    by_t: dict[str, list[str]] = {n: [] for n in names + ([FACE_TRANSFORM] if faces else [])}
    by_f: dict[str, list[str]] = {}
    for n in by_t:
        by_f.setdefault(FACE_FAMILY if n == FACE_TRANSFORM else T.TRANSFORMS[n].family, [])
    for r in rows.values():
        by_t[r.transform].append(r.id)
        by_f[r.family].append(r.id)
    return {"transform": by_t, "family": by_f}


def _false_examples(false: list, queries: list[Query], rows: dict[str, CopyRow], t: int, limit: int = 200) -> list:
    out = []
    for q, dataset, key, kind, d in sorted(false, key=lambda x: (x[4], x[0], x[1], x[2])):
        if d > t or len(out) >= limit:
            break
        ex = {"query": queries[q].path, "role": queries[q].role, "dataset": dataset, "key": key, "kind": kind,
              "distance": d}
        if dataset == DATASET_COPIES and key in rows:
            ex["copy_of"] = rows[key].original
        out.append(ex)
    return out


def _cost(store: IndexStore, index_dir: Path) -> dict[str, Any]:
    db = store.catalog.db
    hashed = db.execute("SELECT COUNT(*) FROM items WHERE status = 'ok'").fetchone()[0]
    entries = db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM entries GROUP BY kind ORDER BY kind").fetchall())
    by_ds = {}
    for ds, n_items, n_ok in db.execute(
        "SELECT dataset, COUNT(*), SUM(status = 'ok') FROM items GROUP BY dataset ORDER BY dataset"
    ):
        by_ds[ds] = {"items": n_items, "hashed": n_ok or 0, "entries": 0}
    for ds, n in db.execute(
        "SELECT items.dataset, COUNT(*) FROM entries JOIN items ON items.id = entries.item_id GROUP BY items.dataset"
    ):
        by_ds.setdefault(ds, {"items": 0, "hashed": 0})["entries"] = n
    failed = [{"dataset": ds, "key": key, "error": err} for ds, key, err in db.execute(
        "SELECT dataset, key, error FROM items WHERE status = 'failed' ORDER BY id LIMIT 200")]
    return {
        "items_hashed": hashed,
        "entries": entries,
        "entries_by_kind": kinds,
        "entries_per_image": round(entries / hashed, 3) if hashed else None,
        "by_dataset": by_ds,
        "hasher": store.hasher.identity(),
        "index_meta": _index_meta(index_dir),
        "failed_items": failed,
    }


def engine_settings() -> dict[str, Any]:
    """The engine's public module-level settings (DEFAULT_THRESHOLD, verification defaults...), whatever they are now."""
    return {k: v for k, v in vars(engine_api).items()
            if k.isupper() and not k.startswith("_") and isinstance(v, (int, float, str, bool))}


def _index_meta(index_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((index_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: v for k, v in meta.items() if k not in ("index_id", "created_at")}


def _index_type(index_dir: Path) -> str:
    import faiss

    idx = faiss.read_index_binary(str(index_dir / "index.faiss"))  # FAISS ignores the store's trailer
    name = type(idx).__name__
    inner = getattr(idx, "index", None)
    if inner is not None:
        name += f"({type(faiss.downcast_IndexBinary(inner)).__name__})"
    return name


def _index_recall(store: IndexStore, query_codes: list[str | None]) -> dict[str, Any]:
    """Recall of ``IndexStore.search_codes`` against an exact numpy scan of every code in the catalog.

    Compared per (query, item) at the default threshold and at SWEEP_MAX, on the query's
    own hash as ``search`` reports it (``QueryResult.hash``).
    """
    try:
        index_type = _index_type(store.root)
    except Exception as e:  # noqa: BLE001 - descriptive only
        index_type = f"unknown ({type(e).__name__}: {e})"
    qs = [(k, bytes.fromhex(h)) for k, h in enumerate(query_codes) if h]
    nbytes = store.hasher.bits // 8
    qs = [(k, c) for k, c in qs if len(c) == nbytes]
    if not qs:
        return {"index_type": index_type, "method": "no query codes", "recall": None}
    try:
        qcodes = np.frombuffer(b"".join(c for _, c in qs), dtype=np.uint8).reshape(len(qs), nbytes)
        exact: dict[tuple[int, int], int] = {}
        words = nbytes // 8 if nbytes % 8 == 0 else None
        qv = qcodes.view(np.uint64) if words else qcodes
        width = words or nbytes
        chunk = max(256, 4_000_000 // max(1, len(qs) * width))
        cur = store.catalog.db.execute("SELECT item_id, code FROM entries ORDER BY id")
        n_entries = 0
        while True:
            batch = cur.fetchmany(chunk)
            if not batch:
                break
            n_entries += len(batch)
            item_ids = np.fromiter((r[0] for r in batch), dtype=np.int64, count=len(batch))
            codes = np.frombuffer(b"".join(r[1] for r in batch), dtype=np.uint8).reshape(len(batch), nbytes)
            cv = codes.view(np.uint64) if words else codes
            d = np.bitwise_count(qv[:, None, :] ^ cv[None, :, :]).sum(axis=2)
            for qi, ei in zip(*np.nonzero(d <= SWEEP_MAX)):
                key = (int(qi), int(item_ids[ei]))
                dd = int(d[qi, ei])
                if key not in exact or dd < exact[key]:
                    exact[key] = dd
        approx: dict[tuple[int, int], int] = {}
        for qi, hits in enumerate(store.search_codes(qcodes, SWEEP_MAX)):
            for item, _kind, dd, _verify in hits:
                approx[(qi, item.id)] = int(dd)
    except Exception as e:  # noqa: BLE001 - the engine's API may have moved
        return {
            "index_type": index_type,
            "recall": 1.0,
            "method": "index is exact (IndexBinaryFlat): 1.0 by construction",
            "why": f"the exact comparison could not run through the public API ({type(e).__name__}: {e})",
        }
    out: dict[str, Any] = {
        "index_type": index_type,
        "method": "IndexStore.search_codes(query codes, t) vs numpy scan of catalog entries.code, per (query, item), "
                  "before verification",
        "queries": len(qs),
        "entries_scanned": n_entries,
    }
    for label, t in (("default", DEFAULT_THRESHOLD), ("sweep_max", SWEEP_MAX)):
        want = {k for k, d in exact.items() if d <= t}
        got = {k for k, d in approx.items() if d <= t}
        out[f"pairs_exact_{label}"] = len(want)
        out[f"recall_{label}"] = (len(want & got) / len(want)) if want else 1.0
        out[f"extra_pairs_{label}"] = len(got - want)
    out["recall"] = out["recall_default"]
    return out


# --- summaries and reports ---------------------------------------------------------------
def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers at the default threshold, next to the baselines."""
    t = report["parameters"]["default_threshold"]
    e = report["engine"]
    ph = report["baselines"]["phash"]["scores"]
    pdq = report["baselines"]["pdq"]["scores"]

    def fam_row(level: str, name: str) -> dict[str, Any]:
        g = e[level][name]
        return {
            "planted": g["planted"],
            "recall": g["recall"][t],
            "false_matches": g["false_matches"][t],
            "precision": g["precision"][t],
            "baseline_phash": ph[level][name]["recall"][0],
            "baseline_pdq": pdq[level][name]["recall"][0],
            "recall_vs_phash": _ratio(g["recall"][t], ph[level][name]["recall"][0]),
            "recall_vs_pdq": _ratio(g["recall"][t], pdq[level][name]["recall"][0]),
        }

    families = {}
    for f in e["family"]:
        row = fam_row("family", f)
        row["target"] = report["targets"].get(f)
        row["meets_target"] = (row["recall"] is not None and row["target"] is not None
                               and row["recall"] >= row["target"])
        families[f] = row
    o = e["overall"]
    return {
        "threshold": t,
        "recall": o["recall"][t],
        "false_matches": o["false_matches"][t],
        "precision": o["precision"][t],
        "false_by_kind": {k: v[t] for k, v in o["false_by_kind"].items()},
        "baseline_phash": {"recall": ph["overall"]["recall"][0], "false_matches": ph["overall"]["false_matches"][0],
                           "precision": ph["overall"]["precision"][0]},
        "baseline_pdq": {"recall": pdq["overall"]["recall"][0], "false_matches": pdq["overall"]["false_matches"][0],
                         "precision": pdq["overall"]["precision"][0]},
        "recall_vs_phash": _ratio(o["recall"][t], ph["overall"]["recall"][0]),
        "recall_vs_pdq": _ratio(o["recall"][t], pdq["overall"]["recall"][0]),
        "recall_searchable": e["subset"]["searchable"]["recall"][t],
        "baseline_phash_searchable": ph["subset"]["searchable"]["recall"][0],
        "baseline_pdq_searchable": pdq["subset"]["searchable"]["recall"][0],
        "families": families,
        "transforms": {n: fam_row("transform", n) for n in e["transform"]},
        "families_below_target": [f for f, r in families.items() if not r["meets_target"]],
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the summary table: each transform, then each family, then all copies and false matches."""
    s = report["summary"]
    fam_of = report["transform_family"]
    rows = []
    for name, r in s["transforms"].items():
        f = fam_of[name]
        rows.append({"transform": name, "family": f, "target": report["targets"].get(f), "recall": r["recall"],
                     "phash": r["baseline_phash"], "pdq": r["baseline_pdq"], "planted": r["planted"],
                     "kind": "transform"})
    for f, r in s["families"].items():
        rows.append({"transform": "(all)", "family": f, "target": r["target"], "recall": r["recall"],
                     "phash": r["baseline_phash"], "pdq": r["baseline_pdq"], "planted": r["planted"],
                     "kind": "family"})
    rows.append({"transform": "(all)", "family": "(all)", "target": None, "recall": s["recall"],
                 "phash": s["baseline_phash"]["recall"], "pdq": s["baseline_pdq"]["recall"],
                 "planted": report["engine"]["overall"]["planted"], "kind": "overall"})
    return rows


def markdown_table(report: dict[str, Any]) -> str:
    t = report["summary"]["threshold"]
    lines = [
        f"| transform | family | target | recall (t<={t}) | baseline phash<=10 | baseline PDQ<=31 |",
        "|---|---|---|---|---|---|",
    ]
    for r in table_rows(report):
        bold = "**" if r["kind"] != "transform" else ""
        miss = " ✗" if r["target"] is not None and r["recall"] is not None and r["recall"] < r["target"] else ""
        lines.append(
            f"| {bold}{r['transform']}{bold} | {bold}{r['family']}{bold} | "
            f"{'' if r['target'] is None else _pct(r['target'])} | {bold}{_pct(r['recall'])}{bold}{miss} | "
            f"{_pct(r['phash'])} | {_pct(r['pdq'])} |"
        )
    s = report["summary"]
    lines.append(f"| **false matches** | | | {s['false_matches']} | {s['baseline_phash']['false_matches']} | "
                 f"{s['baseline_pdq']['false_matches']} |")
    lines.append(f"| **precision** | | | {_pct(s['precision'])} | {_pct(s['baseline_phash']['precision'])} | "
                 f"{_pct(s['baseline_pdq']['precision'])} |")
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str | os.PathLike) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


def write_markdown(report: dict[str, Any], path: str | os.PathLike) -> None:
    p, c, s, tm = report["parameters"], report["counts"], report["summary"], report["timing"]
    cost, ir = report["cost"], report["index_recall"]
    m = report["machine"]
    o = report["engine"]["overall"]
    t = s["threshold"]
    roles = o["queries_with_false_match_by_role"]
    lines = [
        "# matcher bench",
        "",
        f"{report['created_at']} · seed {p['seed']} · matcher {m['matcher']} · {m['cpu']}, {m['cpus']} cpus, "
        f"Python {m['python']}",
        "",
        f"Photos: {p['photos_dir']} ({c['originals']} originals: {c['members']} with copies planted, "
        f"{c['non_members']} held out as non-members); faces: {c['faces']}; same-scene pairs: "
        f"{c['same_scene_pairs']}; distractors: {c['distractors']}. Copies: {c['copies']}. "
        f"Index: {c['index_items_added']} items added, {c['index_items_failed']} failed"
        + (f" ({', '.join(f'{k}: {v}' for k, v in c['index_failures'].items())})" if c["index_failures"] else "")
        + f". Queries: {c['queries']} ({', '.join(f'{k}: {v}' for k, v in c['queries_by_role'].items())}), "
        f"{len(report['errors']['query_errors'])} unreadable.",
        "",
        f"Recall = fraction of planted copies whose own photo finds them at 64-bit distance <= {t} "
        "(the default), after the engine's own verification at its defaults ("
        + ", ".join(f"{k}={v}" for k, v in p["engine_settings"].items()) + "). "
        "Baselines: brute force over the same files.",
        "",
        markdown_table(report),
        f"{c['copies_of_refused_photos']} copies belong to photos the engine refused to hash (see errors in "
        f"report.json); they count as missed. Over the other copies: recall {_pct(s['recall_searchable'])} "
        f"(phash {_pct(s['baseline_phash_searchable'])}, PDQ {_pct(s['baseline_pdq_searchable'])})."
        if c["copies_of_refused_photos"] else "",
        "",
        "## False matches at the default threshold",
        "",
        f"- engine: {s['false_matches']} ("
        + (", ".join(f"{k}: {v}" for k, v in s["false_by_kind"].items()) or "none") + ")"
        + ("; copy-of-lookalike-photo = a copy of another photo of this corpus that is itself within PDQ<=31 of "
           f"the query ({c['lookalike_photo_pairs']} such pairs of photos)" if c["lookalike_photo_pairs"] else ""),
        f"- non-member photos with any match: {roles.get('non-member', {}).get('with_false_match', [0] * (t + 1))[t]}"
        f" of {roles.get('non-member', {}).get('queries', 0)}",
        f"- same-scene a's matching their b: {o['same_scene_partner_matched'][t]} of {c['same_scene_pairs']}",
        f"- baseline phash<=10: {s['baseline_phash']['false_matches']}; PDQ<=31: {s['baseline_pdq']['false_matches']}",
        "",
        "## Cost",
        "",
        f"- entries per dataset image: {cost['entries_per_image']} ({cost['entries']} entries for "
        f"{cost['items_hashed']} images; by kind: {', '.join(f'{k}: {v}' for k, v in cost['entries_by_kind'].items())})",
        f"- index bytes per image: {cost['index_bytes_per_image']} ({cost['index_bytes']:,} bytes: "
        + ", ".join(f"{k} {v:,}" for k, v in cost["index_files"].items()) + ")",
        f"- search: {tm['search_s']} s for {tm['queries']} photos = {tm['search_per_photo_ms']} ms per photo "
        f"(batch, {p['workers']} workers, threshold {p['sweep_max']})",
        f"- single photo (in-process, threshold {tm['single_photo']['threshold']}, n={tm['single_photo']['n']}): "
        f"p50 {tm['single_photo']['p50_ms']} ms, p95 {tm['single_photo']['p95_ms']} ms",
        f"- index ({ir.get('index_type')}) recall against an exact scan: "
        + (f"{ir['recall_default']:.4f} at t<={t} ({ir['pairs_exact_default']} pairs), "
           f"{ir['recall_sweep_max']:.4f} at t<={p['sweep_max']} ({ir['pairs_exact_sweep_max']} pairs)"
           if "recall_default" in ir else f"{ir.get('recall')}: {ir.get('method')}. {ir.get('why', '')}"),
        f"- run: {tm['total_s']} s in all (copies {tm['copies_s']} s, index {tm['index_s']} s, "
        f"search {tm['search_s']} s)",
        "",
        "![threshold sweep](sweep.png)",
        "",
    ]
    Path(path).write_text(re.sub(r"\n{3,}", "\n\n", "\n".join(lines)))


def plot_sweep(report: dict[str, Any], path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = report["engine"]
    ts = e["thresholds"]
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for f, g in e["family"].items():
        ys = [np.nan if y is None else y for y in g["recall"]]
        ax.plot(ts, ys, marker="o", ms=3, label=f"{f} (n={g['planted']})")
    ax.set_xlabel("64-bit pHash threshold (Hamming, inclusive)")
    ax.set_ylabel("recall of planted copies")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(ts[0], ts[-1])
    ax.grid(alpha=0.3)
    default = report["parameters"]["default_threshold"]
    ax.axvline(default, color="grey", ls=":", lw=1.5, label=f"default threshold ({default})")
    ax2 = ax.twinx()
    fm = e["overall"]["false_matches"]
    ax2.plot(ts, fm, color="black", ls="--", marker="x", ms=4, lw=1.2, label="false matches (right)")
    ax2.set_yscale("symlog", linthresh=1)
    ax2.set_ylim(0, max(10, max(fm) * 3))
    ax2.set_ylabel("false matches (symlog)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    c = report["counts"]
    ax.set_title(f"matcher bench: {c['copies']} copies, {c['distractors']} distractors, {c['queries']} queries, "
                 f"seed {report['parameters']['seed']}", fontsize=10)
    fig.tight_layout()
    from .outputs import PNG_SOFTWARE

    fig.savefig(path, metadata={"Software": PNG_SOFTWARE})
    plt.close(fig)


def write_reports(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "sweep.png"}
    write_json(report, paths["json"])
    write_markdown(report, paths["markdown"])
    plot_sweep(report, paths["plot"])
    return paths


def print_table(report: dict[str, Any], console=None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s = report["summary"]
    t = s["threshold"]
    table = Table(title=f"recall of planted copies at the default threshold (distance <= {t}); baselines: "
                        f"imagehash pHash <= {PHASH_BASELINE}, PDQ <= {PDQ_BASELINE}",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("transform", "family", "target", "n", "recall", "pHash", "PDQ"):
        table.add_column(col, justify="left" if col in ("transform", "family") else "right", no_wrap=True)
    prev = None
    for r in table_rows(report):
        if prev == "transform" and r["kind"] != "transform":
            table.add_section()
        prev = r["kind"]
        miss = r["target"] is not None and r["recall"] is not None and r["recall"] < r["target"]
        rec = _pct(r["recall"])
        rec = f"[red]{rec}[/]" if miss else (f"[green]{rec}[/]" if r["target"] is not None else rec)
        style = "bold" if r["kind"] != "transform" else None
        table.add_row(r["transform"], r["family"], "" if r["target"] is None else _pct(r["target"]),
                      str(r["planted"]), rec, _pct(r["phash"]), _pct(r["pdq"]), style=style)
    table.add_section()
    table.add_row("false matches", "", "", "", str(s["false_matches"]), str(s["baseline_phash"]["false_matches"]),
                  str(s["baseline_pdq"]["false_matches"]))
    table.add_row("precision", "", "", "", _pct(s["precision"]), _pct(s["baseline_phash"]["precision"]),
                  _pct(s["baseline_pdq"]["precision"]))
    console.print(table)
    tm, cost = report["timing"], report["cost"]
    ir = report["index_recall"]
    console.print(
        f"search {tm['search_per_photo_ms']} ms/photo (batch), single photo p50 {tm['single_photo']['p50_ms']} ms "
        f"p95 {tm['single_photo']['p95_ms']} ms; {cost['entries_per_image']} entries and "
        f"{cost['index_bytes_per_image']} bytes per dataset image; index recall vs exact scan "
        f"{ir.get('recall')}; run {tm['total_s']} s",
        highlight=False,
    )
