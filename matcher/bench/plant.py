"""Stage 1 of ``matcher bench``: plant seeded copies of the photos (and read faces, same-scene pairs, lookalikes)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from matcher.imaging import transforms as T
from matcher.errors import MatcherError
from matcher.imaging.images import iter_image_files, load_image
from matcher.ingest.sources import Source, SourceItem
from matcher.bench.common import APPLY_MAX_SIDE, BenchError, FACE_FAMILY, FACE_J, FACE_TRANSFORM, HOLDOUT, Log, PDQ_BASELINE, _default_workers, _map, _pool, baseline_hashes, sniff_ext


@dataclass(frozen=True)
class CopyRow:
    id: str
    path: str  # relative to OUT
    original: str  # absolute path of the query photo this is a copy of
    transform: str
    family: str
    base: str | None = None  # a derived query (a version with transparency): the original it was made from


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
        original = src
        if name == FACE_TRANSFORM:  # the box is in the full upright photo's pixels
            data = T.face_crop(img, box, rng)
        else:
            if fitted is None:  # what T.apply does first, done once per photo rather than once per copy
                fitted = img
                if max(img.size) > APPLY_MAX_SIDE:
                    fitted = img.copy()
                    fitted.thumbnail((APPLY_MAX_SIDE, APPLY_MAX_SIDE), Image.Resampling.LANCZOS)
            if name in T.ALPHA_QUERY:  # the query is the photo with transparency, written beside the copies
                rgba = T.with_alpha(fitted.convert("RGB"), rng)
                query = Path(out) / "queries" / name / f"{i}.png"
                query.parent.mkdir(parents=True, exist_ok=True)
                rgba.save(query, "PNG")
                data = T.TRANSFORMS[name].fn(rgba, rng)
                original = str(query)
            else:
                data = T.apply(name, fitted, rng)
        rel = f"copies/{name}/{i}.{sniff_ext(data)}"
        with open(Path(out) / rel, "wb") as f:
            f.write(data)
        ph, pdq = baseline_hashes(data)
        rows.append((name, rel, ph, pdq, original))
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

    def _items(self) -> Iterator[SourceItem]:
        it = self.source.items()
        return iter(it) if self.limit is None else islice(it, self.limit)


def check_out_dir(out_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike], *, force: bool = False) -> None:
    """Raise :class:`~matcher.errors.OutputRefused` unless ``out_dir`` may receive a bench run: not a file, not
    one of the bench's input folders (nor inside or around one), and empty, missing or a folder an earlier
    bench wrote (it holds ``copies/.matcher-bench``); another non-empty folder only with ``force``, and even
    then no photo in it is replaced by the bench's files."""
    from matcher.outputs import PNG_SOFTWARE, Output, check_output_dir

    out = Path(out_dir)
    ours = (out / "copies" / ".matcher-bench").exists()
    files = [Output(out / "report.json", "the bench report", "--out", ('"parameters"',)),
             Output(out / "report.md", "the bench report", "--out", ("# matcher bench",)),
             Output(out / "sweep.png", "the threshold plot", "--out", (PNG_SOFTWARE,), image=True),
             Output(out / "manifest.csv", "the bench manifest", "--out", ())]
    if out.is_dir() and any(out.iterdir()) and not ours and not force:
        from matcher.errors import OutputRefused

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
    _clear(out / "queries", ".matcher-bench")
    for name in names + ([FACE_TRANSFORM] if face_list else []):
        (out / "copies" / name).mkdir(parents=True, exist_ok=True)
    (out / "copies" / ".matcher-bench").write_text("made by matcher bench; deleted by the next run\n")
    (out / "queries").mkdir(parents=True, exist_ok=True)
    (out / "queries" / ".matcher-bench").write_text("made by matcher bench; deleted by the next run\n")

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
                for name, rel, ph, pdq, original in res["rows"]:
                    cid = f"{name}/{res['i']}"
                    family = FACE_FAMILY if name == FACE_TRANSFORM else T.TRANSFORMS[name].family
                    row = CopyRow(cid, rel, original, name, family, res["src"] if original != res["src"] else None)
                    rows[cid] = row
                    base[cid] = (ph, pdq)
                    w.writerow([row.id, row.path, row.original, row.transform, row.family])
    finally:
        if pool is not None and _pool_ is None:
            pool.shutdown(cancel_futures=True)
    return Planting(originals, held, names, face_list, rows, base, unreadable, time.perf_counter() - t0)
