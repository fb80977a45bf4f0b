"""The browser-side hasher (matcher/web/static/hasher.js) against the Python query side, in a real Chromium.

The page loads hasher.js from a loopback server (ES modules do not load from file://) and is
driven through Playwright. What is checked:

* the variants the JS derives from the server's recipe are the CLI's (names, source images, boxes);
* on the same greyscale working image, every JS hash equals the CLI's (the resampling is a port);
* from the files themselves (the browser decodes them), the hashes stay within a few bits of the
  CLI's on every real photo of the sample and tests/data (the decoders differ: libjpeg's DCT-domain
  downscale of the luminance in Python, a full RGB decode averaged over the same blocks here);
* verification scores equal verify_batch's on real candidates of an index built from the sample.
"""

from __future__ import annotations

import base64
import functools
import io
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, SAMPLE, LoopbackServer, run_matcher

CHROMIUM = Path("/usr/bin/chromium")
STATIC = ROOT / "matcher" / "web" / "static"
DATA = ROOT / "tests" / "data"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")

#: Measured (benchmarks/bench_browser_hash.py, docs/browser-hash.md): 0 bits on every image here,
#: at most 2 on large real JPEGs; the match threshold is 10 bits.
MAX_FULL_BITS = 2
MAX_VARIANT_BITS = 6
MAX_MEAN_VARIANT_BITS = 0.3


