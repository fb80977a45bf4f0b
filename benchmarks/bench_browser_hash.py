#!/usr/bin/env python3
"""The web check's browser hasher (matcher/web/static/hasher.js) against the CLI's query side.

For every photo: the CLI hashes it (matcher.pipeline.photo.query_one: working image, faces, ~150 variant
codes); a headless Chromium decodes the same file with hasher.js and hashes it with the CLI's faces
(face detection in the page is faces.js, not measured here). Reported:

* bit differences JS vs Python, id/full and every variant (histogram, mean, p95, max);
* how many photos give *identical* codes when the JS is fed the CLI's own working image (the
  resampling port alone, decoders set aside);
* JS time per photo: decode (createImageBitmap + greyscale + JPEG block average + thumbnail) and
  hashing (all variants), in the page, one photo at a time.

Photos: sample/my-photos, sample/dataset, tests/data, the bench photos (~/.cache/matcher/bench-photos,
large real JPEG/PNG/WebP wallpapers; $MATCHER_BENCH_PHOTOS) when present, and any --photos DIR.

    .venv/bin/python benchmarks/bench_browser_hash.py [--photos DIR ...] [--no-bench-photos] [--exact-boxes]

--exact-boxes sends the crop boxes unrounded (the recipe rounds box fractions to 6 digits, which moves
a few crop edges across a pixel-rounding boundary on 16:9 photos).
Needs /usr/bin/chromium (or --chromium PATH) and Python Playwright (no `playwright install`).
"""

from __future__ import annotations

import argparse
import base64
import http.server
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH_PHOTOS, ROOT, header, photos  # noqa: E402

from matcher.hashing.hashers import get_hasher  # noqa: E402
from matcher.imaging.images import DEFAULT_LIMITS  # noqa: E402
from matcher.engine.recipe import recipe  # noqa: E402
from matcher.pipeline.photo import query_one  # noqa: E402

STATIC = ROOT / "matcher" / "web" / "static"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, Path] = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            body, ctype = b"<!doctype html><meta charset=utf-8><title>bench</title>", "text/html"
        elif path.startswith("/static/") and (STATIC / path[8:]).is_file() and "/" not in path[8:]:
            body, ctype = (STATIC / path[8:]).read_bytes(), "text/javascript"
        elif path in self.files:
            body, ctype = self.files[path].read_bytes(), "application/octet-stream"
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def exact_boxes(rec: dict) -> dict:
    from matcher.imaging import regions
    exact = {f"{dn}/{bn}": list(box) for dn in regions.DIHEDRAL
             for bn, box in regions.query_boxes(fine=dn in ("id", "mirror")).items()}
    for v in rec["variants"]:
        if v["name"] in exact:
            v["box"] = exact[v["name"]]
    return rec


