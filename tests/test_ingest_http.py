"""Manifest ingest end to end: a CSV manifest of URLs served by a real HTTP server on 127.0.0.1.

Everything is real: re-encoded sample photos served by ``http.server`` in a background
thread, the aiohttp fetcher, the hashing worker processes, SQLite and FAISS. The server
counts the requests it receives per path, which is how resuming is checked (hashed
items are not downloaded again, failed ones are).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from pathlib import Path

import faiss
import pytest
from PIL import Image, ImageOps

from conftest import LoopbackHandler, LoopbackServer, run_matcher
from matcher.ingest.fetch import FetchSettings
from matcher.imaging.images import DEFAULT_LIMITS
from matcher.engine.api import add
from matcher.ingest.sources import ManifestSource
from matcher.index.store import IndexStore
from matcher.pipeline.photo import HashSpec, index_batch

SLOW_SECONDS = 3.0  # how long the slow URL makes the client wait; the fetch timeout is 0.5 s
MAX_BYTES = 200_000
DATASET = "served"  # the manifest is served.csv

# ---------------------------------------------------------------------------
# images: real sample photos, re-encoded (different sizes, formats and qualities)


def _encode(src: Path, width: int, fmt: str, **save) -> bytes:
    with Image.open(src) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        height = round(im.height * width / im.width)
        im = im.resize((width, height), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, fmt, **save)
    return buf.getvalue()


def _size(body: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(body)) as im:
        return im.size


# row id -> (the original photo it copies, how it is served)
GOOD = {
    "good-1": "IMG_0002.jpg",
    "good-2": "IMG_0003.jpg",
    "good-3": "IMG_0005.jpg",
    "good-4": "IMG_0006.jpg",
    "flaky-5": "IMG_0004.png",
}


@pytest.fixture(scope="module")
def bodies(sample: Path) -> dict[str, bytes]:
    photos = sample / "my-photos"
    out = {
        "good-1": _encode(photos / "IMG_0002.jpg", 640, "JPEG", quality=80),
        "good-2": _encode(photos / "IMG_0003.jpg", 400, "WEBP", quality=75),  # WebP behind a .jpg URL
        "good-3": _encode(photos / "IMG_0005.jpg", 320, "PNG", optimize=True),
        "good-4": _encode(photos / "IMG_0006.jpg", 480, "JPEG", quality=60),
        "flaky-5": _encode(photos / "IMG_0004.png", 500, "JPEG", quality=85),
        "slow-7": _encode(photos / "IMG_0010.jpg", 300, "JPEG", quality=80),
        # A real photo, upscaled and saved at high quality: ~2x the byte limit.
        "big-9": _encode(photos / "IMG_0009.jpg", 1500, "JPEG", quality=95),
    }
    for key in GOOD:
        assert len(out[key]) < MAX_BYTES * 0.8, (key, len(out[key]))
    assert len(out["big-9"]) > 2 * MAX_BYTES, len(out["big-9"])
    sizes = [_size(out[k]) for k in GOOD]
    assert len(set(sizes)) == len(sizes)  # each good image is recognisable by its size
    return out


HTML = b"<!DOCTYPE html>\n<html><head><title>Photo not found</title></head><body>Gone.</body></html>\n"

# ---------------------------------------------------------------------------
# the server


class _Handler(LoopbackHandler):
    server: "_Server"

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.reply(status, ctype, body)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path, n = self.count_hit()
        route = self.server.routes.get(path)
        try:
            if route is None:
                self._send(404, b"no such path", "text/plain")
                return
            what, body = route
            if what == "image":
                self._send(200, body, "image/jpeg")
            elif what == "missing":
                self._send(404, b"<html>Not Found</html>", "text/html")
            elif what == "flaky":  # 500 on the first request, the image afterwards
                if n == 1:
                    self._send(500, b"<html>Internal Server Error</html>", "text/html")
                else:
                    self._send(200, body, "image/jpeg")
            elif what == "slow":
                time.sleep(SLOW_SECONDS)
                self._send(200, body, "image/jpeg")
            elif what == "html":  # claims to be an image; only the bytes tell
                self._send(200, HTML, "image/jpeg")
            elif what == "stream":  # no Content-Length: the body ends when the connection closes
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.end_headers()
                for i in range(0, len(body), 16384):
                    self.wfile.write(body[i : i + 16384])
                    self.wfile.flush()
            else:  # pragma: no cover - test bug
                raise AssertionError(what)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout, size limit): expected


class _Server(LoopbackServer):
    def __init__(self, routes: dict[str, tuple[str, bytes]]):
        super().__init__(_Handler, routes)

    def total_hits(self) -> int:
        with self.lock:
            return sum(self.hits.values())

    def hits_of(self, path: str) -> int:
        with self.lock:
            return self.hits[path]


@pytest.fixture
def server(bodies):
    routes = {
        "/img/1.jpg": ("image", bodies["good-1"]),
        "/img/2.jpg": ("image", bodies["good-2"]),
        "/img/3.jpg": ("image", bodies["good-3"]),
        "/img/4.jpg": ("image", bodies["good-4"]),
        "/img/5.jpg": ("flaky", bodies["flaky-5"]),
        "/img/6.jpg": ("missing", b""),
        "/img/7.jpg": ("slow", bodies["slow-7"]),
        "/img/8.jpg": ("html", b""),
        "/img/9.jpg": ("image", bodies["big-9"]),
        "/img/10.jpg": ("stream", bodies["big-9"]),
    }
    with _Server(routes).running() as srv:
        yield srv


# ---------------------------------------------------------------------------
# the manifest

# id -> (path served, owner, license, title)
ROWS = [
    ("good-1", "/img/1.jpg", "16577737@N01", "CC BY-ND 2.0", 'The "old" bridge, seen through trees'),
    ("good-2", "/img/2.jpg", "71336207@N03", "CC BY 2.0", "Chelsea, the cat"),
    ("good-3", "/img/3.jpg", "51673541@N00", "CC0 1.0", "Coffee — a cup on its saucer"),
    ("good-4", "/img/4.jpg", "41062250@N03", "CC BY-SA 2.0", "Pagoda above the lake"),
    ("flaky-5", "/img/5.jpg", "99999999@N05", "CC BY 4.0", "Orange dahlia"),
    ("missing-6", "/img/6.jpg", "11111111@N06", "CC BY 2.0", "Gone"),
    ("slow-7", "/img/7.jpg", "22222222@N07", "CC BY 2.0", "Slow host"),
    ("html-8", "/img/8.jpg", "33333333@N08", "CC BY 2.0", "Error page"),
    ("big-9", "/img/9.jpg", "44444444@N09", "CC BY 2.0", "Huge, with Content-Length"),
    ("bigstream-10", "/img/10.jpg", "55555555@N10", "CC BY 2.0", "Huge, streamed"),
    ("nourl-11", None, "66666666@N11", "CC BY 2.0", "Row without a URL"),
]
PATH_OF = {key: path for key, path, *_ in ROWS}
META = {key: (owner, lic, title) for key, _, owner, lic, title in ROWS}
GOOD_PATHS = [PATH_OF[k] for k in GOOD]

# id -> (kind, substrings the reason must contain)
EXPECTED_FAILURES = {
    "missing-6": ("http", ["404"]),
    "slow-7": ("timeout", ["timed out", "0.5 s", "2 attempts"]),
    "html-8": ("not_image", ["not an image"]),
    "big-9": ("too_large", ["limit"]),
    "bigstream-10": ("too_large", ["limit"]),
    "nourl-11": ("bad_row", ["no image URL", "row 12"]),  # line 12 of the file (line 1 is the header)
}


def _write_manifest(path: Path, srv: _Server, extra_rows: list[tuple] = ()) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "url", "owner", "license", "title"])
        for key, p, owner, lic, title in [*ROWS, *extra_rows]:
            url = p if p is None or p.startswith("http") else srv.url(p)
            w.writerow([key, url or "", owner, lic, title])
    return path


def _rows(index: Path) -> dict[str, dict]:
    db = sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return {r["key"]: dict(r) for r in db.execute("SELECT * FROM items WHERE dataset = ?", (DATASET,))}
    finally:
        db.close()


def _sql(index: Path, query: str, *args):
    db = sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


def _check_catalog(index: Path, srv: _Server, bodies: dict[str, bytes], attempts: int) -> None:
    rows = _rows(index)
    assert sorted(rows) == sorted(k for k, *_ in ROWS)
    for key in GOOD:
        r = rows[key]
        owner, lic, title = META[key]
        assert r["status"] == "ok", (key, r["error"])
        assert (r["url"], r["owner"], r["license"], r["title"]) == (srv.url(PATH_OF[key]), owner, lic, title)
        assert (r["error"], r["error_kind"]) == (None, None)
        assert (r["width"], r["height"]) == _size(bodies[key])  # this body, not another row's
        assert r["hash"] and len(r["hash"]) == 16
        assert r["attempts"] == 1  # hashed once, never fetched again
    assert len({rows[k]["hash"] for k in GOOD}) == len(GOOD)
    for key, (kind, words) in EXPECTED_FAILURES.items():
        r = rows[key]
        owner, lic, title = META[key]
        assert r["status"] == "failed", key
        assert r["error_kind"] == kind, (key, r["error_kind"], r["error"])
        for w in words:
            assert w in r["error"], (key, r["error"])
        assert "Traceback" not in r["error"] and len(r["error"]) < 200
        assert (r["owner"], r["license"], r["title"]) == (owner, lic, title)
        assert r["url"] == (None if PATH_OF[key] is None else srv.url(PATH_OF[key]))
        assert r["hash"] is None and r["width"] is None
        assert r["attempts"] == attempts, (key, r["attempts"])
    # one FAISS entry per hashed item, nothing for failures
    entries = _sql(index, "SELECT items.key FROM entries JOIN items ON items.id = entries.item_id")
    assert sorted(k for (k,) in entries) == sorted(GOOD)


def _check_faiss_matches_catalog(index: Path, expected: int) -> None:
    """On disk (no reconcile on open hiding anything) and through IndexStore."""
    entry_ids = sorted(i for (i,) in _sql(index, "SELECT id FROM entries"))
    assert len(entry_ids) == expected
    seq = dict(_sql(index, "SELECT key, value FROM meta"))
    assert seq["faiss_seq"] == seq["entries_seq"]
    raw = faiss.read_index_binary(str(index / "index.faiss"))
    assert raw.ntotal == expected
    assert sorted(faiss.vector_to_array(raw.id_map).tolist()) == entry_ids
    with IndexStore.open(index) as store:
        assert store.reconciled == {"added": 0, "removed": 0}
        assert sorted(store.faiss.ids().tolist()) == entry_ids
        assert len(store.faiss) == expected


def _cli_add(index: Path, manifest: Path, *extra: str):
    return run_matcher(
        "add", "--index", str(index), "--timeout", "0.5", "--retries", "1",
        "--max-bytes", str(MAX_BYTES), "--workers", "2", *extra, str(manifest),
    )


# ---------------------------------------------------------------------------
# tests


def test_library_ingest_records_every_outcome_and_resumes(tmp_path, server, bodies):
    manifest = _write_manifest(tmp_path / "served.csv", server)
    index = tmp_path / "index"
    settings = FetchSettings(allow_private=True, timeout=0.5, retries=1, backoff=0.05, max_bytes=MAX_BYTES)

    t0 = time.monotonic()
    stats = add(index, [ManifestSource(manifest)], fetch=settings, workers=1)
    elapsed = time.monotonic() - t0
    assert (stats.added, stats.failed, stats.skipped) == (5, 6, 0)
    assert dict(stats.failures) == {"http": 1, "timeout": 1, "not_image": 1, "too_large": 2, "bad_row": 1}
    # the slow URL was abandoned at the timeout, not waited for (2 attempts of 0.5 s + backoff)
    assert elapsed < 2 * SLOW_SECONDS
    _check_catalog(index, server, bodies, attempts=1)
    _check_faiss_matches_catalog(index, 5)

    # stored hash == hash of the body served at that row's URL
    with IndexStore.open(index) as store:
        spec = HashSpec.of(store.hasher, store.regions, DEFAULT_LIMITS)
    outs = index_batch(spec, [bodies[k] for k in GOOD])
    rows = _rows(index)
    assert [rows[k]["hash"] for k in GOOD] == [o[1].hex() for o in outs]

    hits = {p: server.hits_of(p) for p in (*GOOD_PATHS, "/img/5.jpg", "/img/6.jpg", "/img/7.jpg", "/img/8.jpg")}
    assert [hits[p] for p in GOOD_PATHS[:4]] == [1, 1, 1, 1]
    assert hits["/img/5.jpg"] == 2  # 500, then 200 on the retry
    assert hits["/img/6.jpg"] == 1  # a 404 is final: not retried within a run
    assert hits["/img/7.jpg"] == 2  # timeout: retried once (retries=1)
    assert hits["/img/8.jpg"] == 1

    # Resume: hashed items are skipped (not downloaded), failed ones retried.
    stats = add(index, [ManifestSource(manifest)], fetch=settings, workers=1)
    assert (stats.added, stats.failed, stats.skipped) == (0, 6, 5)
    assert [server.hits_of(p) for p in GOOD_PATHS] == [1, 1, 1, 1, 2]
    assert server.hits_of("/img/6.jpg") == 2
    assert server.hits_of("/img/7.jpg") == 4
    assert server.hits_of("/img/8.jpg") == 2
    assert server.hits_of("/img/9.jpg") == 2
    _check_catalog(index, server, bodies, attempts=2)
    _check_faiss_matches_catalog(index, 5)
    assert _sql(index, "SELECT COUNT(*), COUNT(DISTINCT key) FROM items") == [(11, 11)]


def test_cli_ingest_info_resume_and_search(tmp_path, server, bodies, sample):
    manifest = _write_manifest(tmp_path / "served.csv", server)
    index = tmp_path / "index"

    proc = _cli_add(index, manifest, "--allow-private-urls")
    assert proc.returncode == 0, proc.stderr
    assert "5 added, 6 failed" in proc.stderr
    assert "0 already in the index" in proc.stderr
    _check_catalog(index, server, bodies, attempts=1)
    _check_faiss_matches_catalog(index, 5)
    assert server.hits_of("/img/5.jpg") == 2
    assert [server.hits_of(p) for p in GOOD_PATHS[:4]] == [1, 1, 1, 1]

    info = run_matcher("info", "--index", str(index), "--json", "--failures")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["entries"] == 5
    (ds,) = data["datasets"]
    assert ds["dataset"] == DATASET
    assert (ds["items"], ds["hashed"], ds["failed"], ds["entries"]) == (11, 5, 6, 5)
    assert ds["failures"] == {"http": 1, "timeout": 1, "not_image": 1, "too_large": 2, "bad_row": 1}
    failed = {f["key"]: f for f in data["failed"]}
    assert sorted(failed) == sorted(EXPECTED_FAILURES)
    for key, (_, words) in EXPECTED_FAILURES.items():
        assert all(w in failed[key]["error"] for w in words), failed[key]
    assert failed["missing-6"]["url"] == server.url("/img/6.jpg")

    # Resume through the CLI
    proc = _cli_add(index, manifest, "--allow-private-urls")
    assert proc.returncode == 0, proc.stderr
    assert "0 added, 6 failed" in proc.stderr
    assert "5 already in the index" in proc.stderr
    assert [server.hits_of(p) for p in GOOD_PATHS] == [1, 1, 1, 1, 2]
    assert server.hits_of("/img/6.jpg") == 2
    assert server.hits_of("/img/7.jpg") == 4
    _check_catalog(index, server, bodies, attempts=2)
    _check_faiss_matches_catalog(index, 5)

    # The person's originals find the served copies
    originals = [sample / "my-photos" / GOOD[k] for k in GOOD]
    proc = run_matcher("search", "--index", str(index), "--json", *map(str, originals))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    assert [Path(x["query"]).name for x in lines] == [GOOD[k] for k in GOOD]
    for key, line in zip(GOOD, lines):
        assert line["error"] is None
        found = {m["key"]: m for m in line["matches"]}
        assert list(found) == [key], (key, list(found))  # its copy and nothing else
        m = found[key]
        owner, lic, title = META[key]
        assert (m["dataset"], m["url"], m["owner"], m["license"], m["title"]) == (
            DATASET, server.url(PATH_OF[key]), owner, lic, title)
        assert 0 <= m["distance"] <= 10

    # Unrelated photo: no match, exit 1. Photos only served too large / too slow: not indexed either.
    for name in ("IMG_0008.jpg", "IMG_0009.jpg", "IMG_0010.jpg"):
        proc = run_matcher("search", "--index", str(index), "--json", str(sample / "my-photos" / name))
        assert proc.returncode == 1, (name, proc.stdout, proc.stderr)
        (line,) = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
        assert line["matches"] == [] and line["error"] is None


def test_cli_refuses_loopback_without_allow_private(tmp_path, server):
    # Also a host name that resolves to loopback: refused after DNS, before connecting.
    port = server.server_address[1]
    extra = [
        ("byname-12", f"http://localhost:{port}/img/1.jpg", "x", "CC0", "by name"),
        ("ipv6-13", f"http://[::1]:{port}/img/2.jpg", "x", "CC0", "IPv6 loopback"),
    ]
    manifest = _write_manifest(tmp_path / "served.csv", server, extra)
    index = tmp_path / "index"

    proc = _cli_add(index, manifest)
    assert proc.returncode == 2, proc.stderr  # nothing added: an error, the failures kept as records
    assert "0 added, 13 failed" in proc.stderr and "every item failed (13)" in proc.stderr
    assert server.total_hits() == 0  # not one request reached the server
    rows = _rows(index)
    assert len(rows) == 13
    for key, r in rows.items():
        assert r["status"] == "failed"
        if key == "nourl-11":
            assert r["error_kind"] == "bad_row"
            continue
        assert r["error_kind"] == "refused", (key, r["error_kind"], r["error"])
        assert "non-public address" in r["error"], r["error"]
    assert "127.0.0.1" in rows["good-1"]["error"]
    assert "localhost" in rows["byname-12"]["error"]
    assert _sql(index, "SELECT COUNT(*) FROM entries") == [(0,)]

    info = run_matcher("info", "--index", str(index), "--json")
    assert info.returncode == 0, info.stderr
    (ds,) = json.loads(info.stdout)["datasets"]
    assert ds["failures"] == {"refused": 12, "bad_row": 1}
    assert json.loads(info.stdout)["entries"] == 0

    # The same through the library with the default (public-only) settings.
    stats = add(tmp_path / "index2", [ManifestSource(manifest)],
                fetch=FetchSettings(timeout=0.5, retries=1, backoff=0.01), workers=0)
    assert (stats.added, stats.failed) == (0, 13)
    assert dict(stats.failures) == {"refused": 12, "bad_row": 1}
    assert server.total_hits() == 0

    # Allowing private URLs afterwards retries the refused rows.
    proc = _cli_add(index, manifest, "--allow-private-urls")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(index)
    assert {k for k, r in rows.items() if r["status"] == "ok"} >= set(GOOD)
    assert rows["good-1"]["attempts"] == 2
    assert server.hits_of("/img/1.jpg") >= 1


def test_cli_allow_network_admits_that_network_only(tmp_path, server):
    """--allow-network 127.0.0.1/32: the server's images arrive; ::1 and a bad CIDR do not pass."""
    port = server.server_address[1]
    extra = [("ipv6-13", f"http://[::1]:{port}/img/2.jpg", "x", "CC0", "IPv6 loopback")]
    manifest = _write_manifest(tmp_path / "served.csv", server, extra)
    index = tmp_path / "index"
    bad = _cli_add(index, manifest, "--allow-network", "127.0.0.1/40")
    assert bad.returncode == 2 and "not an IP network" in bad.stderr and not index.exists()
    proc = _cli_add(index, manifest, "--allow-network", "127.0.0.1/32")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(index)
    assert rows["ipv6-13"]["error_kind"] == "refused" and "::1" in rows["ipv6-13"]["error"]
    assert rows["good-1"]["status"] == "ok"
    assert server.total_hits() > 0
