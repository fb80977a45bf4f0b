#!/usr/bin/env python3
"""The browser's face detector (matcher/web/static/faces.js) vs OpenCV (matcher.imaging.faces.detect_faces).

Every picture is turned into the CLI's greyscale working image (draft decode, <= 512 px, as
`matcher search` does), then searched for faces by OpenCV in this process and by faces.js in a
headless Chromium (Playwright, /usr/bin/chromium) on the very same pixels. Reports how often the two
find the same number of faces and the same boxes, the IoU of matched boxes, and the time per photo
(faces.js in the page vs cv2 with the thread count matcher sets, one; best of --repeat; the
first call, which includes the JIT warm-up, is reported apart).

Pictures: every image in the repository's sample/ and tests/data/, the benchmark corpus's faces
(~/.cache/matcher/bench-corpus/faces, from benchmarks/get-bench-corpus) when present, --photos DIR,
and --distractors N photos of the corpus's distractors (no faces expected). With --variants, each
face photo is also searched mirrored, cropped to its central 80% and at 60% size.

    .venv/bin/python benchmarks/bench_browser_faces.py [--photos DIR] [--distractors 200] [--variants] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, header, photos  # noqa: E402

from matcher.imaging.faces import detect_faces  # noqa: E402
from matcher.imaging.images import DEFAULT_LIMITS, load_image  # noqa: E402
from matcher.engine.recipe import recipe  # noqa: E402
from matcher.web.cascade import cascade_json  # noqa: E402
from matcher.pipeline.photo import QUERY_DRAFT, QUERY_SIDE  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CORPUS = Path(os.environ.get("MATCHER_BENCH_CORPUS", Path.home() / ".cache/matcher/bench-corpus"))
STATIC = ROOT / "matcher" / "web" / "static"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def working(path: Path) -> np.ndarray:
    """The CLI's greyscale working image of a photo (workers.query_one)."""
    img = load_image(str(path), limits=DEFAULT_LIMITS, draft=("L", QUERY_DRAFT)).image.convert("L")
    img.thumbnail((QUERY_SIDE, QUERY_SIDE), Image.Resampling.LANCZOS)
    return np.ascontiguousarray(np.asarray(img))


