"""The browser's face detector (matcher/web/static/faces.js) finds the faces the CLI finds.

Runs faces.js in a real headless Chromium (Playwright, /usr/bin/chromium) on the same greyscale
working arrays that :func:`matcher.imaging.faces.detect_faces` gets (decoded in Python, sent to the page as
bytes), with the cascade JSON built by :mod:`matcher.web.cascade`, both served from a loopback HTTP
server (ES modules do not load from file://). Pictures: the bundled sample's face photos (the
astronaut, a mummy portrait, a Medusa head), resized to reach every resize path, a collage with three
faces, and photos without faces.
"""

from __future__ import annotations

import base64
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import SAMPLE, LoopbackServer
from matcher.imaging.faces import detect_faces
from matcher.engine.recipe import recipe

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no Chromium at /usr/bin/chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
cv2 = pytest.importorskip("cv2")

STATIC = Path(__file__).resolve().parent.parent / "matcher" / "web" / "static"
FACES_OPTS = recipe()["faces"]


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("L"))


def _resized(a: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.LANCZOS))


def _around_face(a: np.ndarray, box: tuple[int, int, int, int], side: int = 220) -> np.ndarray:
    """A square crop twice the face's size around it, resized to side x side."""
    x, y, w, h = box
    cx, cy, r = x + w // 2, y + h // 2, max(w, h)
    t, l = max(0, cy - r), max(0, cx - r)
    return _resized(np.ascontiguousarray(a[t:cy + r, l:cx + r]), side, side)


def _collage(*parts: np.ndarray) -> np.ndarray:
    """Pictures side by side (each cropped around its face), on one row: a photo with several faces."""
    return np.ascontiguousarray(np.hstack([_around_face(p, detect_faces(p)[0]) for p in parts]))


@pytest.fixture(scope="module")
def faces_images() -> dict[str, np.ndarray]:
    astronaut = _grey(SAMPLE / "my-photos" / "IMG_0009.jpg")  # 512x512, one face
    mummy = _grey(SAMPLE / "dataset" / "flickr_8134503583_23ada3.jpg")  # 485x640 painted portrait
    medusa = _grey(SAMPLE / "dataset" / "flickr_2005397842_dc4d3a.jpg")  # 563x558 Medusa head on a dish
    return {
        "astronaut": astronaut,
        "astronaut-crop-250": _grey(SAMPLE / "dataset" / "img_b13829d34779ef0c.jpg"),  # <= 288: no downscale
        "astronaut-576": _resized(astronaut, 576, 576),  # exact 2x INTER_AREA
        "astronaut-mirror-900": _resized(np.ascontiguousarray(astronaut[:, ::-1]), 900, 900),
        "mummy": mummy,
        "medusa": medusa,
        "collage-3-faces": _collage(astronaut, mummy, medusa),
    }


