"""``matcher duplicates`` at scale: cost per item on a synthetic index of N items (e.g. 100K and 1M).

The index is a real index directory (meta + SQLite catalog in matcher's schema + FAISS laid out for its
size, through :class:`matcher.index.store.IndexStore`), with one 'full' entry and one 64x64 verification
thumbnail per item:

* **bulk items** (all but the planted ones): seeded random 64-bit codes, and a thumbnail from a pool of
  ``--thumb-pool`` seeded random textures (real PNGs, so that the thumbnail edits cost what they cost;
  the pool keeps the build short, the bytes are stored once per row as ``add`` stores them);
* **planted groups** (``--planted`` of the items): a random texture and 1-3 copies of it (JPEG
  recompressed at a smaller size, a 10% crop on every side, mirrored, 15% off one side), each hashed and
  thumbnailed from its own pixels as the dataset side does. They are what the run must find, and they
  give verification real work: every candidate pair is aligned and scored.

Then :func:`matcher.engine.duplicates.find_duplicates` runs in-process (verification on ``--workers``
processes), with the thumbnail edits searched (default) and without (``--no-variants``, stored codes
only). Reported per run: load (catalog scan), search (codes + range search), verify, total, per item,
RSS growth, candidate pairs, and recall of the planted groups (a planted group counts when it comes out
as exactly one group) plus groups made of bulk items (false groups; expected 0).

Real pHash codes cluster more than random ones: a real index gives more candidate pairs per item, each
costing a verification (the per-pair cost is reported separately).

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_duplicates.py --sizes 1e5,1e6
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as matcher/index.py does; before FAISS loads

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import header  # noqa: E402

from matcher.engine.duplicates import find_duplicates  # noqa: E402
from matcher.hashing.hashers.phash import phash_pixels  # noqa: E402
from matcher.engine.api import DEFAULT_THRESHOLD  # noqa: E402
from matcher.index.store import IndexStore  # noqa: E402
from matcher.hashing.verify import DEFAULT_MIN_SCORE, encode_thumb, thumb_array  # noqa: E402




def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def texture(rng: np.random.Generator, side: int = 320) -> Image.Image:
    """A photo-like random greyscale picture: smooth shapes plus finer detail at several scales."""
    out = np.zeros((side, side), np.float32)
    for cells, weight in ((4, 1.0), (10, 0.6), (40, 0.35), (side // 4, 0.15)):
        small = rng.normal(size=(cells, cells)).astype(np.float32)
        out += weight * np.asarray(Image.fromarray(small, "F").resize((side, side), Image.Resampling.BICUBIC))
    out -= out.min()
    out *= 255.0 / max(float(out.max()), 1e-6)
    return Image.fromarray(out.astype(np.uint8), "L")


def _jpeg(img: Image.Image, side: int, q: int) -> Image.Image:
    b = io.BytesIO()
    img.resize((side, side), Image.Resampling.LANCZOS).save(b, "JPEG", quality=q)
    return Image.open(io.BytesIO(b.getvalue())).convert("L")


COPIES = {
    "jpeg": lambda im: _jpeg(im, 240, 60),
    "crop10": lambda im: im.crop((32, 32, 288, 288)),
    "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "crop_side15": lambda im: im.crop((48, 0, 320, 320)),
}


def entry_of(img: Image.Image) -> tuple[bytes, bytes]:
    """(code, thumbnail PNG) of a whole image, as the dataset side computes them (Lanczos to 32 px; 64x64)."""
    px = np.asarray(img.resize((32, 32), Image.Resampling.LANCZOS))
    return np.packbits(phash_pixels(px[None])[0]).tobytes(), encode_thumb(thumb_array(img))


def build(root: Path, n: int, args) -> tuple[list[list[int]], float]:
    """The synthetic index at ``root``; returns the planted groups (item ids) and the build time."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    pool = [encode_thumb(thumb_array(texture(np.random.default_rng([args.seed, 1, k]), 128)))
            for k in range(args.thumb_pool)]
    n_groups = int(n * args.planted / 2.5)  # groups of 2-4 items: 2.5 on average
    planted: list[list[int]] = []
    planted_rows: dict[int, tuple[bytes, bytes]] = {}
    next_id = 1
    picks = list(COPIES)
    for g in range(n_groups):
        base = texture(np.random.default_rng([args.seed, 2, g]))
        members = [base] + [COPIES[picks[k]](base) for k in rng.choice(len(picks), int(rng.integers(1, 4)), replace=False)]
        ids = []
        for img in members:
            planted_rows[next_id] = entry_of(img)
            ids.append(next_id)
            next_id += 1
        planted.append(ids)
    # the planted items get ids spread over the index (their position in the id order should not matter)
    perm = np.random.default_rng([args.seed, 3]).permutation(n) + 1
    remap = {old: int(perm[old - 1]) for old in planted_rows}
    planted = [[remap[i] for i in g] for g in planted]
    planted_by_id = {remap[old]: v for old, v in planted_rows.items()}
    codes = np.frombuffer(rng.bytes(n * 8), np.uint8).reshape(n, 8).copy()

    with IndexStore.open(root, create=True, writable=True) as store:
        db = store.catalog.db
        db.execute("PRAGMA synchronous = OFF")
        step = 50_000
        for start in range(1, n + 1, step):
            stop = min(n, start + step - 1)
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO items (id, dataset, key, url, owner, license, width, height, hash, status, attempts,"
                " added_at, updated_at) VALUES (?, 'synthetic', ?, ?, ?, 'CC BY 2.0', 640, 480, ?, 'ok', 1,"
                " '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')",
                ((i, f"{i:010d}", f"https://img.example.org/{i:010d}.jpg", f"user{i % 100_003}",
                  (planted_by_id[i][0] if i in planted_by_id else codes[i - 1].tobytes()).hex())
                 for i in range(start, stop + 1)),
            )
            db.executemany(
                "INSERT INTO entries (id, item_id, kind, code, thumb) VALUES (?, ?, 'full', ?, ?)",
                ((i, i, *(planted_by_id[i] if i in planted_by_id else (codes[i - 1].tobytes(), pool[i % len(pool)])))
                 for i in range(start, stop + 1)),
            )
            db.execute("COMMIT")
        db.execute("UPDATE meta SET value = ? WHERE key = 'entries_count'", (str(n),))
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'entries_seq'")
        store.catalog.set_meta("entry_id_max", str(n))
        store.reconcile()  # FAISS from the catalog's codes, laid out for its size, saved
        layout = store.faiss.layout
    (root / "planted.txt").write_text("\n".join(" ".join(map(str, g)) for g in planted) + "\n")
    (root / "done").write_text(layout)
    return planted, time.perf_counter() - t0