def variants(a: np.ndarray) -> dict[str, np.ndarray]:
    h, w = a.shape
    im = Image.fromarray(a)
    return {
        "mirror": np.ascontiguousarray(a[:, ::-1]),
        "crop80": np.ascontiguousarray(a[h // 10: h - h // 10, w // 10: w - w // 10]),
        "x0.6": np.asarray(im.resize((max(1, round(w * 0.6)), max(1, round(h * 0.6))), Image.Resampling.LANCZOS)),
    }


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", route[0])
        self.send_header("Content-Length", str(len(route[1])))
        self.end_headers()
        self.wfile.write(route[1])

    def log_message(self, *args):
        pass


def serve() -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.routes = {
        "/index.html": ("text/html; charset=utf-8", b"<!doctype html><meta charset=utf-8><title>faces</title>"),
        "/static/faces.js": ("text/javascript", (STATIC / "faces.js").read_bytes()),
        "/static/cascade.json": ("application/json", cascade_json()),
    }
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def cv_time(a: np.ndarray, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        detect_faces(a)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, action="append", default=[], help="more face photos (a folder)")
    ap.add_argument("--distractors", type=int, default=0, help="also N corpus distractors (no faces expected)")
    ap.add_argument("--variants", action="store_true", help="also mirrored, cropped and shrunk copies of face photos")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per picture")
    args = ap.parse_args()

    import cv2
    from playwright.sync_api import sync_playwright

    files = photos(ROOT / "sample", ROOT / "tests" / "data", CORPUS / "faces", *args.photos)
    if args.distractors:
        files += photos(CORPUS / "distractors")[: args.distractors]
    pictures: list[tuple[str, np.ndarray]] = []
    for f in files:
        try:
            a = working(f)
        except Exception as e:  # noqa: BLE001 - a picture the CLI cannot read is skipped, as the CLI does
            print(f"# skipped {f}: {e}", file=sys.stderr)
            continue
        name = str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.relative_to(f.parents[1]))
        pictures.append((name, a))
        if args.variants and detect_faces(a):
            pictures += [(f"{name} [{k}]", v) for k, v in variants(a).items()]

    opts = recipe()["faces"]
    threads = cv2.getNumThreads()
    header("bench_browser_faces: faces.js in Chromium vs OpenCV's detectMultiScale",
           pictures=len(pictures), opencv=cv2.__version__, cv2_threads=threads,
           detector=f"detect_side {opts['detect_side']}, scale_step {opts['scale_step']}, "
                    f"min_neighbors {opts['min_neighbors']}, max_faces {opts['max_faces']}")

    srv = serve()
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            print(f"# browser: Chromium {browser.version} (headless)")
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{srv.server_address[1]}/index.html")
            t = time.perf_counter()
            page.evaluate("""async () => {
                window.F = await import('/static/faces.js');
                window.CASCADE = await F.loadCascade('/static/cascade.json');
            }""")
            load_ms = (time.perf_counter() - t) * 1000
            run = """([b64, w, h, opts, repeat]) => {
                const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                let boxes, best = Infinity, first = 0;
                for (let i = 0; i < repeat; i++) {
                    const t = performance.now();
                    boxes = F.detectFaces({w, h, data}, opts, CASCADE);
                    const dt = performance.now() - t;
                    if (i === 0) first = dt;
                    best = Math.min(best, dt);
                }
                return {boxes, best, first};
            }"""
            cold = None
            for i, (name, a) in enumerate(pictures):
                h, w = a.shape
                b64 = base64.b64encode(a.tobytes()).decode("ascii")
                out = page.evaluate(run, [b64, w, h, opts, args.repeat])
                if cold is None:
                    cold = out["first"]
                rows.append({"name": name, "w": w, "h": h, "js": [tuple(b) for b in out["boxes"]], "js_ms": out["best"]})
            browser.close()
    finally:
        srv.shutdown()

    for r, (_, a) in zip(rows, pictures):
        r["cv"] = detect_faces(a)
        r["cv_ms"] = cv_time(a, args.repeat)

    same_count = exact = 0
    ious: list[float] = []
    with_faces = sum(1 for r in rows if r["cv"])
    for r in rows:
        same_count += len(r["js"]) == len(r["cv"])
        exact += r["js"] == r["cv"]  # same boxes in the same order (the page names crops face0, face1, ...)
        for b in r["cv"]:
            ious.append(max((iou(b, g) for g in r["js"]), default=0.0))
        if args.verbose or r["js"] != r["cv"]:
            flag = "" if r["js"] == r["cv"] else "  DIFFERENT"
            print(f"{r['name']:<60} {r['w']:>4}x{r['h']:<4} cv {r['cv']} js {r['js']}"
                  f"  js {r['js_ms']:.1f} ms  cv {r['cv_ms']:.1f} ms{flag}")

    n = len(rows)
    print(f"pictures: {n} ({with_faces} where OpenCV finds a face, {sum(len(r['cv']) for r in rows)} faces)")
    print(f"same number of faces: {same_count}/{n}; identical boxes in the same order: {exact}/{n}")
    if ious:
        q = np.quantile(ious, [0, 0.05, 0.5])
        print(f"IoU of OpenCV's faces with faces.js's best match: min {q[0]:.3f}, 5th percentile {q[1]:.3f}, "
              f"median {q[2]:.3f}; exactly equal: {sum(1 for v in ious if v == 1.0)}/{len(ious)}")
    js = [r["js_ms"] for r in rows]
    cv = [r["cv_ms"] for r in rows]
    print(f"time per photo, median (mean): faces.js {statistics.median(js):.1f} ms ({statistics.mean(js):.1f}); "
          f"cv2 ({threads} thread{'s' if threads > 1 else ''}, as matcher runs it) {statistics.median(cv):.1f} ms "
          f"({statistics.mean(cv):.1f})")
    print(f"faces.js first call (JIT warm-up) {cold:.0f} ms; module + cascade load {load_ms:.0f} ms "
          f"(cascade JSON {len(cascade_json()) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
