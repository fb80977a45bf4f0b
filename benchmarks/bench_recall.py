#!/usr/bin/env python3
"""Recall of planted copies on the bench corpus, against imagehash pHash and PDQ baselines (matcher bench).

    .venv/bin/python benchmarks/bench_recall.py [--corpus DIR] [--out DIR] [--seed 0]
        [--transforms a,b,...] [--max-distractors N] [--workers N] [--latency-sample N]

The corpus (benchmarks/get-bench-corpus, default ~/.cache/matcher/bench-corpus or
$MATCHER_BENCH_CORPUS) holds originals/, faces/ (with boxes.csv), same-scene/ (NAME-a / NAME-b)
and distractors/; each part but originals/ is optional. Without a corpus the originals are the
bench photos (~/.cache/matcher/bench-photos, ../shared/get-bench-photos) and there are no
faces, same-scene pairs or distractors. Writes OUT/report.json, OUT/report.md, OUT/sweep.png
(OUT defaults to ~/.cache/matcher/bench-out) and prints the table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_PHOTOS, header, photos  # noqa: E402

from matcher.bench import (PDQ_BASELINE, PHASH_BASELINE, SWEEP_MAX, print_table, run_bench,  # noqa: E402
                           write_reports)
from matcher.engine.api import DEFAULT_THRESHOLD  # noqa: E402

CORPUS = Path(os.environ.get("MATCHER_BENCH_CORPUS", Path.home() / ".cache/matcher/bench-corpus"))
OUT = Path.home() / ".cache/matcher/bench-out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--transforms", help="comma-separated subset of matcher.imaging.transforms.TRANSFORMS")
    ap.add_argument("--max-distractors", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--latency-sample", type=int, default=50)
    ap.add_argument("--no-local-features", action="store_true",
                    help="index without the local-feature tier (the 64-bit codes only)")
    a = ap.parse_args()

    def part(name: str) -> Path | None:
        p = a.corpus / name
        return p if p.is_dir() and any(p.iterdir()) else None

    originals = part("originals")
    if originals is not None:
        faces = part("faces")
        if faces is not None and not (faces / "boxes.csv").is_file():
            print(f"# {faces} has no boxes.csv: faces skipped", file=sys.stderr)
            faces = None
        same_scene, distractors, source = part("same-scene"), part("distractors"), str(a.corpus)
    elif BENCH_PHOTOS.is_dir():
        originals, faces, same_scene, distractors = BENCH_PHOTOS, None, None, None
        source = f"{BENCH_PHOTOS} (no bench corpus at {a.corpus}: originals only)"
    else:
        sys.exit(f"no bench corpus at {a.corpus} and no bench photos at {BENCH_PHOTOS}: "
                 "run benchmarks/get-bench-corpus (or ../shared/get-bench-photos)")
    names = [n.strip() for n in a.transforms.split(",") if n.strip()] if a.transforms else None
    header(
        "bench_recall",
        corpus=source,
        originals=len(photos(originals)),
        faces=len(photos(faces)) if faces else 0,
        same_scene_files=len(photos(same_scene)) if same_scene else 0,
        distractors=len(photos(distractors)) if distractors else 0,
        max_distractors=a.max_distractors,
        transforms=",".join(names) if names else "all",
        seed=a.seed,
        workers=a.workers if a.workers is not None else "one per core",
        thresholds=f"default {DEFAULT_THRESHOLD}, sweep 0..{SWEEP_MAX}; baselines phash<={PHASH_BASELINE}, "
                   f"PDQ<={PDQ_BASELINE}",
        out=a.out,
        local_features=not a.no_local_features,
    )
    sys.stdout.flush()
    report = run_bench(
        originals, a.out, distractors=distractors, faces=faces, same_scene=same_scene, seed=a.seed, transforms=names,
        max_distractors=a.max_distractors, workers=a.workers, latency_sample=a.latency_sample,
        local_features=not a.no_local_features,
        log=lambda msg: print(f"# {msg}", file=sys.stderr, flush=True),
    )
    paths = write_reports(report, a.out)
    print_table(report)
    print(f"# reports: {paths['markdown']}, {paths['json']}, {paths['plot']}")


if __name__ == "__main__":
    main()
