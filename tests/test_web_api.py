"""The web check's JSON API on a real `matcher serve` (uvicorn on 127.0.0.1) over the sample index.

Every error path answers with a JSON error and a 4xx, never a 5xx; the hash search returns the
candidates the CLI would verify; an upload is searched exactly as the CLI searches the file and
leaves nothing on disk.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import MatcherServer, run_matcher

from matcher.hashing.hashers import get_hasher
from matcher.imaging.images import DEFAULT_LIMITS
from matcher.engine.recipe import expand
from matcher.pipeline.photo import query_one


@pytest.fixture(scope="module")
def server(sample_index):
    with MatcherServer(sample_index, "--rate-limit", "0") as s:
        yield s


def call(server, method: str, path: str, body=None, headers: dict | None = None, raw: bool = False):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        headers = {"content-type": "application/json", **(headers or {})}
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    if raw:
        return r.status, dict(r.getheaders()), data
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    return r.status, {k.lower(): v for k, v in r.getheaders()}, parsed


def photo_hashes(path: Path) -> tuple[dict, object]:
    """What the CLI searches a photo with, in the API's request form."""
    out = query_one(get_hasher("phash"), True, str(path), DEFAULT_LIMITS)
    q = out[2]
    return {"id": path.name, "hashes": [{"kind": v.name, "hash": c.tobytes().hex()} for v, c in zip(q.variants, q.codes)]}, q


def cli_matches(index: Path, paths: list[Path]) -> dict[str, list[str]]:
    proc = run_matcher("search", "--index", str(index), "--json", *map(str, paths))
    assert proc.returncode in (0, 1), proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        out[Path(r["query"]).name] = [m["key"] for m in r["matches"]]
    return out


def test_health_datasets_recipe(server):
    status, headers, body = call(server, "GET", "/api/v1/health")
    assert status == 200 and body["status"] == "ok" and body["items"] == 32 and body["datasets"] == 1
    assert "default-src 'self'" in headers["content-security-policy"]
    status, _, body = call(server, "GET", "/api/v1/datasets")
    assert status == 200 and body["datasets"][0]["dataset"] == "sample-dataset" and body["datasets"][0]["hashed"] == 32
    status, _, rec = call(server, "GET", "/api/v1/recipe")
    assert status == 200 and rec["hasher"] == {"name": "phash", "bits": 64, "hash_size": 8, "img_size": 32}
    assert rec["limits"]["max_photos"] == 64 and rec["threshold"] == 10
    assert [n for n, _, _ in expand(rec, 512, 384)][:2] == ["id/full", "id/c90"]


def test_search_returns_the_clis_candidates(server, sample, sample_index):
    photos = sorted((sample / "my-photos").iterdir())
    reqs = [photo_hashes(p)[0] for p in photos]
    status, _, body = call(server, "POST", "/api/v1/search", {"photos": reqs})
    assert status == 200 and body["threshold"] == 10
    assert [r["id"] for r in body["results"]] == [p.name for p in photos]
    found = {r["id"]: {c["item"]["key"] for c in r["candidates"]} for r in body["results"]}
    for name, keys in cli_matches(sample_index, photos).items():
        assert set(keys) <= found[name], (name, keys, found[name])  # every CLI match was a candidate
    for r in body["results"]:
        for c in r["candidates"]:
            tries = c["tries"]
            assert 1 <= len(tries) <= 6
            assert [t["distance"] for t in tries] == sorted(t["distance"] for t in tries)
            assert all(t["distance"] <= 10 for t in tries)
            for t in tries:  # every entry tried comes with its thumbnail, a 64x64 greyscale PNG
                thumb = Image.open(io.BytesIO(base64.b64decode(c["thumbs"][t["entry"]])))
                assert thumb.size == (64, 64)
            assert "path" not in c["item"]  # server paths are not handed out


def test_search_without_thumbnails_and_lower_threshold(server, sample):
    req, _ = photo_hashes(sample / "my-photos" / "IMG_0004.png")
    _, _, full = call(server, "POST", "/api/v1/search", {"photos": [req]})
    status, _, body = call(server, "POST", "/api/v1/search", {"photos": [req], "thumbnails": False, "threshold": 0})
    assert status == 200 and body["threshold"] == 0
    cands = body["results"][0]["candidates"]
    assert cands and all(t["distance"] == 0 for c in cands for t in c["tries"])
    assert all(v is None for c in cands for v in c["thumbs"].values())
    assert len(cands) < len(full["results"][0]["candidates"])  # the distance-2 copy is only within 10


