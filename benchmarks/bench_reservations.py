"""What reading reservations costs per image, against hashing the same image (the baseline, same run), and a
curator's `matcher filter --respect all` over a manifest mixing every kind of reservation.

Per image, in one process, on the sample dataset's photos (21 JPEGs, 640 px) written four ways: plain (no
metadata), with IPTC XMP (Pillow), with a C2PA manifest signed by the C2PA SDK (read with the SDK, and
read without it: JUMBF walked here, "present, not verified"):

* embedded: XMP packet scan + parse, and the C2PA store read (matcher.ingest.reservations.embedded_of);
* headers: X-Robots-Tag / TDMRep parsing of a response's headers;
* site: one origin's three files fetched from a loopback server (first image of a site), then the cached
  verdict for each later image of that site;
* baseline: hashing the image as `matcher add` does (matcher.pipeline.photo.index_batch, one process).

Then the mixed run: the manifest of tests/test_reservations.py (local files with each embedded kind, a
loopback site sending each header and serving tdmrep.json, robots.txt, ai.txt, a second site whose files are
broken, a copy of a photo in an opt-out registry), through the real CLI; prints its summary and log.

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_reservations.py [--rounds 5] [--repeat 10]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from common import header  # noqa: E402


def _per_image(fn, items, rounds: int) -> float:
    """Median over ``rounds`` of the mean seconds per item of ``fn(item)``."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for it in items:
            fn(it)
        times.append((time.perf_counter() - t) / len(items))
    return statistics.median(times)


def costs(tmp: Path, rounds: int, repeat: int) -> None:
    from matcher.hashing.hashers import DEFAULT_HASHER, get_hasher
    from matcher.imaging.images import DEFAULT_LIMITS
    from matcher.ingest.policy import FetchSettings
    from matcher.ingest.reservations import embedded_of
    from matcher.ingest.sites import SiteCache
    from matcher.pipeline.photo import HashSpec, index_batch
    from matcher.provenance.reservations.cawg import read_c2pa
    from matcher.provenance.reservations.web import from_headers
    from matcher.provenance.reservations.xmp import data_mining_xmp
    from reservations_kit import PHOTOS, save_jpeg, sign_c2pa, site, site_images

    kinds: dict[str, list[bytes]] = {"plain": [], "iptc": [], "c2pa": []}
    for i, p in enumerate(PHOTOS):
        kinds["plain"].append(save_jpeg(p, tmp / f"plain-{i}.jpg").read_bytes())
        kinds["iptc"].append(save_jpeg(p, tmp / f"iptc-{i}.jpg", data_mining_xmp("DMI-PROHIBITED-AIMLTRAINING")).read_bytes())
        kinds["c2pa"].append(sign_c2pa(tmp / f"plain-{i}.jpg", tmp / f"c2pa-{i}.jpg",
                                       {"cawg.ai_training": {"use": "notAllowed"}}).read_bytes())
    spec = HashSpec.of(get_hasher(DEFAULT_HASHER), True, DEFAULT_LIMITS)
    base = _per_image(lambda b: index_batch(spec, [b]), kinds["plain"], rounds)
    rows = [("hashing (baseline: index_batch, 1 process)", base)]
    for name in ("plain", "iptc", "c2pa"):
        items = kinds[name] * repeat
        rows.append((f"embedded, {name} files", _per_image(embedded_of, items, rounds)))
    rows.append(("embedded, c2pa files without the SDK (unverified)",
                 _per_image(lambda b: read_c2pa(b, use_binding=False), kinds["c2pa"] * repeat, rounds)))
    hdrs = {"x-robots-tag": ["noai, noimageai", "GPTBot: noml"], "tdm-reservation": ["1"], "tdm-policy": ["https://x"]}
    rows.append(("headers (X-Robots-Tag, TDMRep)", _per_image(lambda _: from_headers(hdrs), range(20000), rounds)))
    server = site(site_images())
    with server.running():
        settings = FetchSettings(allow_private=True, retries=0)
        first, later = [], []
        for _ in range(rounds):
            with SiteCache(settings) as cache:
                t = time.perf_counter()
                cache.verdict(server.url("/private/p.jpg"))
                first.append(time.perf_counter() - t)
                urls = [server.url(p) for p in site_images()] * 200
                t = time.perf_counter()
                for u in urls:
                    cache.verdict(u)
                later.append((time.perf_counter() - t) / len(urls))
        rows.append(("site: first image of a site (3 files fetched, loopback)", statistics.median(first)))
        rows.append(("site: each later image of that site (cached verdict)", statistics.median(later)))
    print("\n| check | per image | vs hashing |\n|---|---|---|")
    for name, sec in rows:
        print(f"| {name} | {sec * 1e3:.3f} ms | {sec / base:.3f}x |")


