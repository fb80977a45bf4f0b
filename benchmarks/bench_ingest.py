#!/usr/bin/env python3
"""Ingest speed: `matcher add` of a URL manifest served on 127.0.0.1, end to end.

A set of web-size JPEGs (seeded crops of the bench photos, 640 px long side, q85; made
once into --work) is served by an aiohttp static server in its own process; the real
CLI (`matcher add --allow-private-urls MANIFEST`) downloads, decodes, hashes and stores
every image. Reported, same run:

* wall-clock rate of `matcher add` (images/s) and per core of this machine;
* the CPU the server used meanwhile (on a real ingest it runs elsewhere);
* baselines: the download alone (the same fetcher, bodies discarded) and the hashing
  alone (`index_batch` in a process pool over the same files from disk).

Then the same files from a folder (issue 20), --rounds rounds interleaved, median of each:

* `matcher add --index NEW FOLDER` as a user runs it (thumbnails and regions on: the default index);
* `matcher add --thumbnails none FOLDER` (regions kept, no thumbnails), where this version has it;
* the same into an index created with ``IndexStore.open(..., regions=False)`` (one entry per image, codes only);
* the baseline a user would write in ten lines (NAIVE below): ``imagehash.phash`` of every file with a
  ``multiprocessing.Pool(cores)``, the hashes saved as JSON; and the same in one process.

    .venv/bin/python benchmarks/bench_ingest.py [--n 3000] [--work DIR] [--seed 0] [--rounds 3] [--folder-only]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_PHOTOS, ROOT, header, photos  # noqa: E402

NAIVE = r"""
import json, sys
from multiprocessing import Pool
from pathlib import Path
import imagehash
from PIL import Image

def phash(p):
    with Image.open(p) as im:
        return p.name, str(imagehash.phash(im))

if __name__ == "__main__":
    folder, out, procs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    files = sorted(folder.glob("*.jpg"))
    if procs > 1:
        with Pool(procs) as pool:
            hashes = dict(pool.map(phash, files, chunksize=16))
    else:
        hashes = dict(map(phash, files))
    Path(out).write_text(json.dumps(hashes))