def test_item_image(server):
    status, headers, data = call(server, "GET", "/api/v1/items/1/image", raw=True)
    # the stored 64x64 thumbnail (originals only with --serve-originals: tests/test_serve_hardening.py)
    assert status == 200 and headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(data)).size == (64, 64)
    status, _, body = call(server, "GET", "/api/v1/items/99999/image")
    assert status == 404 and body["error"]["code"] == "not_found"


BAD_REQUESTS = [
    # (description, method, path, body, headers, status, error code)
    ("not JSON", "POST", "/api/v1/search", b"{photos: [", {"content-type": "application/json"}, 400, "malformed_json"),
    ("bad hex", "POST", "/api/v1/search", {"photos": [{"id": "a", "hashes": [{"kind": "id/full", "hash": "zz" * 8}]}]}, None, 400, "invalid_hash"),
    ("short hash", "POST", "/api/v1/search", {"photos": [{"id": "a", "hashes": [{"kind": "id/full", "hash": "abcd"}]}]}, None, 400, "invalid_hash"),
    ("256-bit hash on a 64-bit index", "POST", "/api/v1/search", {"photos": [{"id": "a", "hashes": [{"kind": "id/full", "hash": "ab" * 32}]}]}, None, 400, "invalid_hash"),
    ("no hashes", "POST", "/api/v1/search", {"photos": [{"id": "a", "hashes": []}]}, None, 400, "invalid_hash"),
    ("hash not a string", "POST", "/api/v1/search", {"photos": [{"id": "a", "hashes": [{"kind": "id/full", "hash": 12}]}]}, None, 422, "invalid_request"),
    ("no photos field", "POST", "/api/v1/search", {"images": []}, None, 422, "invalid_request"),
    ("body is a list", "POST", "/api/v1/search", [1, 2], None, 422, "invalid_request"),
    ("negative threshold", "POST", "/api/v1/search", {"photos": [], "threshold": -1}, None, 422, "invalid_request"),
    ("threshold above the server's", "POST", "/api/v1/search", {"photos": [], "threshold": 20}, None, 400, "threshold_too_high"),
    ("too many photos", "POST", "/api/v1/search", {"photos": [{"id": str(i), "hashes": [{"kind": "id/full", "hash": "00" * 8}]} for i in range(65)]}, None, 413, "too_many_photos"),
    ("too many hashes", "POST", "/api/v1/search", {"photos": [{"id": "a", "hashes": [{"kind": "x", "hash": "00" * 8}] * 1025}]}, None, 413, "too_many_hashes"),
    ("form instead of JSON", "POST", "/api/v1/search", b"photos=1", {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ("text/plain JSON", "POST", "/api/v1/search", json.dumps({"photos": []}).encode(), {"content-type": "text/plain"}, 415, "unsupported_media_type"),
    ("body over 1 MB", "POST", "/api/v1/search", b"{" + b" " * (1 << 20) + b"}", {"content-type": "application/json"}, 413, "too_large"),
    ("lying Content-Length", "POST", "/api/v1/search", b"{}", {"content-type": "application/json", "content-length": "99999999999"}, 413, "too_large"),
    ("GET on a POST endpoint", "GET", "/api/v1/search", None, None, 405, "method_not_allowed"),
    ("unknown endpoint", "GET", "/api/v1/nothing", None, None, 404, "not_found"),
    ("letters for unknown items", "POST", "/api/v1/letters", {"items": [424242]}, None, 404, "unknown_items"),
    ("letters with an unknown template", "POST", "/api/v1/letters", {"items": [1], "template": "poem"}, None, 422, "invalid_request"),
    ("upload of nothing", "POST", "/api/v1/search-upload", b"", {"content-type": "application/octet-stream"}, 400, "empty"),
    ("upload of text", "POST", "/api/v1/search-upload", b"hello, not a photo", {"content-type": "application/octet-stream"}, 422, "unreadable_image"),
    ("upload as JSON", "POST", "/api/v1/search-upload", b"{}", {"content-type": "application/json"}, 415, "unsupported_media_type"),
    ("item id not a number", "GET", "/api/v1/items/abc/image", None, None, 422, "invalid_request"),
    ("lookup of no account", "POST", "/api/v1/lookup", {"flickr_user": ""}, None, 422, "invalid_request"),
    ("lookup of something not an account", "POST", "/api/v1/lookup", {"flickr_user": "https://example.org/a/b"}, None, 400, "not_a_flickr_user"),
    ("lookup as a form", "POST", "/api/v1/lookup", b"flickr_user=x", {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
]


@pytest.mark.parametrize("what,method,path,body,headers,status,code", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_clear_4xx(server, what, method, path, body, headers, status, code):
    if headers and "content-length" in headers or (body is not None and len(body) > 1 << 20):
        # the server answers 413 from the headers alone, before the body: send them, read the answer
        length = headers["content-length"] if headers and "content-length" in headers else len(body)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {length}\r\n\r\n".encode())
            reply = b""
            while chunk := s.recv(65536):  # the server closes the connection after its answer
                reply += chunk
            reply = reply.decode("latin-1")
        got = int(reply.split()[1])
        parsed = json.loads(reply.split("\r\n\r\n", 1)[1])
    else:
        got, _, parsed = call(server, method, path, body, headers)
    assert got == status, (what, got, parsed)
    assert parsed["error"]["code"] == code and parsed["error"]["message"]
    status2, _, health = call(server, "GET", "/api/v1/health")  # and the server is still fine
    assert status2 == 200 and health["items"] == 32


def test_chunked_body_over_the_limit(server):
    """No Content-Length: the body is counted as it arrives and refused once over 1 MB."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        reply = b""
        try:
            for _ in range(40):
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            reply = s.recv(65536)
        except ConnectionResetError:
            pass
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert call(server, "GET", "/api/v1/health")[0] == 200


def test_invalid_hash_error_says_where(server):
    body = {"photos": [{"id": "a", "hashes": [{"kind": "id/full", "hash": "00" * 8}, {"kind": "id/c90", "hash": "xyz"}]}]}
    status, _, err = call(server, "POST", "/api/v1/search", body)
    assert status == 400 and err["error"]["details"][0]["loc"] == "photos.0.hashes.1.hash"
    assert "16 hex digits" in err["error"]["details"][0]["msg"]


def test_cors_is_off_by_default(server):
    status, headers, _ = call(server, "OPTIONS", "/api/v1/search",
                              headers={"origin": "https://evil.example", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in headers and status >= 400
    status, headers, _ = call(server, "GET", "/api/v1/health", headers={"origin": "https://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in headers


def test_cors_when_allowed(sample_index):
    with MatcherServer(sample_index, "--cors-origin", "https://ok.example") as s:
        _, headers, _ = call(s, "GET", "/api/v1/health", headers={"origin": "https://ok.example"})
        assert headers.get("access-control-allow-origin") == "https://ok.example"
        _, headers, _ = call(s, "GET", "/api/v1/health", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in headers


def test_rate_limit(sample_index):
    with MatcherServer(sample_index, "--rate-limit", "2") as s:
        statuses = [call(s, "GET", "/api/v1/datasets")[0] for _ in range(12)]
        # a burst of 4 (2x the rate; the start-up health check took one), then refused
        assert statuses[:3] == [200] * 3 and 3 <= statuses.count(200) <= 5 and statuses[-1] == 429
        status, headers, body = call(s, "GET", "/api/v1/datasets")
        assert status == 429 and int(headers["retry-after"]) >= 1 and body["error"]["code"] == "rate_limited"
        status, _, _ = call(s, "GET", "/")  # the page itself is not rate limited
        assert status == 200
        time.sleep(1.1)
        assert call(s, "GET", "/api/v1/datasets")[0] == 200  # tokens come back


def test_slow_body_gets_408_and_others_are_served(sample_index):
    """A client that trickles its body does not block anyone; it is cut off after the body timeout."""
    with MatcherServer(sample_index, "--rate-limit", "0", "--body-timeout", "3") as s:
        slow = socket.create_connection(("127.0.0.1", s.port), timeout=60)
        slow.sendall(b"POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"photos\"")
        t0 = time.monotonic()
        for _ in range(5):  # meanwhile, others are answered at once
            assert call(s, "GET", "/api/v1/health")[0] == 200
        assert time.monotonic() - t0 < 3
        slow.settimeout(20)
        reply = b""
        while chunk := slow.recv(4096):  # the server gives up on the slow body (3 s here), answers and closes
            reply += chunk
        reply = reply.decode("latin-1")
        slow.close()
        assert reply.startswith("HTTP/1.1 408") and '"timeout"' in reply


def test_page_and_docs_are_self_contained(server):
    import re

    status, headers, html = call(server, "GET", "/", raw=True)
    assert status == 200 and "script-src 'self'" in headers["content-security-policy"]
    text = html.decode()
    assert "photos are not uploaded" in text.lower()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text)  # no inline scripts
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing from another host
    for path in re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", text):
        assert call(server, "GET", path, raw=True)[0] == 200
    status, _, spec = call(server, "GET", "/openapi.json")
    assert status == 200
    for p in ("/api/v1/search", "/api/v1/datasets", "/api/v1/health", "/api/v1/search-upload", "/api/v1/letters"):
        assert p in spec["paths"]
    status, _, docs = call(server, "GET", "/docs", raw=True)
    assert status == 200 and b"/static/api.js" in docs


def test_upload_is_searched_like_the_cli_and_never_stored(sample, sample_index, tmp_path):
    """A HEIC the browser cannot decode: uploaded, hashed in memory, searched as the CLI searches it.
    Afterwards no file anywhere the server could write holds any part of it."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    heic = tmp_path / "photos" / "IMG_0005.heic"
    heic.parent.mkdir()
    Image.open(sample / "my-photos" / "IMG_0005.jpg").save(heic, "HEIF", quality=92)
    data = heic.read_bytes()
    tmp = tmp_path / "server-tmp"
    tmp.mkdir()
    cwd = tmp_path / "server-cwd"
    cwd.mkdir()
    before = {p: p.stat().st_mtime_ns for p in sample_index.rglob("*") if p.is_file()}
    with MatcherServer(sample_index, "--rate-limit", "0", env={"TMPDIR": str(tmp), "HOME": str(tmp_path / "home")},
                       cwd=cwd) as s:
        status, _, body = call(s, "POST", "/api/v1/search-upload?name=IMG_0005.heic", data,
                               {"content-type": "application/octet-stream"})
        assert status == 200, body
        fd_targets = [os.readlink(f"/proc/{s.proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{s.proc.pid}/fd")]
    assert body["id"] == "IMG_0005.heic" and body["preview"].startswith("data:image/jpeg;base64,")
    assert [m["key"] for m in body["matches"]] == cli_matches(sample_index, [heic])["IMG_0005.heic"]
    assert body["matches"] and all(m["path"] is None for m in body["matches"])
    # nothing written: no file in the server's temp dir, working dir or home; the index unchanged
    assert not any(p.is_file() for d in (tmp, cwd, tmp_path / "home") if d.exists() for p in d.rglob("*"))
    assert {p: p.stat().st_mtime_ns for p in sample_index.rglob("*") if p.is_file()} == before
    assert not any("deleted" in t or str(tmp) in t for t in fd_targets)
    probes = [data[i : i + 64] for i in range(1000, len(data) - 64, len(data) // 7)]
    for p in sample_index.rglob("*"):
        if p.is_file():
            blob = p.read_bytes()
            assert not any(probe in blob for probe in probes), p


def test_nothing_about_clients_is_logged_unless_asked(sample_index, sample):
    """No client address, hash or photo name reaches the server's output (or disk) without --access-log."""
    req, _ = photo_hashes(sample / "my-photos" / "IMG_0002.jpg")
    req["id"] = "secret-photo-name.jpg"
    for flag in ((), ("--access-log",)):
        s = MatcherServer(sample_index, "--rate-limit", "0", *flag)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
            conn.connect()
            client_port = conn.sock.getsockname()[1]
            conn.request("POST", "/api/v1/search", body=json.dumps({"photos": [req]}),
                         headers={"content-type": "application/json"})
            r = conn.getresponse()
            assert r.status == 200 and r.read()
            conn.request("POST", "/api/v1/search", body=b"{bad", headers={"content-type": "application/json"})
            r = conn.getresponse()
            assert r.status == 400 and r.read()
            conn.close()
        finally:
            out = s.stop()
        leaked = [x for x in (f":{client_port}", req["hashes"][0]["hash"], "secret-photo-name") if x in out]
        if flag:
            assert f":{client_port}" in out and "/api/v1/search" in out  # the operator asked for it
        else:
            assert not leaked, out


def test_lookup_lists_an_accounts_items_as_the_cli_does(server, sample_index):
    for who in ("90018885@N03", "90018885@n03", "https://www.flickr.com/people/90018885@N03/", "nobody"):
        status, _, body = call(server, "POST", "/api/v1/lookup", {"flickr_user": who})
        assert status == 200, body
        cli = run_matcher("lookup", "--index", str(sample_index), "--flickr-user", who, "--json")
        want = [it["key"] for it in json.loads(cli.stdout)["items"]] if cli.returncode in (0, 1) else []
        assert [it["key"] for it in body["items"]] == want and body["total"] == len(want), who
        assert body["available"] and not body["truncated"]
    status, _, body = call(server, "POST", "/api/v1/lookup", {"flickr_user": "90018885@N03"})
    (it,) = body["items"]
    assert it["key"] == "ds-0014" and it["flickr"]["owner_nsid"] == "90018885@N03" and it["status"] == "ok"