def mixed_run(tmp: Path) -> None:
    from conftest import SAMPLE
    from reservations_kit import REGISTERED, embedded_files, site, site_images, write_manifest

    reg = tmp / "optout.json"
    subprocess.run([sys.executable, "-m", "matcher", "optout", "add", "--registry", str(reg), "--workers", "0",
                    str(SAMPLE / "my-photos" / "IMG_0002.jpg")], check=True, capture_output=True)
    files = embedded_files(tmp / "files")
    main = site(site_images())
    other = site({"/x.jpg": site_images()["/img/plain.jpg"]},
                 files={"/.well-known/tdmrep.json": b"{not json", "/robots.txt": b"User-agent: *\nDisallow:\n"},
                 errors={"/ai.txt": 500})
    with main.running(), other.running():
        rows = [(k, "", str(p)) for k, p in files.items()] + [("registered", "", str(REGISTERED))]
        rows += [(p, main.url(p), "") for p in site_images()] + [("other-site", other.url("/x.jpg"), "")]
        manifest = write_manifest(tmp / "manifest.csv", rows)
        cmd = ["matcher", "filter", "manifest.csv", "--respect", "all", "--registry", "optout.json", "--out",
               "clean.csv", "--log", "log.csv", "--allow-private-urls", "--retries", "0"]
        p = subprocess.run([sys.executable, "-m", *cmd], cwd=tmp, capture_output=True, text=True)
    print(f"\n## mixed run: {len(rows)} rows ({manifest.name}: local files, two loopback sites, a registry)\n")
    print("$ " + " ".join(cmd))
    print(p.stderr.strip())
    print("\nlog.csv (key, action, source, rule, value, every reservation | notes):")
    with open(tmp / "log.csv", newline="") as f:
        for r in csv.DictReader(f):
            extra = f"  [{r['reservations']}]" if r["reservations"] and r["reservations"] != (
                f"{r['source']}:{r['rule']}={r['value']}") else ""
            notes = f"  notes: {r['notes']}" if r["notes"] else ""
            detail = f" ({r['detail']})" if r["detail"] else ""
            print(f"  {r['key']:<20} {r['action']:<8} {r['source'] + ':' + r['rule'] if r['source'] else '-':<28}"
                  f" {r['value']}{detail}{extra}{notes}")
    with open(tmp / "clean.csv", newline="") as f:
        print("kept: " + ", ".join(r["key"] for r in csv.DictReader(f)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=10, help="passes over the 20 photos per round (embedded checks)")
    args = ap.parse_args()
    header("bench_reservations", rounds=args.rounds, repeat=args.repeat,
           photos="sample/dataset flickr_*.jpg (20, 640 px), re-saved plain / IPTC / C2PA-signed", seed="none (no sampling)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "costs").mkdir()
        costs(tmp / "costs", args.rounds, args.repeat)
        (tmp / "mixed").mkdir()
        mixed_run(tmp / "mixed")


if __name__ == "__main__":
    main()
