#!/usr/bin/env python3
"""Checking a folder of 12 MP photos: `matcher search FOLDER` end to end, against decode and imagehash.

The folder: --n 12 MP JPEG files (4000x3000, q90): --distinct different photos (seeded crops and
mirrors of the bench photos from ../shared/get-bench-photos, made once into --work; encoding 12 MP
JPEGs is slow) repeated under new names (hard links: each is decoded and searched like any file).
The index (built once into --work): photos unrelated to the folder (the bench corpus's faces and
same-scene photos, benchmarks/get-bench-corpus; its distractors are crops of the very wallpapers the
folder is made of, so they would match) plus web-size copies (640 px, q80) of --planted of the
distinct photos, so that about planted/distinct of the folder has a match, as in a person's folder
where a few photos were scraped. Pass --index to search another index instead. What a larger index
adds per photo is the FAISS lookup of its ~150 variant codes: see benchmarks/bench_search_scale.py.

Same run, same files, all cores (one process per core):
* `matcher search --index IDX --json FOLDER` as a user runs it (wall clock, whole command);
* Pillow's draft decode alone (at >= 512 px);
* matcher's own decode (>= 256 px) and face detection: the first two steps of every photo's search;
* `imagehash.phash(Image.open(p))` (the usual way to hash a folder; no search at all);
* CPU per photo of `matcher search --workers 0` and of imagehash in one process (--cpu-sample photos), which a
  busy machine does not distort.

    .venv/bin/python benchmarks/bench_search_folder.py [--n 1000] [--work DIR] [--index DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_PHOTOS, ROOT, header, photos  # noqa: E402

SIZE = (4000, 3000)


def _make_one(task: tuple[str, str, int]) -> None:
    src, dst, seed = task
    rng = np.random.default_rng(seed)
    im = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
    w, h = im.size
    k = rng.uniform(0.75, 1.0)
    cw, ch = min(w, round(h * k * 4 / 3)), min(h, round(w * k * 3 / 4))
    l, t = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    im = im.crop((round(l), round(t), round(l) + cw, round(t) + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im.resize(SIZE, Image.Resampling.BICUBIC).save(dst, quality=90)


def make_folder(src: list[Path], out: Path, n: int, distinct: int, seed: int, workers: int) -> list[Path]:
    """n files: ``distinct`` different 12 MP photos (encoding 12 MP JPEGs is slow), repeated under new names."""
    out.mkdir(parents=True, exist_ok=True)
    base = out / "distinct"
    base.mkdir(exist_ok=True)
    originals = [base / f"{i:04d}.jpg" for i in range(min(n, distinct))]
    todo = [(str(src[i % len(src)]), str(f), seed * 100003 + i) for i, f in enumerate(originals) if not f.exists()]
    if todo:
        print(f"# making {len(todo)} 12 MP photos in {base} (once)", flush=True)
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_make_one, todo, chunksize=2))
    folder = out / f"folder-{n}-{distinct}"
    folder.mkdir(exist_ok=True)
    files = [folder / f"IMG_{i:04d}.jpg" for i in range(n)]
    for i, f in enumerate(files):
        if not f.exists():
            os.link(originals[i % len(originals)], f)
    return files


def _textured(p: Path) -> bool:
    """Not a smooth gradient wallpaper (matcher refuses nearly uniform pictures: nothing to search)."""
    with Image.open(p) as im:
        im.draft("L", (64, 64))
        return float(np.asarray(im.convert("L").resize((32, 32))).std()) >= 16


def build_index(index: Path, corpus: Path, planted: list[Path]) -> Path:
    """Unrelated photos + a web-size copy of each planted photo (built once)."""
    if (index / "meta.json").exists():
        return index
    unrelated = [corpus / "faces", corpus / "same-scene"]
    if not all(d.is_dir() for d in unrelated):
        sys.exit(f"no bench corpus under {corpus}: run benchmarks/get-bench-corpus first, or pass --index")
    copies = index.parent / (index.name + "-copies")
    copies.mkdir(parents=True, exist_ok=True)
    for p in planted:
        im = Image.open(p)
        im.thumbnail((640, 640), Image.Resampling.LANCZOS)
        im.save(copies / p.name, quality=80)
    print(f"# building the index {index} (once): {unrelated} + {len(planted)} copies", flush=True)
    for src, name in ((unrelated[0], "faces"), (unrelated[1], "same-scene"), (copies, "scraped")):
        r = subprocess.run([sys.executable, "-m", "matcher", "add", "--index", str(index), "--dataset", name, str(src)],
                           cwd=ROOT, capture_output=True, text=True)
        if not (index / "meta.json").exists():
            sys.exit(f"matcher add failed ({r.returncode}):\n{r.stderr}")
    return index


def _decode(p: str) -> None:
    with Image.open(p) as im:
        im.draft("L", (512, 512))
        im.load()


def _decode_faces(p: str) -> int:
    """The first two steps of a search, as matcher.pipeline.photo.query_one takes them: decode, find faces."""
    import numpy as np

    from matcher.imaging.faces import detect_faces
    from matcher.imaging.images import load_image
    from matcher.pipeline.photo import QUERY_DRAFT, QUERY_SIDE

    img = load_image(p, draft=("L", QUERY_DRAFT)).image.convert("L")
    img.thumbnail((QUERY_SIDE, QUERY_SIDE), Image.Resampling.LANCZOS)
    return len(detect_faces(np.asarray(img)))


def _imagehash(p: str) -> str:
    import imagehash

    return str(imagehash.phash(Image.open(p)))


def pool_time(fn, files: list[Path], workers: int) -> float:
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        list(pool.map(fn, [str(f) for f in files[:workers]]))  # start the workers
        t = time.perf_counter()
        list(pool.map(fn, [str(f) for f in files], chunksize=8))
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--distinct", type=int, default=60, help="different photos among the n files")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/matcher/bench-12mp")
    ap.add_argument("--index", type=Path, default=None, help="search this index instead of the bench's own")
    ap.add_argument("--planted", type=int, default=3, help="distinct photos with a copy in the index")
    ap.add_argument("--corpus", type=Path, default=Path.home() / ".cache/matcher/bench-corpus")
    ap.add_argument("--photos", type=Path, default=BENCH_PHOTOS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scaling", type=int, default=200, help="photos searched with 1 worker and with all cores")
    ap.add_argument("--cpu-sample", type=int, default=100, help="photos whose CPU cost is measured in one process")
    a = ap.parse_args()
    src = [p for p in photos(a.photos, min_side=1000) if _textured(p)]
    if not src:
        sys.exit(f"no photos under {a.photos}: run ../shared/get-bench-photos first")
    cores = len(os.sched_getaffinity(0))
    header("bench_search_folder", photos=a.n, distinct=a.distinct, size=f"{SIZE[0]}x{SIZE[1]} JPEG q90", source=a.photos, seed=a.seed,
           cores=cores, index=a.index)
    files = make_folder(src, a.work / f"12mp-{a.seed}", a.n, a.distinct, a.seed, cores)
    folder = files[0].parent
    if a.index is None:
        a.index = build_index(a.work / f"index-v2-{a.seed}-{a.distinct}-{a.planted}", a.corpus,
                              sorted((folder.parent / "distinct").glob("*.jpg"))[: a.planted])
    info = subprocess.run([sys.executable, "-m", "matcher", "info", "--index", str(a.index)], cwd=ROOT,
                          capture_output=True, text=True)
    print("# index: " + " ".join(info.stdout.split())[:160])

    dec = pool_time(_decode, files, cores)
    dec_faces = pool_time(_decode_faces, files, cores)
    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "matcher", "search", "--index", str(a.index), "--json", str(folder)],
                         cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if run.returncode not in (0, 1):
        sys.exit(f"matcher search failed ({run.returncode}):\n{run.stderr}")
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(results) == len(files), (len(results), len(files))
    errors = sum(1 for r in results if r["error"])
    ih = pool_time(_imagehash, files, cores)
    # scaling over cores: the same subset searched with one worker process, then with one per core
    sub = Path(folder.parent / "scaling")
    sub.mkdir(exist_ok=True)
    for f in files[: a.scaling]:
        if not (sub / f.name).exists():
            os.link(f, sub / f.name)
    scaling = {}
    for w in (1, cores):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "matcher", "search", "--index", str(a.index), "--json",
                            "--workers", str(w), str(sub)], cwd=ROOT, capture_output=True, text=True)
        scaling[w] = time.perf_counter() - t
        assert r.returncode in (0, 1), r.stderr

    # CPU per photo of the same work in one process (a busy machine does not distort it): matcher search
    # --workers 0 against imagehash in a loop, on the first --cpu-sample photos
    import resource

    sample = sub.parent / f"cpu-{a.cpu_sample}"
    sample.mkdir(exist_ok=True)
    for f in files[: a.cpu_sample]:
        if not (sample / f.name).exists():
            os.link(f, sample / f.name)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([sys.executable, "-m", "matcher", "search", "--index", str(a.index), "--json", "--workers", "0",
                        str(sample)], cwd=ROOT, capture_output=True, text=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert r.returncode in (0, 1), r.stderr
    search_cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    t = time.process_time()
    for f in files[: a.cpu_sample]:
        _imagehash(str(f))
    ih_cpu = time.process_time() - t
    k = min(a.cpu_sample, len(files))

    n = len(files)
    print(f"\n{n} photos of 12 MP, {cores} processes")
    print(f"  matcher search FOLDER (whole command)  {wall:7.1f} s   {wall / n * 1000:6.1f} ms per photo   "
          f"({sum(1 for r in results if r['matches'])} with matches, {errors} unreadable)")
    print(f"  Pillow draft decode alone              {dec:7.1f} s   search = {wall / dec:.2f}x decode")
    print(f"  matcher's decode + face detection      {dec_faces:7.1f} s   (a search's first two steps; "
          f"search = {wall / dec_faces:.2f}x them)")
    print(f"  imagehash.phash(Image.open(p))         {ih:7.1f} s   search is {ih / wall:.2f}x faster")
    print(f"  CPU per photo, one process, {k} photos: matcher search --workers 0 {search_cpu / k * 1000:.1f} ms "
          f"(start-up included), imagehash {ih_cpu / k * 1000:.1f} ms: search is {ih_cpu / search_cpu:.2f}x")
    print(f"  {a.scaling} photos: --workers 1 {scaling[1]:.1f} s, --workers {cores} {scaling[cores]:.1f} s: "
          f"{scaling[1] / scaling[cores]:.2f}x on {cores} cores")


if __name__ == "__main__":
    main()
