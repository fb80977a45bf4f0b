#!/usr/bin/env python3
"""Where the time of `matcher add` and `matcher search` goes, stage by stage (one core, in-process).

* add: --web web-size JPEGs (bench_ingest's seeded 640 px crops) added from a folder to a new index, with
  thumbnails (the default), with ``--thumbnails none`` (regions kept, no thumbnail) and codes only (an index
  built with ``regions=False``: one entry per image): decode, regions, filter codes,
  codes, thumbnails (per image, :mod:`matcher.pipeline.photo`), catalog and FAISS (per batch,
  :mod:`matcher.index.store`), and what is left (the add loop, the folder walk).
* search: --photos 12 MP photos (bench_search_folder's folder, ~5% of them with a copy in its index):
  decode, faces, variants, codes, FAISS, catalog, verification, full-detail, and what is left.
* process start-up: the whole command on one file, wall clock (median of --repeat) and the CPU of the command's
  own process (worker processes it starts are not counted: they belong to the fork server), as a user runs it;
  ``python -c "import matcher.cli"`` alone.

Stages are timed by :mod:`matcher.stages` (laps of the process's CPU time, off outside benchmarks). The table is
markdown (docs/speed.md).

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_stages.py [--web 600] [--photos 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import make_images  # noqa: E402
from bench_search_folder import _textured, build_index, make_folder  # noqa: E402
from common import BENCH_PHOTOS, ROOT, header, photos  # noqa: E402

ADD_STAGES = ["decode", "regions", "codes", "filter codes", "thumbnails", "catalog", "faiss"]
SEARCH_STAGES = ["decode", "faces", "variants", "codes", "faiss", "catalog", "verification", "full-detail"]


def profile(run, stages: list[str]) -> tuple[float, dict[str, float]]:
    """CPU seconds of ``run()`` (this process) and those of each stage (``other``: the rest)."""
    from matcher import stages as st

    st.reset()
    st.enable()
    t = time.process_time()
    try:
        run()
    finally:
        st.enable(False)
    wall = time.process_time() - t
    spent = {k: v for k, (v, _) in st.spent().items()}
    out = {k: spent.pop(k, 0.0) for k in stages}
    out.update(spent)
    out["other"] = wall - sum(out.values())
    return wall, out


def profile_add(folder: Path, regions: bool, tier: str = "full") -> tuple[float, dict[str, float]] | None:
    """``tier``: the datasets' thumbnail tier (``add --thumbnails``); None when this version has no tiers."""
    from matcher.index.store import IndexStore
    from matcher.ingest.open_source import open_source
    from matcher.ingest.run import ingest

    with tempfile.TemporaryDirectory() as tmp:
        store = IndexStore.open(Path(tmp) / "index", create=True, writable=True, regions=regions)
        src = open_source(folder, "bench")
        store.register_sources([src])
        if tier != "full":
            if not hasattr(store, "set_thumbnails"):
                store.close()
                return None
            store.set_thumbnails([src.dataset], tier)
        try:
            return profile(lambda: ingest(store, [src], workers=0), ADD_STAGES)
        finally:
            store.close()


def profile_search(index: Path, files: list[Path]) -> tuple[float, dict[str, float], int]:
    from matcher.engine import IndexStore, search

    found = []
    with IndexStore.open(index) as store:
        wall, spent = profile(lambda: found.extend(search(store, files, workers=0)), SEARCH_STAGES)
    return wall, spent, sum(1 for r in found if r.matches)


def command(args, repeat: int) -> tuple[float, float]:
    """Median wall clock and CPU seconds (user + system, the command and its children) of a command
    (``args(i)``: the command of run ``i``)."""
    walls, cpus = [], []
    for i in range(repeat):
        args_i = args(i)
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        r = subprocess.run(args_i, cwd=ROOT, capture_output=True, text=True)
        walls.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        if r.returncode not in (0, 1):
            sys.exit(f"{' '.join(args_i)} failed ({r.returncode}):\n{r.stderr}")
    return statistics.median(walls), statistics.median(cpus)


def table(title: str, n: int, wall: float, spent: dict[str, float], unit: str) -> None:
    print(f"\n{title}: {n} {unit}, {wall:.2f} s of CPU, {wall / n * 1000:.2f} ms per {unit[:-1]}\n")
    print("| stage | ms per " + unit[:-1] + " | share |")
    print("|---|---:|---:|")
    for k, v in spent.items():
        print(f"| {k} | {v / n * 1000:.2f} | {v / wall:.0%} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--web", type=int, default=600, help="web-size JPEGs added")
    ap.add_argument("--photos", type=int, default=100, help="12 MP photos searched")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each one-file command")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bench-photos", type=Path, default=BENCH_PHOTOS)
    ap.add_argument("--corpus", type=Path, default=Path.home() / ".cache/matcher/bench-corpus")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache/matcher")
    a = ap.parse_args()
    src = [p for p in photos(a.bench_photos, min_side=1000) if _textured(p)]
    if not src:
        sys.exit(f"no photos under {a.bench_photos}: run ../shared/get-bench-photos first")
    header("bench_stages", web=a.web, photos=a.photos, repeat=a.repeat, seed=a.seed, cores_used=1,
           commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip())
    web = make_images(src, a.work / "bench-ingest" / f"web-v2-{a.seed}", a.web, a.seed)
    # a folder of just these files (make_images' folder may hold more)
    web_dir = a.work / "bench-ingest" / f"stages-{a.seed}-{a.web}"
    web_dir.mkdir(parents=True, exist_ok=True)
    for f in web:
        if not (web_dir / f.name).exists():
            os.link(f, web_dir / f.name)
    # the search folder: 20 distinct 12 MP photos, one with a copy in the index (5%)
    files = make_folder(src, a.work / "bench-12mp" / f"12mp-{a.seed}", a.photos, 20, a.seed, 2)
    index = build_index(a.work / "bench-12mp" / f"index-v2-{a.seed}-20-1", a.corpus,
                        sorted((files[0].parent.parent / "distinct").glob("*.jpg"))[:1])

    for title, regions, tier in (("add, thumbnails on", True, "full"),
                                 ("add --thumbnails none (regions, no thumbnails)", True, "none"),
                                 ("add, codes only (an index created with regions=False)", False, "full")):
        got = profile_add(web_dir, regions, tier)
        if got is None:
            print(f"\n{title}: not in this version")
        else:
            table(title, len(web), *got, "images")
    wall, spent, matched = profile_search(index, files)
    table(f"search ({matched} of {len(files)} with matches)", len(files), wall, spent, "photos")

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one"
        one.mkdir()
        os.link(web[0], one / web[0].name)
        rows = [("python -c 'import matcher.cli'", lambda i: [py, "-c", "import matcher.cli"]),
                ("matcher --help", lambda i: [py, "-m", "matcher", "--help"]),
                ("matcher add (a folder of one web-size file, new index)",
                 lambda i: [py, "-m", "matcher", "add", "--index", str(Path(tmp) / f"one{i}"), str(one)]),
                ("matcher search (one 12 MP photo)",
                 lambda i: [py, "-m", "matcher", "search", "--index", str(index), str(files[0])])]
        print(f"\nprocess start-up and one file (median of {a.repeat})\n")
        print("| command | wall s | CPU s (its own process) |")
        print("|---|---:|---:|")
        for name, args in rows:
            wall, cpu = command(args, a.repeat)
            print(f"| {name} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
