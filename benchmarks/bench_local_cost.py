#!/usr/bin/env python3
"""Cost of the local-feature tier at scale: bytes per image, build time, and the lookup of one photo.

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_local_cost.py [--photos DIR] [--real 500]
        [--sizes 10000,30000,100000] [--queries 20] [--seed 0]

Real ORB keypoints (matcher.hashing.local_features.extract, as ``add --local-features`` keeps them) of
``--real`` photos of DIR (default: the bench corpus's distractors) are the seed; a tier of N images is
made of them, each copy's descriptors with 8 of 256 bits flipped at random (seeded), so that no two
images are identical. The tier is written through matcher.index.local.LocalIndex (the real files,
the real FAISS layout: flat up to FLAT_MAX descriptors, IVF above). A query is the 500 keypoints of
one of the real photos; its lookup (LocalIndex.search: FAISS k-NN, votes, candidates) is timed.
The figures at 1M images are extrapolated from the measured sizes (printed as such).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header  # noqa: E402

from matcher.hashing.local_features import INDEX_FEATURES, QUERY_FEATURES, extract  # noqa: E402
from matcher.imaging.images import iter_image_files, load_image  # noqa: E402
from matcher.index.local import FILES, LocalIndex  # noqa: E402

CORPUS = Path(os.environ.get("MATCHER_BENCH_CORPUS", Path.home() / ".cache/matcher/bench-corpus"))


def _gray(path: Path) -> np.ndarray:
    img = load_image(path, draft=("L", 256)).image.convert("L")
    return np.asarray(img)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=CORPUS / "distractors")
    ap.add_argument("--real", type=int, default=500)
    ap.add_argument("--sizes", default="10000,30000,100000")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nprobe", type=int, default=None, help="IVF lists probed (default: matcher.index.local's)")
    ap.add_argument("--query-features", type=int, default=QUERY_FEATURES)
    a = ap.parse_args()
    import matcher.index.local as local_tier

    if a.nprobe:
        local_tier.IVF_NPROBE = a.nprobe
    sizes = [int(s) for s in a.sizes.split(",")]
    header("bench_local_cost", photos=a.photos, real=a.real, sizes=a.sizes, queries=a.queries, seed=a.seed,
           features=INDEX_FEATURES, query_features=a.query_features,
           nprobe=a.nprobe or local_tier.IVF_NPROBE)
    every = list(iter_image_files(a.photos))
    pick = np.random.default_rng([a.seed, 1]).choice(len(every), min(a.real, len(every)), replace=False)
    files = [every[i] for i in sorted(pick.tolist())]
    t0 = time.perf_counter()
    seeds = [extract(_gray(f), INDEX_FEATURES) for f in files]
    t_index = (time.perf_counter() - t0) / len(files)
    queries = []
    t0 = time.perf_counter()
    for f in files[: a.queries]:
        queries.append(extract(_gray(f), a.query_features)[1])
    t_query = (time.perf_counter() - t0) / len(queries)
    print(f"keypoints per dataset image: {np.mean([len(d) for _, d in seeds]):.1f} (max {INDEX_FEATURES}); "
          f"extract {t_index * 1000:.1f} ms per dataset image (decode included), "
          f"{t_query * 1000:.1f} ms per query photo ({a.query_features} keypoints)")
    rng = np.random.default_rng(a.seed)
    rows = []
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix="local-cost-"))
        try:
            tier = LocalIndex.open(root, create=True)
            t0 = time.perf_counter()
            for i in range(n):
                xy, desc = seeds[i % len(seeds)]
                if i >= len(seeds):
                    flips = rng.integers(0, 256, (len(desc), 8))
                    desc = desc.copy()
                    np.bitwise_xor.at(desc, (np.arange(len(desc))[:, None], flips // 8),
                                      (1 << (flips % 8)).astype(np.uint8))
                tier.add(i + 1, xy, desc)
                if len(tier.pending) >= 5000:
                    tier.flush()
            tier.save()
            build = time.perf_counter() - t0
            size = sum((root / f).stat().st_size for f in FILES if (root / f).exists())
            t_open = time.perf_counter()
            tier = LocalIndex.open(root)
            t_open = time.perf_counter() - t_open
            lat = []
            for q in queries:
                t1 = time.perf_counter()
                tier.search(q)
                lat.append(time.perf_counter() - t1)
            layout = type(tier.index).__name__
            rows.append((n, size / n, build, t_open, float(np.median(lat)) * 1000, float(np.percentile(lat, 95)) * 1000,
                         layout, int(tier.index.ntotal)))
            print(f"{n:>9,} images  {int(tier.index.ntotal):>11,} descriptors  {layout:<18} {size / n:7.0f} B/image  "
                  f"build {build:7.1f} s  open {t_open:5.2f} s  lookup p50 {rows[-1][4]:7.1f} ms  p95 {rows[-1][5]:7.1f} ms",
                  flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    n, per, build, _, p50, _, layout, _ = rows[-1]
    f = 1_000_000 / n
    g = f if layout == "IndexBinaryFlat" else f ** 0.5
    print(f"# at 1,000,000 images (extrapolated from {n:,}, {layout}: bytes and build linear; a flat lookup grows "
          f"as n; an IVF lookup scans nprobe/nlist of the descriptors and nlist grows as sqrt(n), so as sqrt(n)): "
          f"{per * 1e6 / 1e9:.2f} GB on disk (descriptors held in RAM by FAISS: {32 * INDEX_FEATURES * 1e6 / 1e9:.1f} GB), "
          f"build ~{build * f / 60:.0f} min, lookup p50 ~{p50 * g:.0f} ms per photo")


if __name__ == "__main__":
    main()