"""

SERVER = r"""
import sys
from aiohttp import web
root = sys.argv[1]
app = web.Application()
app.router.add_static("/img/", root)
runner = web.AppRunner(app, access_log=None)
import asyncio
async def main():
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    print(port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def make_images(src: list[Path], out: Path, n: int, seed: int) -> list[Path]:
    """n distinct web-size JPEGs: seeded crops (60-100% of each side) of the bench photos, 640 px, q85."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{i:05d}.jpg" for i in range(n)]
    if all(f.exists() for f in files):
        return files
    rng = np.random.default_rng(seed)
    bases = []
    for p in src:
        im = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        im.thumbnail((1600, 1600), Image.Resampling.LANCZOS)
        if np.asarray(im.convert("L").resize((32, 32))).std() >= 16:  # not a smooth gradient wallpaper
            bases.append(im)
    for i, f in enumerate(files):
        im = bases[i % len(bases)]
        w, h = im.size
        kw, kh = rng.uniform(0.6, 1.0, 2)
        l, t = rng.uniform(0, 1 - kw) * w, rng.uniform(0, 1 - kh) * h
        c = im.crop((round(l), round(t), round(l + kw * w), round(t + kh * h)))
        c.thumbnail((640, 640), Image.Resampling.LANCZOS)
        if np.asarray(c.convert("L").resize((32, 32))).std() < 16:  # a flat patch of sky: not a photo
            c = im.copy()
            c.thumbnail((640, 640), Image.Resampling.LANCZOS)
        c.save(f, quality=85)
    return files


def start_server(root: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root)], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def download_only(urls: list[str]) -> float:
    """Seconds to fetch every URL with matcher's fetcher (bodies discarded)."""
    from matcher.ingest.fetch import FetchSettings, fetch_iter

    settings = FetchSettings(allow_private=True)
    t = time.perf_counter()
    n = 0
    for _, body, err in fetch_iter(enumerate(urls), settings):
        assert err is None and body, err
        n += 1
    assert n == len(urls), (n, len(urls))
    return time.perf_counter() - t


def hash_only(files: list[Path], workers: int) -> float:
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from matcher.hashing.hashers import PHash
    from matcher.imaging.images import DEFAULT_LIMITS
    from matcher.pipeline.photo import HashSpec, index_batch

    spec = HashSpec.of(PHash(), True, DEFAULT_LIMITS)
    chunks = [[str(f) for f in files[i : i + 16]] for i in range(0, len(files), 16)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        list(pool.map(index_batch, [spec] * 2, chunks[:2]))  # start the workers
        t = time.perf_counter()
        out = [o for outs in pool.map(index_batch, [spec] * len(chunks), chunks) for o in outs]
        dt = time.perf_counter() - t
    assert len(out) == len(files)
    return dt


def timed(args: list[str]) -> tuple[float, float]:
    """Wall clock and CPU seconds (user + system of the command and the children it waited for)."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def folder_vs_naive(folder: Path, n: int, cores: int, rounds: int) -> None:
    """`matcher add FOLDER` (thumbnails on and off) against the naive imagehash script, interleaved rounds.

    Wall clock with all cores; and CPU per image of the same work in one process (`matcher add --workers 0`
    against the naive script without a pool), which a busy machine does not distort: on an idle machine
    with ``cores`` cores both parallelise over processes, so the CPU ratio is the throughput ratio."""
    import statistics

    from matcher.index.store import IndexStore

    runs: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    helped = subprocess.run([sys.executable, "-m", "matcher", "add", "--help"], cwd=ROOT, capture_output=True, text=True)
    tiers = "--thumbnails" in helped.stdout  # add --thumbnails none (the billions issue's tier), where it exists
    with tempfile.TemporaryDirectory() as tmp:
        naive = Path(tmp) / "naive.py"
        naive.write_text(NAIVE)
        for r in range(rounds):
            for w in ("", "-w0"):
                plain = IndexStore.open(Path(tmp) / f"codes{r}{w}", create=True, writable=True, regions=False)
                plain.close()

            def add(index: str, *extra: str, workers: str | None = None) -> list[str]:
                return ([sys.executable, "-m", "matcher", "add", *extra, "--index", str(Path(tmp) / index)]
                        + (["--workers", workers] if workers else []) + [str(folder)])

            cases = {
                f"naive imagehash + JSON, Pool({cores})": ([sys.executable, str(naive), str(folder),
                                                             str(Path(tmp) / "h.json"), str(cores)], None),
                "naive imagehash + JSON, one process": (None, [sys.executable, str(naive), str(folder),
                                                               str(Path(tmp) / "h.json"), "1"]),
                "matcher add FOLDER (thumbnails on)": (add(f"thumbs{r}"), add(f"thumbs{r}-w0", workers="0")),
                "matcher add FOLDER (codes only: regions=False)": (add(f"codes{r}"),
                                                                   add(f"codes{r}-w0", workers="0")),
            }
            if tiers:
                cases["matcher add --thumbnails none FOLDER"] = (add(f"tier{r}", "--thumbnails", "none"),
                                                                 add(f"tier{r}-w0", "--thumbnails", "none", workers="0"))
            for name, (pooled, alone) in cases.items():
                if pooled:
                    runs.setdefault(name, []).append(timed(pooled)[0])
                if alone:
                    cpu.setdefault(name, []).append(timed(alone)[1])
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = med[f"naive imagehash + JSON, Pool({cores})"]
    print(f"\n{n} web-size JPEGs from a folder, {cores} cores, median of {rounds} interleaved rounds: wall clock")
    for name, t in med.items():
        print(f"  {name:48s} {n / t:7.0f} images/s   {t:6.2f} s   {base / t:5.2f}x the naive Pool({cores})   "
              f"(runs: {', '.join(f'{x:.2f}' for x in runs[name])})")
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    cbase = cmed["naive imagehash + JSON, one process"]
    print(f"\nthe same work in one process (matcher add --workers 0): CPU per image, median of {rounds}")
    for name, c in cmed.items():
        print(f"  {name:48s} {c / n * 1000:7.2f} ms   {cbase / c:5.2f}x the naive script   "
              f"(runs: {', '.join(f'{x:.2f}' for x in cpu[name])} s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/matcher/bench-ingest")
    ap.add_argument("--photos", type=Path, default=BENCH_PHOTOS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the folder comparison")
    ap.add_argument("--folder-only", action="store_true", help="only the folder comparison (no HTTP ingest)")
    a = ap.parse_args()
    src = photos(a.photos, min_side=1000)
    if not src:
        sys.exit(f"no photos under {a.photos}: run ../shared/get-bench-photos first")
    cores = len(os.sched_getaffinity(0))
    header("bench_ingest", images=a.n, image="web-size JPEG, 640 px long side, q85", source=a.photos,
           seed=a.seed, cores=cores, server="aiohttp static, own process, 127.0.0.1")
    files = make_images(src, a.work / f"web-v2-{a.seed}", a.n, a.seed)
    mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"# corpus: {len(files)} files, {mb:.1f} MB in {files[0].parent}")
    folder = a.work / f"folder-{a.seed}-{a.n}"  # exactly these files (the corpus folder may hold more)
    folder.mkdir(exist_ok=True)
    for f in files:
        if not (folder / f.name).exists():
            os.link(f, folder / f.name)
    if a.folder_only:
        folder_vs_naive(folder, len(files), cores, a.rounds)
        return
    proc, port = start_server(files[0].parent)
    try:
        urls = [f"http://127.0.0.1:{port}/img/{f.name}" for f in files]
        with tempfile.TemporaryDirectory() as tmp:
            manifest = Path(tmp) / "manifest.csv"
            manifest.write_text("key,url\n" + "".join(f"{f.stem},{u}\n" for f, u in zip(files, urls)))
            download_only(urls[:200])  # warm the server and the page cache
            dl = download_only(urls)
            srv0 = cpu_seconds(proc.pid)
            t = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "matcher", "add", "--index", str(Path(tmp) / "index"),
                                  "--dataset", "bench", "--allow-private-urls", str(manifest)],
                                 cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - t
            srv_cpu = cpu_seconds(proc.pid) - srv0
            if run.returncode != 0:
                sys.exit(f"matcher add failed ({run.returncode}):\n{run.stderr}")
            print("# matcher add: " + " / ".join(l for l in run.stderr.splitlines() if " added, " in l))
        hs = hash_only(files, cores)
    finally:
        proc.terminate()
        proc.wait()
    n = len(files)
    print(f"\n{n} web-size JPEGs over HTTP on 127.0.0.1, {cores} cores")
    print(f"  matcher add, end to end        {n / wall:8.0f} images/s   {n / wall / cores:6.0f} per core   ({wall:.1f} s)")
    print(f"  the HTTP server's own CPU      {srv_cpu:8.1f} s   (on the same cores; elsewhere in a real ingest)")
    print(f"  baseline: download only        {n / dl:8.0f} images/s   (same fetcher, bodies discarded)")
    print(f"  baseline: hashing only         {n / hs:8.0f} images/s   ({cores} processes, files from disk)")
    print(f"  add / hashing-only rate        {hs / wall:8.2f}x")
    folder_vs_naive(folder, n, cores, a.rounds)


if __name__ == "__main__":
    main()