@pytest.fixture(scope="module")
def landscapes() -> dict[str, np.ndarray]:
    return {
        "pagoda": _grey(SAMPLE / "my-photos" / "IMG_0006.jpg"),
        "bridge-1600": _grey(SAMPLE / "my-photos" / "IMG_0002.jpg"),
    }


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        ctype, body = route
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>faces</title></head><body></body></html>"""


@pytest.fixture(scope="module")
def page():
    from matcher.web.cascade import cascade_json

    routes = {
        "/index.html": ("text/html; charset=utf-8", PAGE),
        "/static/faces.js": ("text/javascript", (STATIC / "faces.js").read_bytes()),
        "/static/cascade.json": ("application/json", cascade_json()),
    }
    server = LoopbackServer(_Handler, routes)
    server.thread.start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                pg = browser.new_page()
                errors: list[str] = []
                pg.on("pageerror", lambda e: errors.append(str(e)))
                pg.goto(server.url("/index.html"))
                pg.evaluate("""async () => {
                    window.F = await import('/static/faces.js');
                    window.CASCADE = await window.F.loadCascade('/static/cascade.json');
                    window.grey = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                }""")
                yield pg
                assert not errors, errors
            finally:
                browser.close()
    finally:
        server.shutdown()


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode("ascii")


def js_faces(page, a: np.ndarray) -> list[tuple[int, int, int, int]]:
    h, w = a.shape
    out = page.evaluate(
        "([b64, w, h, opts]) => F.detectFaces({w, h, data: grey(b64)}, opts, CASCADE)",
        [_b64(a), w, h, FACES_OPTS])
    return [tuple(b) for b in out]


def _iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_cascade_json_is_the_installed_cascade():
    from matcher.web.cascade import CASCADE_NAME, cascade_json

    c = json.loads(cascade_json())
    assert c["format"] == "opencv-haar-stumps/1" and c["name"] == CASCADE_NAME
    assert (c["width"], c["height"]) == (24, 24)
    assert "Intel License Agreement" in c["license"] and "Redistribution" in c["license"]
    assert len(c["stages"]) == 25 and sum(len(s["stumps"]) for s in c["stages"]) == len(c["features"]) == 2913
    assert all(2 <= len(f) <= 3 for f in c["features"])
    assert cascade_json() is cascade_json()  # built once


def test_resizes_are_bit_exact(page, faces_images):
    """The two resizes under the detector equal cv2.resize pixel for pixel."""
    a = faces_images["astronaut"]
    cases = [("resizeArea", cv2.INTER_AREA, (288, 288)), ("resizeArea", cv2.INTER_AREA, (256, 256)),
             ("resizeArea", cv2.INTER_AREA, (301, 173)), ("resizeLinearExact", cv2.INTER_LINEAR_EXACT, (240, 240)),
             ("resizeLinearExact", cv2.INTER_LINEAR_EXACT, (139, 104)), ("resizeLinearExact", cv2.INTER_LINEAR_EXACT, (256, 256))]
    for fn, interp, (dw, dh) in cases:
        ref = cv2.resize(a, (dw, dh), interpolation=interp)
        got = page.evaluate(
            f"([b64, w, h, dw, dh]) => Array.from(F.{fn}(grey(b64), w, h, dw, dh))", [_b64(a), 512, 512, dw, dh])
        got = np.array(got, dtype=np.uint8).reshape(dh, dw)
        assert np.array_equal(got, ref), (fn, dw, dh, int((got != ref).sum()))


def test_faces_as_opencv(page, faces_images):
    """Same boxes as matcher.imaging.faces.detect_faces on the same pixels: same count, IoU >= 0.9, and (with
    the OpenCV this was written against) exactly equal."""
    exact = 0
    for name, a in faces_images.items():
        ref = detect_faces(a, max_faces=FACES_OPTS["max_faces"])
        got = js_faces(page, a)
        assert ref, f"{name}: OpenCV finds no face (a test picture changed?)"
        assert len(got) == len(ref), (name, ref, got)
        for r in ref:
            assert max(_iou(r, g) for g in got) >= 0.9, (name, ref, got)
        assert [r[2] * r[3] for r in got] == sorted((r[2] * r[3] for r in got), reverse=True), "largest first"
        exact += got == ref  # same boxes in the same order (face0, face1, ... name the crops)
    assert len(detect_faces(faces_images["collage-3-faces"])) == 3
    assert exact == len(faces_images), f"boxes equal OpenCV's on {exact}/{len(faces_images)} pictures"


def test_no_faces(page, landscapes):
    for name, a in landscapes.items():
        assert detect_faces(a) == [], name
        assert js_faces(page, a) == [], name


def test_small_and_flat(page):
    """Below 48 px nothing is searched; a flat image has no window with enough contrast."""
    assert js_faces(page, np.full((40, 300), 128, np.uint8)) == []
    assert js_faces(page, np.full((300, 400), 200, np.uint8)) == []
    assert detect_faces(np.full((300, 400), 200, np.uint8)) == []