def real_photos() -> list[Path]:
    files = sorted((SAMPLE / "my-photos").iterdir()) + sorted((SAMPLE / "dataset").iterdir())
    files += sorted(p for p in DATA.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    return [f for f in files if f.is_file()]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_response(404)
            self.end_headers()
            return
        ctype, body = route
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _b64(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a, np.uint8)
    return {"w": int(a.shape[1]), "h": int(a.shape[0]), "d": base64.b64encode(a.tobytes()).decode()}


def _unb64(o: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(o["d"]), np.uint8).reshape(o["h"], o["w"])


class Page:
    """A Chromium page with hasher.js imported as ``H``; files are served from ``routes``."""

    def __init__(self, page, server: LoopbackServer):
        self.page = page
        self.server = server

    def serve(self, path: str, body: bytes, ctype: str = "application/octet-stream") -> str:
        self.server.routes[path] = (ctype, body)
        return path

    def __call__(self, js: str, arg=None):
        return self.page.evaluate(js, arg)


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    routes = {"/": ("text/html", b"<!doctype html><meta charset=utf-8><title>hasher test</title>")}
    for f in STATIC.glob("*.js"):
        routes[f"/static/{f.name}"] = ("text/javascript", f.read_bytes())
    for f in real_photos():
        routes["/img/" + f.relative_to(ROOT).as_posix()] = ("application/octet-stream", f.read_bytes())
    server = LoopbackServer(_Handler, routes)
    server.thread.start()
    pw = sync_api.sync_playwright().start()
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"])
    try:
        pg = browser.new_page()
        pg.goto(server.url("/"))
        pg.evaluate("""async () => {
            window.H = await import('/static/hasher.js');
            window.unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
            window.b64 = (a) => { let s = ''; for (let i = 0; i < a.length; i += 8192) s += String.fromCharCode(...a.subarray(i, i + 8192)); return btoa(s); };
            window.G = (o) => ({ w: o.w, h: o.h, data: unb64(o.d) });
            window.hashFile = async (url, rec, faces) => {
                const blob = await (await fetch(url)).blob();
                const d = await H.decodeToWorking(blob, rec);
                return { w: d.w, h: d.h, d: b64(d.data), width: d.width, height: d.height, hashes: H.hashVariants(d, rec, faces) };
            };
        }""")
        yield Page(pg, server)
    finally:
        browser.close()
        pw.stop()
        server.shutdown()


@pytest.fixture(scope="module")
def rec():
    from matcher.engine.recipe import recipe

    return recipe(None)


def _ham(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


@functools.lru_cache(maxsize=None)
def _py_query_cached(path: str):
    from matcher.hashing.hashers import get_hasher
    from matcher.imaging.images import DEFAULT_LIMITS
    from matcher.pipeline.photo import query_one

    out = query_one(get_hasher("phash"), True, path, DEFAULT_LIMITS)
    assert out[0] == "ok", out
    return out[2]


def _py_query(path):
    """The CLI's query-side outcome for a file (working image, faces, variants, codes), computed once."""
    return _py_query_cached(str(path))


# --- (a) variants from the recipe ----------------------------------------------------------------

SIZES = [(512, 384), (384, 512), (512, 288), (451, 300), (512, 512), (34, 42), (160, 120), (512, 100), (97, 512)]


def test_variants_are_the_clis(page, rec):
    from matcher.engine.recipe import expand
    from matcher.imaging.regions import query_variants

    faces = [[40, 30, 60, 70], [0, 0, 20, 24]]
    for w, h in SIZES:
        js = page("(a) => H.expandVariants(a.rec, a.w, a.h, a.faces).map((v) => [v.name, v.source, v.box])",
                  {"rec": rec, "w": w, "h": h, "faces": faces})
        want = expand(rec, w, h)
        got = [v for v in js if not v[0].startswith("face")]
        assert [(n, s) for n, s, _ in got] == [(n, s) for n, s, _ in want], (w, h)
        for (n, _, b), (_, _, wb) in zip(got, want):
            assert np.allclose(b, wb, rtol=0, atol=1e-9), (w, h, n, b, wb)
        # and the CLI's own variants of a photo of that size (the recipe rounds box fractions to 6 digits)
        _, cli = query_variants(Image.new("L", (w, h)), [tuple(f) for f in faces])
        assert [(v.name, v.source) for v in cli] == [(n, s) for n, s, _ in js], (w, h)
        for v, (n, _, b) in zip(cli, js):
            assert np.allclose(v.box, b, rtol=0, atol=1e-5 * max(w, h)), (w, h, n)
            if n.startswith("face"):
                assert tuple(v.box) == tuple(b), (w, h, n)


# --- (b) hashes ------------------------------------------------------------------------------------

def test_hashes_equal_the_clis_on_the_same_pixels(page, rec):
    """Fed the CLI's working image (and faces), the JS gives exactly the CLI's variants and codes."""
    for f in real_photos():
        q = _py_query(f)
        py = [(v.name, c.tobytes().hex()) for v, c in zip(q.variants, q.codes)]
        js = page("(a) => H.hashVariants(G(a.img), a.rec, a.faces).map((x) => [x.kind, x.hash])",
                  {"img": _b64(q.image), "rec": rec, "faces": [list(map(int, b)) for b in q.faces]})
        assert [tuple(x) for x in js] == py, f.name


def test_hashes_from_files_are_close_to_the_clis(page, rec):
    """The browser decodes each real photo itself: the working image has the CLI's size and the
    hashes stay within a few bits (measured: id/full 0 bits on all of them)."""
    full_bits, variant_bits, report = [], [], []
    for f in real_photos():
        q = _py_query(f)
        faces = [list(map(int, b)) for b in q.faces]
        r = page("(a) => hashFile(a.url, a.rec, a.faces)", {"url": "/img/" + f.relative_to(ROOT).as_posix(),
                                                              "rec": rec, "faces": faces})
        assert (r["h"], r["w"]) == q.image.shape, f.name
        assert (r["width"], r["height"]) == (q.width, q.height), f.name
        pix = np.abs(_unb64(r).astype(int) - q.image.astype(int))
        assert pix.mean() < 0.5, (f.name, pix.mean())
        py = {v.name: c.tobytes().hex() for v, c in zip(q.variants, q.codes)}
        js = {x["kind"]: x["hash"] for x in r["hashes"]}
        assert r["hashes"][0]["kind"] == "id/full"
        assert len(set(py) ^ set(js)) <= 2, (f.name, set(py) ^ set(js))
        d = _ham(js["id/full"], py["id/full"])
        full_bits.append(d)
        vb = [_ham(js[k], py[k]) for k in py if k in js]
        variant_bits += vb
        report.append(f"{f.name}: full {d}, variants mean {np.mean(vb):.2f} max {max(vb)}")
        assert d <= MAX_FULL_BITS, report[-1]
        assert max(vb) <= MAX_VARIANT_BITS, report[-1]
    print("\n".join(report))
    print(f"id/full bits: {np.bincount(full_bits).tolist()}; variant bits: {np.bincount(variant_bits).tolist()}")
    assert np.mean(variant_bits) <= MAX_MEAN_VARIANT_BITS


def _jpeg_with_orientation(src: Image.Image, orientation: int) -> bytes:
    """``src`` stored so that EXIF ``orientation`` turns it upright (as a camera writes it)."""
    inverse = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_270}
    stored = src.transpose(inverse[orientation]) if orientation in inverse else src
    exif = Image.Exif()
    exif[0x0112] = orientation
    b = io.BytesIO()
    stored.save(b, "JPEG", quality=90, exif=exif.tobytes())
    return b.getvalue()


def test_exif_orientation_and_draft_grid(page, rec):
    """All 8 EXIF orientations of a JPEG whose sides are not multiples of the DCT scale (1203x907
    decodes at 1/2 in Python: the block grid starts at the stored image's top-left corner)."""
    from matcher.hashing.hashers import get_hasher
    from matcher.imaging.images import DEFAULT_LIMITS
    from matcher.pipeline.photo import query_one

    src = Image.open(SAMPLE / "my-photos" / "IMG_0002.jpg").convert("RGB").resize((1203, 907), Image.Resampling.LANCZOS)
    for o in range(1, 9):
        data = _jpeg_with_orientation(src, o)
        out = query_one(get_hasher("phash"), True, data, DEFAULT_LIMITS)
        assert out[0] == "ok"
        q = out[2]
        url = page.serve(f"/gen/orient{o}.jpg", data)
        r = page("(a) => hashFile(a.url, a.rec, [])", {"url": url, "rec": rec})
        assert (r["width"], r["height"]) == (1203, 907), o
        assert (r["h"], r["w"]) == q.image.shape, o
        pix = np.abs(_unb64(r).astype(int) - q.image.astype(int))
        assert pix.mean() < 0.3, (o, pix.mean())
        py = {v.name: c.tobytes().hex() for v, c in zip(q.variants, q.codes)}
        assert _ham(r["hashes"][0]["hash"], py["id/full"]) <= 1, o


def test_transparency_is_composited_onto_white(page, rec):
    """A PNG with alpha: load_image composites it onto white, so does the page."""
    im = Image.open(SAMPLE / "my-photos" / "IMG_0003.jpg").convert("RGBA")
    a = np.asarray(im).copy()
    h, w = a.shape[:2]
    a[..., 3] = np.clip(np.linspace(0, 400, w)[None, :] * np.ones((h, 1)), 0, 255).astype(np.uint8)
    b = io.BytesIO()
    Image.fromarray(a, "RGBA").save(b, "PNG")
    data = b.getvalue()
    q = _py_query_bytes(data)
    r = page("(a) => hashFile(a.url, a.rec, [])", {"url": page.serve("/gen/alpha.png", data), "rec": rec})
    pix = np.abs(_unb64(r).astype(int) - q.image.astype(int))
    assert pix.max() <= 2, pix.max()
    py = {v.name: c.tobytes().hex() for v, c in zip(q.variants, q.codes)}
    assert _ham(r["hashes"][0]["hash"], py["id/full"]) <= 1


def test_multi_picture_jpegs_are_decoded_as_pillow_does(page, rec):
    """Pillow opens a JPEG with several pictures in its MPF index as an MPO and decodes it in full (no draft);
    one that also carries an Ultra HDR gain-map description stays a JPEG (drafted)."""
    im = Image.open(SAMPLE / "my-photos" / "IMG_0002.jpg").convert("RGB")
    b = io.BytesIO()
    im.save(b, "MPO", save_all=True, append_images=[im.resize((400, 251))])
    mpo = b.getvalue()
    xmp = b'http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description hdrgm:Version="1.0"/></x:xmpmeta>'
    hdr = mpo[:2] + b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp + mpo[2:]
    for name, data, fmt, max_mean in (("mpo", mpo, "MPO", 0.01), ("ultrahdr", hdr, "JPEG", 0.5)):
        assert Image.open(io.BytesIO(data)).format == fmt
        q = _py_query_bytes(data)
        r = page("(a) => hashFile(a.url, a.rec, [])", {"url": page.serve(f"/gen/{name}.jpg", data), "rec": rec})
        assert (r["h"], r["w"]) == q.image.shape, name
        assert np.abs(_unb64(r).astype(int) - q.image.astype(int)).mean() <= max_mean, name
        py = {v.name: c.tobytes().hex() for v, c in zip(q.variants, q.codes)}
        assert _ham(r["hashes"][0]["hash"], py["id/full"]) <= 1, name


def _py_query_bytes(data: bytes):
    from matcher.hashing.hashers import get_hasher
    from matcher.imaging.images import DEFAULT_LIMITS
    from matcher.pipeline.photo import query_one

    out = query_one(get_hasher("phash"), True, data, DEFAULT_LIMITS)
    assert out[0] == "ok", out
    return out[2]


def test_errors(page, rec):
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
    blank = io.BytesIO()
    Image.new("RGB", (300, 200), (120, 130, 140)).save(blank, "PNG")
    cases = {"/gen/x.heic": heic, "/gen/junk.jpg": b"\xff\xd8\xff\xe0 not really a jpeg", "/gen/blank.png": blank.getvalue()}
    for path, body in cases.items():
        page.serve(path, body)
    got = page("""async (a) => { const out = {};
        for (const url of a.urls) {
            try { const blob = await (await fetch(url)).blob(); await H.hashPhoto(blob, a.rec); out[url] = 'ok'; }
            catch (e) { out[url] = [e.code, e.message]; } }
        return out; }""", {"urls": list(cases), "rec": rec})
    assert got["/gen/x.heic"][0] == "undecodable" and "HEIC" in got["/gen/x.heic"][1]
    assert got["/gen/junk.jpg"][0] == "undecodable"
    assert got["/gen/blank.png"][0] == "uniform" and "nearly uniform image" in got["/gen/blank.png"][1]


# --- (c) verification ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_index(tmp_path_factory):
    index = tmp_path_factory.mktemp("web-hasher") / "index"
    run_matcher("add", "--index", str(index), "--dataset", "sample-dataset", str(SAMPLE / "manifest.csv"), check=True)
    return index


def test_verification_scores_equal_verify_batch(page, sample_index):
    """Real candidates (the sample's photos against an index of the sample dataset), verified by the JS
    port and by matcher.pipeline.photo.verify_batch (without the full-detail check): same scores, same order."""
    from matcher.imaging.images import DEFAULT_LIMITS
    from matcher.engine.api import _candidates
    from matcher.engine.recipe import recipe
    from matcher.index.store import IndexStore
    from matcher.pipeline.photo import HashSpec, verify_batch

    store = IndexStore.open(sample_index)
    try:
        rec = recipe(store)
        spec = HashSpec.of(store.hasher, store.regions, DEFAULT_LIMITS)
        n, worst, rejected = 0, 0.0, 0
        for f in sorted((SAMPLE / "my-photos").iterdir()):
            q = _py_query(f)
            items, cands = _candidates(store, q, rec["threshold"])
            py = verify_batch(spec, q.image, q.faces, cands, rec["verify"]["min_score"], None)
            wire = [{"item": {"id": c.item_id},
                     "tries": [{"distance": d, "variant": v.name, "entry": k} for d, v, k, _ in c.tries],
                     "thumbs": {k: base64.b64encode(t).decode() for _, _, k, t in c.tries}} for c in cands]
            args = {"img": _b64(q.image), "faces": [list(map(int, b)) for b in q.faces], "c": wire, "rec": rec}
            got = page("(a) => H.verifyCandidates(G(a.img), a.faces, a.c, a.rec, {keepRejected: true})", args)
            by_id = {m["item"]["id"]: m for m in got}
            assert set(by_id) == {o[0] for o in py}, f.name
            for item_id, score, d, variant, kind, _ in py:
                m = by_id[item_id]
                n += 1
                worst = max(worst, abs(m["score"] - score))
                assert abs(m["score"] - score) <= 0.02, (f.name, item_id, m["score"], score)
                assert (m["variant"], m["entry"], m["distance"]) == (variant.name, kind, d), (f.name, item_id)
                assert m["verified"] == (score >= rec["verify"]["min_score"]), (f.name, item_id)
                rejected += not m["verified"]
            # the default drops rejected candidates and sorts as the CLI's _result does
            kept = page("(a) => H.verifyCandidates(G(a.img), a.faces, a.c, a.rec).then((r) => r.map((m) => m.item.id))", args)
            want = sorted((o for o in py if o[1] >= rec["verify"]["min_score"]),
                          key=lambda o: (o[2], -round(o[1], 4), o[0]))
            assert kept == [o[0] for o in want], f.name
        print(f"{n} candidates ({rejected} rejected), largest score difference {worst:.2e}")
        assert n >= 10 and rejected >= 1
    finally:
        store.close()


def test_candidates_without_thumbnails_are_accepted_on_distance(page, rec):
    q = _py_query(SAMPLE / "my-photos" / "IMG_0003.jpg")
    cands = [{"item": {"id": 7}, "tries": [{"distance": 4, "variant": "id/full", "entry": "full"}], "thumbs": {"full": None}},
             {"item": {"id": 3}, "tries": [{"distance": 2, "variant": "mirror/c90", "entry": "full"}], "thumbs": {"full": None}}]
    got = page("(a) => H.verifyCandidates(G(a.img), [], a.c, a.rec)", {"img": _b64(q.image), "c": cands, "rec": rec})
    assert [(m["item"]["id"], m["score"], m["distance"], m["variant"]) for m in got] == [
        (3, None, 2, "mirror/c90"), (7, None, 4, "id/full")]
    json.dumps(got)  # plain data, ready for the page