def ham(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def dist(name: str, bits: list[int]) -> None:
    a = np.array(bits)
    hist = np.bincount(a) if a.size else np.zeros(1, int)
    shown = ", ".join(f"{k}: {n}" for k, n in enumerate(hist) if n)
    print(f"{name:<28} n={a.size:>6}  mean {a.mean():.3f}  p95 {np.percentile(a, 95):.0f}  p99 {np.percentile(a, 99):.0f}"
          f"  max {a.max()}  histogram {{{shown}}}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", action="append", type=Path, default=[], help="more photo folders (repeatable)")
    ap.add_argument("--no-bench-photos", action="store_true", help=f"leave out {BENCH_PHOTOS}")
    ap.add_argument("--exact-boxes", action="store_true", help="send unrounded crop boxes in the recipe")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    groups = {"sample + tests/data": photos(ROOT / "sample" / "my-photos", ROOT / "sample" / "dataset",
                                             ROOT / "tests" / "data")}
    if not args.no_bench_photos and BENCH_PHOTOS.is_dir():
        groups[f"bench photos ({BENCH_PHOTOS})"] = photos(BENCH_PHOTOS)
    for d in args.photos:
        groups[str(d)] = photos(d)
    rec = recipe(None)
    if args.exact_boxes:
        rec = exact_boxes(rec)
    hasher = get_hasher("phash")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=ARGS)
    header("browser hasher (hasher.js) vs CLI query side",
           chromium=browser.version, photos=", ".join(f"{k}: {len(v)}" for k, v in groups.items()),
           recipe=f"version {rec['version']}, {len(rec['variants'])} variant specs, query_draft {rec['query_draft']}, "
                  f"query_side {rec['query_side']}, hash_side {rec['hash_side']}, small_side {rec['small_side']}, "
                  f"min_detail {rec['min_detail']}" + (", boxes unrounded (--exact-boxes)" if args.exact_boxes else ""),
           faces="the CLI's (Haar, matcher.imaging.faces) given to both sides")
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{srv.server_address[1]}/")
    page.evaluate("""async () => {
        window.H = await import('/static/hasher.js');
        window.unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
        window.run = async (a) => {
            const blob = await (await fetch(a.url)).blob();
            const t0 = performance.now();
            let d;
            try { d = await H.decodeToWorking(blob, a.rec); } catch (e) { return { error: e.code || e.message }; }
            const t1 = performance.now();
            let hs;
            try { hs = H.hashVariants(d, a.rec, a.faces); } catch (e) { return { error: e.code || e.message }; }
            const t2 = performance.now();
            const same = a.img ? H.hashVariants({ w: a.img.w, h: a.img.h, data: unb64(a.img.d) }, a.rec, a.faces) : null;
            return { w: d.w, h: d.h, mp: d.width * d.height / 1e6, hashes: hs, same, decode: t1 - t0, hash: t2 - t1 };
        };
    }""")

    try:
        files = [(g, p) for g, ps in groups.items() for p in ps]
        for i, (_, p) in enumerate(files):
            Handler.files[f"/f/{i}"] = p
        if files:  # warm-up (JIT), not counted
            page.evaluate("(a) => run(a)", {"url": "/f/0", "rec": rec, "faces": [], "img": None})
        stats = {g: {"full": [], "var": [], "decode": [], "hash": [], "mp": [], "same": 0, "n": 0, "kinds": 0,
                     "skipped": []} for g in groups}
        worst = []
        for i, (g, p) in enumerate(files):
            s = stats[g]
            out = query_one(hasher, True, str(p), DEFAULT_LIMITS)
            if out[0] != "ok":
                r = page.evaluate("(a) => run(a)", {"url": f"/f/{i}", "rec": rec, "faces": [], "img": None})
                s["skipped"].append(f"{p.name} (CLI: {out[2]}, JS: {r.get('error', 'hashed')})")
                continue
            q = out[2]
            img = np.ascontiguousarray(q.image)
            r = page.evaluate("(a) => run(a)", {
                "url": f"/f/{i}", "rec": rec, "faces": [list(map(int, b)) for b in q.faces],
                "img": {"w": img.shape[1], "h": img.shape[0], "d": base64.b64encode(img.tobytes()).decode()}})
            if "error" in r:
                s["skipped"].append(f"{p.name} (CLI hashed it, JS: {r['error']})")
                continue
            py = {v.name: c.tobytes().hex() for v, c in zip(q.variants, q.codes)}
            js = {x["kind"]: x["hash"] for x in r["hashes"]}
            same = {x["kind"]: x["hash"] for x in r["same"]}
            s["n"] += 1
            s["same"] += same == py
            s["kinds"] += len(set(py) ^ set(js))
            d = ham(js["id/full"], py["id/full"])
            s["full"].append(d)
            vb = [ham(js[k], py[k]) for k in py if k in js]
            s["var"] += vb
            s["decode"].append(r["decode"])
            s["hash"].append(r["hash"])
            s["mp"].append(r["mp"])
            worst.append((d, max(vb), p.name, (r["w"], r["h"]) == (img.shape[1], img.shape[0])))
    finally:
        browser.close()
        pw.stop()
        srv.shutdown()

    print()
    print("## bit differences, JS (browser decode) vs CLI, per photo")
    for g, s in stats.items():
        if not s["n"]:
            continue
        print(f"### {g}: {s['n']} photos hashed")
        dist("id/full", s["full"])
        dist("all variants", s["var"])
        print(f"{'same pixels, all codes equal':<28} {s['same']}/{s['n']} photos "
              "(JS fed the CLI's working image and faces)")
        print(f"{'variant sets differing':<28} {s['kinds']} variants in all (kept by one side only: detail near min_detail)")
        for line in s["skipped"]:
            print(f"  not hashed: {line}")
    allf = [x for s in stats.values() for x in s["full"]]
    allv = [x for s in stats.values() for x in s["var"]]
    if allf:
        print("### all photos")
        dist("id/full", allf)
        dist("all variants", allv)
    print()
    print("## JS time per photo (ms, in the page; decode = createImageBitmap + grey + block average + thumbnail)")
    for g, s in stats.items():
        if not s["n"]:
            continue
        mp = np.array(s["mp"])
        print(f"### {g}: median {statistics.median(mp):.2f} MP (max {mp.max():.1f})")
        for k in ("decode", "hash"):
            a = np.array(s[k])
            print(f"{k:<8} median {np.median(a):7.1f}  p95 {np.percentile(a, 95):7.1f}  max {a.max():7.1f}")
        tot = np.array(s["decode"]) + np.array(s["hash"])
        print(f"{'total':<8} median {np.median(tot):7.1f}  p95 {np.percentile(tot, 95):7.1f}  max {tot.max():7.1f}")
    worst.sort(reverse=True)
    print()
    print("## largest differences (id/full bits, worst variant bits, photo)")
    for d, v, name, same_size in worst[:8]:
        print(f"{d:3d} {v:3d}  {name}" + ("" if same_size else "  (working size differs)"))


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"\n# {time.perf_counter() - t:.0f} s")
