#!/usr/bin/env python3
"""The opt-out registry (``matcher filter``): recall of re-hosted copies and false drops, without pixels.

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_optout.py [--corpus DIR] [--out DIR]
        [--seed 0] [--workers N] [--max-distractors N] [--no-index] [--scale 1e3,1e4,1e5]

A registry is built from the bench corpus' photos (``benchmarks/get-bench-corpus``, default
~/.cache/matcher/bench-corpus): every original (the ~10% held out by the split have no copies: any
drop charged to them is false), every face photo and the first shot of every same-scene pair. The
dataset screened against it holds one seeded copy of each member original per transform of
:mod:`matcher.imaging.transforms` (as ``matcher bench`` plants them), a tight face crop of each face photo,
the second shot of each same-scene pair, and the real distractors.

Reported:

* **recall** per transform family: a copy counts when it is dropped *for its own photo's entry*;
* **false drops**: distractors dropped, copies dropped for another photo's entry, images dropped for
  a held-out photo; same-scene second shots dropped for their pair's entry are listed apart (consecutive
  video frames are expected to go: without the person's pixels they cannot be told from a copy);
* a **sweep** of the 64-bit candidate threshold and the 256-bit confirmation threshold (one exhaustive
  pass: every candidate's tries are all confirmed), and what the 64-bit codes alone would drop;
* **time per dataset image** of the real ``filter`` (a CSV manifest of local files, ``--workers``
  processes), and in one process: hashing alone vs hashing + screening;
* with an index of the same dataset (unless ``--no-index``): ``remove --registry`` confirming on the
  index's 64x64 thumbnails only (an index built from URLs has no local files);
* ``--scale``: the candidate lookup against registries of N photos (synthetic codes) and the
  candidate rate measured here, projected to registries of that size.

Run it under ``flock /tmp/matcher-bench.lock`` (all of it is timed or CPU-heavy).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import header, photos  # noqa: E402

from matcher.imaging import transforms as T  # noqa: E402
from matcher.bench import FACE_FAMILY, plant_copies, same_scene_pairs  # noqa: E402
from matcher.imaging.images import DEFAULT_LIMITS  # noqa: E402
from matcher.optout import (DEFAULT_CONFIRM_THRESHOLD, DEFAULT_THRESHOLD, MAX_TRIES, Registry, Screen,  # noqa: E402
                            filter_batch, filter_manifest, register_photos)
from matcher.optout.registry import RegistryEntry, _hasher  # noqa: E402
from matcher.pipeline.photo import HashSpec, index_batch  # noqa: E402
from matcher.pipeline.pool import make_pool  # noqa: E402

CORPUS = Path(os.environ.get("MATCHER_BENCH_CORPUS", Path.home() / ".cache/matcher/bench-corpus"))
OUT = Path.home() / ".cache/matcher/bench-optout"
SWEEP_T = (6, 8, 10, 12, 14)
SWEEP_C = (16, 24, 28, 32, 36, 40, 48)
FAMILIES = list(T.FAMILIES) + [FACE_FAMILY]


def log(msg: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def build_registry(files: list[str], path: Path, workers: int) -> tuple[Registry, dict[str, str], float]:
    """Register ``files``; returns the registry (saved at ``path``), file -> entry id, seconds per photo."""
    reg = Registry(path=path)
    entry_of = {}
    t0 = time.perf_counter()
    for f, codes, err in register_photos(files, workers=workers):
        if err is not None:
            log(f"cannot register {f}: {err}")
            continue
        e, _ = reg.add(RegistryEntry.make(codes, source_name=Path(f).name))
        entry_of[f] = e.id
    per = (time.perf_counter() - t0) / max(1, len(files))
    reg.save(path)
    return reg, entry_of, per


def sweep_pass(reg_path: Path, paths: list[str], workers: int) -> list[list]:
    """Per dataset image: the registry's candidates with every try confirmed, at the sweep's largest
    threshold: [[entry id, [(d64, variant, kind, confirm d), ...]], ...] (or a failure string)."""
    reg = Registry.load(reg_path)
    reg.threshold = max(SWEEP_T)
    reg.confirm_threshold = max(SWEEP_C)
    tmp = reg_path.with_name("registry-sweep.json")
    reg.save(tmp)
    screen = Screen(Registry.load(tmp))
    spec = HashSpec.of(_hasher(), True, DEFAULT_LIMITS)
    chunks = [paths[i : i + 32] for i in range(0, len(paths), 32)]
    out: list = []
    pool = make_pool(workers) if workers > 0 else None
    try:
        futs = [pool.submit(filter_batch, spec, screen, c, True) for c in chunks] if pool else None
        for k, c in enumerate(chunks):
            res = futs[k].result() if pool else filter_batch(spec, screen, c, True)
            for o in res:
                out.append([[h.entry_id, h.tries] for h in o[1]] if o[0] == "ok" else f"{o[2]}: {o[1]}")
    finally:
        if pool:
            pool.shutdown()
    return out


def dropped_at(cands, t: int, c: int | None) -> set[str]:
    """Entry ids that drop the image at 64-bit threshold ``t`` and confirmation ``c`` (None: no confirmation)."""
    if isinstance(cands, str):
        return set()
    out = set()
    for eid, tries in cands:
        first = [x for x in tries if x[0] <= t][:MAX_TRIES]  # the tries at t are a prefix of those at the max
        if first and (c is None or any(x[3] is not None and x[3] <= c for x in first)):
            out.add(eid)
    return out


def score(rows: list[dict], decided: list[set[str]], members_entry: dict, held_entries: set[str]) -> dict:
    """Recall per family and false drops, from the entry ids that dropped each dataset row."""
    found, planted = Counter(), Counter()
    false = Counter()
    examples = []
    for r, ids in zip(rows, decided):
        if r["role"] == "copy":
            planted[r["family"]] += 1
            own = members_entry.get(r["original"])
            if own in ids:
                found[r["family"]] += 1
            if ids - {own}:
                false["copy dropped for another photo"] += 1
                examples.append((r["id"], sorted(ids - {own})))
        elif r["role"] == "distractor":
            if ids:
                false["distractor"] += 1
                examples.append((r["id"], sorted(ids)))
        elif r["role"] == "same-scene":
            if members_entry.get(r["original"]) in ids:
                false[f"same-scene partner ({r['id']})"] += 1
            if ids - {members_entry.get(r["original"])}:
                false["same-scene other"] += 1
        if ids & held_entries and r["role"] != "same-scene":
            false["dropped for a held-out photo"] += 1
    total = sum(planted.values())
    return {
        "recall": {f: (found[f] / planted[f] if planted[f] else None, found[f], planted[f]) for f in FAMILIES},
        "recall_all": (sum(found.values()) / total if total else None, sum(found.values()), total),
        "false": dict(false),
        "false_drops": sum(v for k, v in false.items() if not k.startswith("same-scene partner")),
        "partners": sorted(k[len("same-scene partner ("):-1] for k in false if k.startswith("same-scene partner")),
        "examples": examples[:20],
    }


def per_image_costs(paths: list[str], reg: Registry, n: int, seed: int) -> dict:
    """In one process: hashing alone vs hashing + screening, on a seeded sample of the dataset."""
    rng = random.Random(seed)
    sample = rng.sample(paths, min(n, len(paths)))
    spec = HashSpec.of(_hasher(), True, DEFAULT_LIMITS)
    screen = Screen(reg)
    index_batch(spec, sample[:5])
    filter_batch(spec, screen, sample[:5])
    t0 = time.perf_counter()
    for i in range(0, len(sample), 16):
        index_batch(spec, sample[i : i + 16])
    t1 = time.perf_counter()
    for i in range(0, len(sample), 16):
        filter_batch(spec, screen, sample[i : i + 16])
    t2 = time.perf_counter()
    return {"images": len(sample), "hash_ms": 1e3 * (t1 - t0) / len(sample),
            "hash_and_screen_ms": 1e3 * (t2 - t1) / len(sample)}


def confirm_cost(rows: list[dict], cands_all: list, reg: Registry, n: int = 200) -> dict:
    """Time to confirm one candidate try as ``filter`` does (alignment search, shortcuts included), on tries
    the sweep found: those of distractors (different photos: the cost at scale) and those of copies."""
    from matcher.optout.registry import GIVE_UP
    from matcher.optout import confirm_distance
    from matcher.pipeline.photo import dataset_region

    comp = reg.compiled()
    ref_of = {(reg.entries[o].id, k): comp.confirms[i] for i, (o, k) in enumerate(zip(comp.owner, comp.kinds))}
    out = {}
    for role in ("distractor", "copy"):
        work = []
        for r, cands in zip(rows, cands_all):
            if r["role"] != role or isinstance(cands, str):
                continue
            for eid, tries in cands:
                for d, variant, kind, _ in tries[:1]:
                    if d <= DEFAULT_THRESHOLD and (eid, variant) in ref_of:
                        work.append((r["path"], kind, ref_of[(eid, variant)]))
        random.Random(0).shuffle(work)
        work = work[:n]
        regions = [dataset_region(_hasher(), p, kind, None, DEFAULT_LIMITS) for p, kind, _ in work]
        t0 = time.perf_counter()
        k = 0
        for (_, _, ref), px in zip(work, regions):
            if not isinstance(px, str):
                confirm_distance(px, ref, give_up=GIVE_UP)
                k += 1
        out[role] = {"tries": k, "ms_per_try": 1e3 * (time.perf_counter() - t0) / max(1, k)}
    return out


def scale_lookup(sizes: list[int], codes_per_photo: int, seed: int) -> list[dict]:
    """Candidate lookup (flat FAISS range search, 1.3 dataset entries per image) against N photos' codes."""
    from matcher.index.binary import BinaryIndex

    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        m = n * codes_per_photo
        codes = rng.integers(0, 256, (m, 8), dtype=np.uint8)
        t0 = time.perf_counter()
        idx = BinaryIndex.build(64, np.arange(m), codes, layout="flat")
        build = time.perf_counter() - t0
        q = rng.integers(0, 256, (130, 8), dtype=np.uint8)
        idx.range_search(q[:10], DEFAULT_THRESHOLD)
        t0 = time.perf_counter()
        for i in range(0, 130, 13):  # 10 "images" of 1.3 entries on average: 13 codes per 10 images
            idx.range_search(q[i : i + 13], DEFAULT_THRESHOLD)
        per_image = (time.perf_counter() - t0) / 100
        out.append({"photos": n, "codes": m, "build_s": build, "lookup_ms_per_image": 1e3 * per_image,
                    "memory_mb": m * 8 / 1e6})
        del idx, codes
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-distractors", type=int, default=None)
    ap.add_argument("--no-index", action="store_true", help="skip the remove --registry check on an index")
    ap.add_argument("--scale", default="1e3,1e4,1e5", help="registry sizes (photos) for the lookup projection")
    a = ap.parse_args()

    originals = a.corpus / "originals"
    if not originals.is_dir():
        sys.exit(f"no bench corpus at {a.corpus}: run benchmarks/get-bench-corpus")
    faces = a.corpus / "faces" if (a.corpus / "faces" / "boxes.csv").is_file() else None
    ss_dir = a.corpus / "same-scene"
    pairs = same_scene_pairs(ss_dir) if ss_dir.is_dir() else []
    distractors = [str(p) for p in photos(a.corpus / "distractors")][: a.max_distractors]
    header("bench_optout", corpus=a.corpus, originals=len(photos(originals)), faces=len(photos(faces)) if faces else 0,
           same_scene_pairs=len(pairs), distractors=len(distractors), seed=a.seed, workers=a.workers,
           threshold=DEFAULT_THRESHOLD, confirm_threshold=DEFAULT_CONFIRM_THRESHOLD, max_tries=MAX_TRIES,
           load=os.getloadavg())
    a.out.mkdir(parents=True, exist_ok=True)

    log("planting copies")
    plant = plant_copies(originals, a.out, seed=a.seed, faces=faces, workers=a.workers)
    held = {plant.originals[i] for i in plant.held}
    face_photos = sorted({p for p, _ in plant.faces})
    to_register = plant.originals + face_photos + [pa for _, pa, _ in pairs]

    log(f"registering {len(to_register)} photos")
    reg_path = a.out / "registry.json"
    reg, entry_of, reg_s = build_registry(to_register, reg_path, a.workers)
    held_entries = {entry_of[p] for p in held if p in entry_of}
    size_json = reg_path.stat().st_size
    import gzip

    size_gz = len(gzip.compress(reg_path.read_bytes()))

    rows = [{"id": cid, "path": str(a.out / r.path), "role": "copy", "original": r.original, "transform": r.transform,
             "family": r.family} for cid, r in plant.rows.items()]
    rows += [{"id": name, "path": pb, "role": "same-scene", "original": pa, "transform": "", "family": ""}
             for name, pa, pb in pairs]
    rows += [{"id": Path(p).name, "path": p, "role": "distractor", "original": "", "transform": "", "family": ""}
             for p in distractors]
    manifest = a.out / "dataset.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, ["id", "path", "role", "original", "transform", "family"])
        w.writeheader()
        w.writerows(rows)
    paths = [r["path"] for r in rows]

    log(f"matcher filter on {len(rows)} images ({a.workers} workers)")
    t0 = time.perf_counter()
    stats = filter_manifest(manifest, reg, a.out / "clean.csv", log=a.out / "filter-log.csv", workers=a.workers)
    filter_s = time.perf_counter() - t0
    by_id: dict[str, set[str]] = defaultdict(set)
    with open(a.out / "filter-log.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["registry_entry"]:
                by_id[r["key"]].add(r["registry_entry"])
    real = score(rows, [by_id.get(r["id"], set()) for r in rows], entry_of, held_entries)

    log("exhaustive sweep pass")
    t0 = time.perf_counter()
    cands = sweep_pass(reg_path, paths, a.workers)
    sweep_s = time.perf_counter() - t0
    sweep = {}
    for t in SWEEP_T:
        sweep[(t, None)] = score(rows, [dropped_at(c, t, None) for c in cands], entry_of, held_entries)
        for c in SWEEP_C:
            sweep[(t, c)] = score(rows, [dropped_at(c_, t, c) for c_ in cands], entry_of, held_entries)
    n_cand = sum(len(c) for c in cands if not isinstance(c, str))
    # candidates among the distractors (a real dataset is almost all photos nobody opted out)
    dis = [c for r, c in zip(rows, cands) if r["role"] == "distractor" and not isinstance(c, str)]
    cand_rate = {t: sum(1 for c in dis for eid, tries in c if any(x[0] <= t for x in tries))
                 / max(1, len(dis) * len(reg)) for t in SWEEP_T}
    n_tries = [min(MAX_TRIES, sum(1 for x in tries if x[0] <= DEFAULT_THRESHOLD)) for c in dis for _, tries in c]
    tries_per = float(np.mean([k for k in n_tries if k])) if any(n_tries) else 1.0

    log("per-image costs in one process")
    costs = per_image_costs([r["path"] for r in rows if r["role"] == "distractor"], reg, 400, a.seed)
    ccost = confirm_cost(rows, cands, reg)

    thumbs = None
    if not a.no_index:
        from matcher.engine.api import add
        from matcher.optout import remove_registered
        from matcher.ingest.open_source import open_source

        log("index of the dataset, then remove --registry on thumbnails only")
        idx = a.out / "index"
        import shutil

        shutil.rmtree(idx, ignore_errors=True)
        add(idx, [open_source(manifest, "dataset")], workers=a.workers)
        t0 = time.perf_counter()
        removed, unconfirmed = remove_registered(idx, reg, local_files=False)
        rm_s = time.perf_counter() - t0
        got: dict[str, set[str]] = defaultdict(set)
        for item, hit in removed:
            got[item.key].add(hit.entry_id)
        thumbs = score(rows, [got.get(r["id"], set()) for r in rows], entry_of, held_entries)
        thumbs["seconds"] = rm_s
        thumbs["unconfirmed"] = len(unconfirmed)

    scale = []
    if a.scale:
        log("lookup against large registries")
        per_photo = round(np.mean([len(e.codes) for e in reg.entries]))
        scale = scale_lookup([int(float(x)) for x in a.scale.split(",") if x], per_photo, a.seed)

    # ---- report ------------------------------------------------------------------------------
    print()
    print(f"registry: {len(reg)} photos ({len(held_entries)} held out, no copies), {len(reg.entries[0].codes)}-"
          f"{max(len(e.codes) for e in reg.entries)} code pairs each; {size_json / len(reg) / 1e3:.1f} KB per photo "
          f"as JSON, {size_gz / len(reg) / 1e3:.1f} KB gzipped; registering took {1e3 * reg_s:.0f} ms per photo "
          f"({a.workers} workers)")
    print(f"dataset: {len(rows)} images: {sum(r['role'] == 'copy' for r in rows)} copies, {len(pairs)} same-scene "
          f"second shots, {len(distractors)} distractors")
    print()
    print(f"## matcher filter at the defaults (threshold {DEFAULT_THRESHOLD}, confirmation {DEFAULT_CONFIRM_THRESHOLD})")
    print()
    print("| family | recall | copies |")
    print("|---|---|---|")
    for f in FAMILIES:
        r, k, n = real["recall"][f]
        if n:
            print(f"| {f} | {r:.3f} | {k}/{n} |")
    r, k, n = real["recall_all"]
    print(f"| **all** | **{r:.3f}** | {k}/{n} |")
    print()
    others = {k: v for k, v in real["false"].items() if not k.startswith("same-scene partner")}
    print(f"false drops: {real['false_drops']} ({others or 'none'}); same-scene second shots dropped for "
          f"their pair: {', '.join(real['partners']) or 'none'}")
    print(f"time: {filter_s:.1f} s for {len(rows)} images = {1e3 * filter_s / len(rows):.1f} ms per image on "
          f"{a.workers} processes ({stats.rows} rows, {stats.dropped} dropped, {stats.unreadable} unreadable); "
          f"one process: hashing alone {costs['hash_ms']:.1f} ms, hashing + screening "
          f"{costs['hash_and_screen_ms']:.1f} ms per image ({costs['images']} distractors); one confirmation try: "
          f"{ccost['distractor']['ms_per_try']:.1f} ms on a distractor's candidate ({ccost['distractor']['tries']} "
          f"tries), {ccost['copy']['ms_per_try']:.1f} ms on a copy ({ccost['copy']['tries']} tries)")
    print("candidates among distractors (a registry entry within the threshold of a dataset entry), per image and "
          "registered photo: "
          + ", ".join(f"t={t}: {cand_rate[t]:.2e}" for t in SWEEP_T))
    print()
    print("## sweep (exhaustive pass: every candidate's tries confirmed)")
    print()
    print("| threshold | confirmation | " + " | ".join(FAMILIES) + " | all | false drops | same-scene pairs dropped |")
    print("|---" * (len(FAMILIES) + 5) + "|")
    for (t, c), s in sweep.items():
        rec = " | ".join(f"{s['recall'][f][0]:.3f}" if s["recall"][f][2] else "-" for f in FAMILIES)
        print(f"| {t} | {c if c is not None else 'none (64-bit only)'} | {rec} | {s['recall_all'][0]:.3f} | "
              f"{s['false_drops']} | {', '.join(s['partners']) or '-'} |")
    if thumbs is not None:
        print()
        r, k, n = thumbs["recall_all"]
        print(f"## remove --registry on the index's thumbnails only: recall {r:.3f} ({k}/{n}); "
              + ", ".join(f"{f} {thumbs['recall'][f][0]:.3f}" for f in FAMILIES if thumbs["recall"][f][2])
              + f"; false drops {thumbs['false_drops']}; pairs "
              f"{', '.join(thumbs['partners']) or '-'}; {thumbs['seconds']:.1f} s")
    if scale:
        print()
        print("## candidate lookup against larger registries (synthetic codes; flat FAISS scan)")
        print()
        ms = ccost["distractor"]["ms_per_try"] * tries_per
        print(f"| registry photos | codes | memory | lookup per image | candidates per image (t={DEFAULT_THRESHOLD}) | "
              f"confirmation per image ({ms:.1f} ms a candidate: {tries_per:.2f} tries) | same, t=12 |")
        print("|---|---|---|---|---|---|---|")
        for s in scale:
            c10, c12 = cand_rate[DEFAULT_THRESHOLD] * s["photos"], cand_rate[12] * s["photos"]
            print(f"| {s['photos']:,} | {s['codes']:,} | {s['memory_mb']:.0f} MB | {s['lookup_ms_per_image']:.2f} ms | "
                  f"{c10:.3f} | {c10 * ms:.1f} ms | {c12 * ms:.1f} ms |")
    report = {
        "registry": {"photos": len(reg), "held_out": len(held_entries), "bytes_json": size_json, "bytes_gz": size_gz,
                     "register_ms_per_photo": 1e3 * reg_s},
        "dataset": {"images": len(rows), "distractors": len(distractors), "same_scene": len(pairs)},
        "filter": {**real, "seconds": filter_s, "ms_per_image": 1e3 * filter_s / len(rows)},
        "costs": costs, "confirm": ccost, "candidate_rate": cand_rate, "tries_per_candidate": tries_per,
        "sweep_seconds": sweep_s,
        "sweep": [{"threshold": t, "confirm": c, **s} for (t, c), s in sweep.items()],
        "thumbnails": thumbs, "scale": scale, "candidates": n_cand,
    }
    (a.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"\nreport: {a.out / 'report.json'}")


if __name__ == "__main__":
    main()