def run(n: int, args) -> list[dict]:
    root = Path(args.work) / f"dup-{n}-s{args.seed}-p{args.planted}-t{args.thumb_pool}"
    if not (root / "done").exists():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        planted, build_s = build(root, n, args)
        print(f"## N = {n:,}: built in {build_s:.0f} s at {root}", flush=True)
    else:
        planted = [list(map(int, line.split())) for line in (root / "planted.txt").read_text().splitlines()]
        print(f"## N = {n:,}: reusing {root}", flush=True)
    size = sum(p.stat().st_size for p in root.iterdir() if p.is_file())
    planted_sets = {frozenset(g) for g in planted}
    in_planted = set().union(*planted_sets) if planted_sets else set()
    rows = []
    for variants in ([True, False] if args.variants == "both" else [args.variants == "on"]):
        gc.collect()
        r0 = rss()
        c0 = time.process_time()
        with IndexStore.open(root) as store:
            layout = store.faiss.layout
            rep = find_duplicates(store, threshold=args.threshold, min_score=args.min_score, max_motion=None,
                                  across_datasets=False, variants=variants, workers=args.workers)
        grown = rss() - r0
        # CPU seconds (this process's threads, and the verification processes as they report it): on a
        # shared machine the wall-clock time also measures the other users
        cpu = time.process_time() - c0
        if args.workers > 0:
            cpu += rep.stats.verify_cpu_s
        s = rep.stats
        got = {frozenset(m.item.id for m in g.members) for g in rep.groups}
        exact = len(planted_sets & got)
        false_groups = sum(1 for g in got if not g & in_planted)
        verified_pairs = s.verified + s.rejected - s.distance_only
        row = {
            "n": n, "layout": layout, "variants": variants, "bytes": size, "queries": s.queries, "pairs": s.pairs,
            "verified": s.verified, "rejected": s.rejected, "groups": len(rep.groups), "planted": len(planted_sets),
            "exact": exact, "false_groups": false_groups, "load_s": s.load_s, "search_s": s.search_s,
            "verify_s": s.verify_s, "total_s": s.elapsed, "rss": grown,
            "us_per_item": s.elapsed / n * 1e6, "cpu_s": cpu, "cpu_us_per_item": cpu / n * 1e6, "search_us_per_item": (s.load_s + s.search_s) / n * 1e6,
            "ms_per_pair": s.verify_s / max(verified_pairs, 1) * 1e3,
            "verify_cpu_s": s.verify_cpu_s, "cpu_ms_per_pair": s.verify_cpu_s / max(verified_pairs, 1) * 1e3,
        }
        rows.append(row)
        print(f"   variants {'on ' if variants else 'off'}  {layout}: {s.queries:,} codes, {s.pairs:,} candidate pairs"
              f" ({s.verified:,} verified, {s.rejected:,} rejected); planted groups found exactly {exact:,}/"
              f"{len(planted_sets):,}, false groups {false_groups}; load {s.load_s:.1f} s, search {s.search_s:.1f} s,"
              f" verify {s.verify_s:.1f} s ({row['ms_per_pair']:.1f} ms/pair; CPU {s.verify_cpu_s:.1f} s ="
              f" {row['cpu_ms_per_pair']:.1f} ms/pair), total {s.elapsed:.1f} s ="
              f" {row['us_per_item']:.0f} us/item; CPU {cpu:.1f} s = {row['cpu_us_per_item']:.0f} us/item;"
              f" RSS +{grown / 1e6:,.0f} MB; load average {os.getloadavg()[0]:.1f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1e5,1e6", help="index sizes (items), comma-separated")
    ap.add_argument("--planted", type=float, default=0.01, help="share of the items in planted groups")
    ap.add_argument("--thumb-pool", type=int, default=4096, help="distinct thumbnails of the bulk items")
    ap.add_argument("--variants", choices=["both", "on", "off"], default="both",
                    help="thumbnail edits searched (on), stored codes only (off), or one run of each")
    ap.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD)
    ap.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE)
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="verification processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(Path.home() / ".cache/matcher/dup-bench"),
                    help="scratch folder for the synthetic indexes (kept and reused; never the repository)")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    Path(args.work).mkdir(parents=True, exist_ok=True)
    header("bench_duplicates", sizes=sizes, planted=f"{args.planted:.1%} of the items, groups of 2-4",
           thumb_pool=args.thumb_pool, threshold=args.threshold, min_score=args.min_score, workers=args.workers,
           seed=args.seed, work=args.work, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
           load_average=" ".join(f"{x:.2f}" for x in os.getloadavg()))
    rows = []
    for n in sizes:
        rows += run(n, args)
    print()
    print("| items | layout | edits searched | codes searched | candidate pairs | planted groups found | false groups |"
          " load + search | verify (per pair; CPU per pair) | total | per item | CPU per item | RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['layout']} | {'yes' if r['variants'] else 'no'} | {r['queries']:,} | {r['pairs']:,} |"
              f" {r['exact']:,} / {r['planted']:,} | {r['false_groups']} | {r['load_s'] + r['search_s']:.1f} s |"
              f" {r['verify_s']:.1f} s ({r['ms_per_pair']:.1f} ms; {r['cpu_ms_per_pair']:.1f} ms) | {r['total_s']:.1f} s |"
              f" {r['us_per_item']:.0f} us |"
              f" {r['cpu_us_per_item']:.0f} us |"
              f" {r['rss'] / 1e6:,.0f} MB |")


if __name__ == "__main__":
    main()
