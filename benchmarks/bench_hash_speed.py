#!/usr/bin/env python3
"""Hashing speed on one core: matcher's hasher vs imagehash.phash(Image.open(p)) vs decode alone.

Same photos, same process, interleaved round by round, best of --repeat rounds (each >= 0.25 s). Photos: the bench photos
(../shared/get-bench-photos), re-encoded once into a temp folder as 12 MP JPEGs
(4000x3000, q90) and as web-size JPEGs (640 and 1024 px long side, q85), so every size is a real photo.
The floor is Pillow's draft decode of each file (what the issue measures against); the same decode through
simplejpeg (libjpeg-turbo without Pillow's Python, the scale matcher.imaging.jpeg uses) is shown beside it.
Also reports the bits by which draft decoding differs from a full decode, and the whole per-image
work of `matcher add` (regions, codes, thumbnails) and of `matcher search` (faces, ~120 variants).

    .venv/bin/python benchmarks/bench_hash_speed.py [--photos DIR] [--n 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import imagehash
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_PHOTOS, header, photos  # noqa: E402

from matcher.hashing.hashers import PHash  # noqa: E402
from matcher.imaging.images import DEFAULT_LIMITS  # noqa: E402
from matcher.pipeline.photo import index_one, query_one  # noqa: E402


def make_set(src: list[Path], out: Path, size: tuple[int, int] | int, quality: int) -> list[Path]:
    files = []
    for i, p in enumerate(src):
        im = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        if isinstance(size, tuple):
            im = ImageOps.fit(im, size, Image.Resampling.LANCZOS)
        else:
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
        f = out / f"{i:03d}.jpg"
        im.save(f, quality=quality)
        files.append(f)
    return files


def timed_all(fns: dict, files, repeat: int, min_s: float = 0.25) -> dict:
    """ms per image of each function: best of ``repeat`` rounds, the functions interleaved round by round
    (machine noise hits them alike), each round passing over the files until ``min_s`` has elapsed."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            n, t = 0, time.perf_counter()
            while True:
                for f in files:
                    fn(f)
                n += len(files)
                el = time.perf_counter() - t
                if el >= min_s:
                    break
            best[k] = min(best[k], el / n * 1000)
    return best


def simplejpeg_decode(n):
    import simplejpeg

    def f(p):
        with open(p, "rb") as fh:
            simplejpeg.decode_jpeg(fh.read(), colorspace="GRAY", min_width=n, min_height=n)
    return f


def draft_decode(n):
    def f(p):
        with Image.open(p) as im:
            im.draft("L", (n, n))
            im.load()
    return f


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, default=BENCH_PHOTOS)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    src = photos(a.photos, min_side=1000)[: a.n]
    if not src:
        sys.exit(f"no photos under {a.photos}: run ../shared/get-bench-photos first")
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    fast, full = PHash(), PHash(draft=None)
    header("bench_hash_speed", photos=len(src), source=a.photos, repeat=a.repeat, cores=1,
           hasher=f"{fast!r}", baseline="imagehash.phash(Image.open(p))")
    with tempfile.TemporaryDirectory() as tmp:
        sets = (("12 MP JPEG (4000x3000 q90)", (4000, 3000), 90), ("web-size JPEG (640 px q85)", 640, 85),
                ("web-size JPEG (1024 px q85, Flickr's 'large')", 1024, 85))
        for label, size, q in sets:
            d = Path(tmp) / f"{label.split()[0]}-{size if isinstance(size, int) else 'full'}"
            d.mkdir()
            files = make_set(src, d, size, q)
            ms = timed_all({
                "base": lambda p: imagehash.phash(Image.open(p)),
                "ours": lambda p: fast.hash_file(p),
                "dec": draft_decode(fast.draft),
                "sj": simplejpeg_decode(fast.draft),
                "nodraft": lambda p: full.hash_file(p),
                "add": lambda p: index_one(fast, True, str(p), DEFAULT_LIMITS),
                "query": lambda p: query_one(fast, True, str(p), DEFAULT_LIMITS),
            }, files, a.repeat)
            base, ours, dec, sj, nodraft = ms["base"], ms["ours"], ms["dec"], ms["sj"], ms["nodraft"]
            add_cost, query_cost = ms["add"], ms["query"]
            diffs = [fast.hash_file(f).hash - full.hash_file(f).hash for f in files]
            print(f"\n{label}: {len(files)} photos, ms per photo (best of {a.repeat})")
            print(f"  imagehash.phash(Image.open(p))   {base:7.2f}")
            print(f"  matcher, full decode             {nodraft:7.2f}   {base / nodraft:5.2f}x baseline")
            print(f"  matcher (draft {fast.draft})             {ours:7.2f}   {base / ours:5.2f}x baseline, "
                  f"{ours / dec:4.2f}x its draft decode")
            print(f"  Pillow draft decode alone        {dec:7.2f}")
            print(f"  simplejpeg decode alone          {sj:7.2f}   (libjpeg-turbo at the smallest scale >= {fast.draft} px)")
            print(f"  matcher add, per dataset image   {add_cost:7.2f}   (decode at >=256 px, regions, codes, thumbnails)")
            print(f"  matcher search, hashing a photo  {query_cost:7.2f}   (decode at >= 256 px, faces, ~150 variants)")
            dist = {k: diffs.count(k) for k in sorted(set(diffs))}
            print(f"  bits differing, draft vs full decode: {dist} (max {max(diffs)}, mean {statistics.mean(diffs):.2f})")


if __name__ == "__main__":
    main()
