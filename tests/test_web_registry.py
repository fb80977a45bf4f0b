"""`matcher serve --registry FILE [--accept-registrations]`: the opt-out registry as a service, against a real
server: check by hashes, registration by code pairs (rate limited, stored atomically), the export a
curator uses with `matcher filter`, and the page in real Chromium hashing photos in the browser."""

from __future__ import annotations

import csv
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLE, MatcherServer, run_matcher
from matcher.imaging.images import DEFAULT_LIMITS
from matcher.optout import Registry, photo_codes
from matcher.optout.registry import _hasher

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
MY = SAMPLE / "my-photos"


def _post(server, path: str, body) -> tuple[int, dict, dict]:
    req = urllib.request.Request(server.url(path), json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def _get(server, path: str) -> bytes:
    with urllib.request.urlopen(server.url(path), timeout=30) as r:
        return r.read()


def _pairs(photo: Path) -> list[dict]:
    out = photo_codes(_hasher(), str(photo), DEFAULT_LIMITS)
    assert out[0] == "ok"
    return [{"kind": c.kind, "hash": c.hash.hex(), "confirm": c.confirm.hex()} for c in out[1]]


def _bits(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(bytes(x ^ y for x, y in zip(a, b)), np.uint8)).sum())


def _expected() -> dict[str, list[str]]:
    with open(SAMPLE / "expected.csv", newline="") as f:
        return {r["query"]: [k for k in r["expected_keys"].split(";") if k] for r in csv.DictReader(f)}


def _filtered(tmp_path: Path, registry: Path) -> set[str]:
    out = tmp_path / f"clean-{registry.stem}.csv"
    p = run_matcher("filter", str(SAMPLE / "manifest.csv"), "--registry", str(registry), "--out", str(out),
                    "--workers", "1")
    assert p.returncode == 0, p.stderr
    with open(SAMPLE / "manifest.csv", newline="") as f:
        every = {r["id"] for r in csv.DictReader(f)}
    with open(out, newline="") as f:
        return every - {r["id"] for r in csv.DictReader(f)}


@pytest.fixture
def registry(tmp_path) -> Path:
    reg = tmp_path / "optout.json"
    run_matcher("optout", "add", "--registry", str(reg), "--workers", "0", str(MY / "IMG_0002.jpg"), check=True)
    return reg


def test_check_register_export_and_filter(sample_index, registry, tmp_path):
    with MatcherServer(sample_index, "--registry", str(registry), "--accept-registrations",
                       "--registrations-per-minute", "6") as server:
        info = json.loads(_get(server, "/api/v1/optout/info"))
        assert info["entries"] == 1 and info["accepts_registrations"] is True
        assert info["confirm"]["side"] == 64 and info["confirm"]["source_side"] == 256
        # a dataset copy of the registered photo: confirmed; another photo: nothing
        copy = SAMPLE / "dataset" / "flickr_2368127776_6b8775.jpg"
        st, r, _ = _post(server, "/api/v1/optout/check", {"photos": [
            {"id": "copy", "hashes": _pairs(copy)}, {"id": "other", "hashes": _pairs(MY / "IMG_0008.jpg")},
            {"id": "no-confirm", "hashes": [{"kind": c["kind"], "hash": c["hash"]} for c in _pairs(copy)]}]})
        assert st == 200, r
        copy_m, other_m, plain_m = (p["matches"] for p in r["photos"])
        entry = Registry.load(registry).entries[0].id
        assert [m["entry"] for m in copy_m] == [entry] and copy_m[0]["confirmed"] is True
        assert copy_m[0]["tries"][0]["confirm_distance"] <= r["confirm_threshold"]
        assert other_m == []
        assert [m["entry"] for m in plain_m] == [entry] and "confirmed" not in plain_m[0]  # candidates only
        # a registration: code pairs only; the same photo again is not added twice
        pairs = _pairs(MY / "IMG_0005.jpg")
        st, r, _ = _post(server, "/api/v1/optout/register", {"codes": pairs, "note": "contact: ada@example.org"})
        assert st == 200 and r["new"] is True, r
        new_id = r["id"]
        st, r, _ = _post(server, "/api/v1/optout/register", {"codes": pairs})
        assert st == 200 and r == {"id": new_id, "new": False, "codes": len(pairs)}
        on_disk = Registry.load(registry)
        assert [e.id for e in on_disk.entries] == [entry, new_id] and on_disk.get(new_id).note == "contact: ada@example.org"
        assert not list(tmp_path.glob(".optout.json.tmp*"))
        # bad input: 400, nothing written
        for body, code in [({"codes": pairs[1:]}, "invalid_codes"),
                           ({"codes": [{"kind": "id/full", "hash": pairs[0]["hash"]}]}, "invalid_hash"),
                           ({"codes": [{**pairs[0], "confirm": "zz"}]}, "invalid_hash")]:
            st, r, _ = _post(server, "/api/v1/optout/register", body)
            assert st == 400 and r["error"]["code"] == code, r
        # rate limited: 6 a minute, bursts of 3 (bad requests take none): the third passes, the fourth is refused
        st, r, _ = _post(server, "/api/v1/optout/register", {"codes": _pairs(MY / "IMG_0006.jpg")})
        assert st == 200 and r["new"] is True, r
        st, r, headers = _post(server, "/api/v1/optout/register", {"codes": pairs})
        assert st == 429 and int(headers["retry-after"]) >= 1, r
        exported = tmp_path / "exported.json"
        exported.write_bytes(_get(server, "/api/v1/optout/export"))
    assert len(Registry.load(exported)) == 3
    exp = _expected()
    assert _filtered(tmp_path, exported) == set(exp["IMG_0002.jpg"]) | set(exp["IMG_0005.jpg"]) | set(exp["IMG_0006.jpg"])


def test_registrations_closed_and_flags(sample_index, registry):
    with MatcherServer(sample_index, "--registry", str(registry)) as server:
        st, r, _ = _post(server, "/api/v1/optout/register", {"codes": _pairs(MY / "IMG_0005.jpg")})
        assert st == 403 and r["error"]["code"] == "registrations_closed"
    assert len(Registry.load(registry)) == 1
    p = run_matcher("serve", "--index", str(sample_index), "--accept-registrations")
    assert p.returncode == 2 and "--accept-registrations needs --registry" in p.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test installs it)")
def test_register_in_the_browser_then_a_curator_filters(sample_index, tmp_path):
    from playwright.sync_api import sync_playwright

    registry = tmp_path / "browser.json"
    photos = [MY / "IMG_0001.jpg", MY / "IMG_0003.jpg"]
    with MatcherServer(sample_index, "--registry", str(registry), "--accept-registrations") as server, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page()
            errors, posted = [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: posted.append(r.post_data_buffer or b"") if r.method == "POST" else None)
            page.goto(server.url("/optout"))
            page.wait_for_selector("body[data-ready='1']", timeout=30000)
            assert "not uploaded" in page.inner_text("header")
            page.set_input_files("#pick-files", [str(p) for p in photos])
            page.click("#register")
            page.wait_for_selector("body[data-done='1']", timeout=120000)
            texts = page.eval_on_selector_all("#results li", "els => els.map(e => e.textContent)")
            assert [t.split(":")[0] for t in texts] == ["IMG_0001.jpg", "IMG_0003.jpg"], texts
            assert all("registered as o-" in t for t in texts), texts
            page.click("#check")
            page.wait_for_selector("body[data-done='2']", timeout=120000)
            texts = page.eval_on_selector_all("#results li", "els => els.map(e => e.textContent)")
            assert all("registered as o-" in t and "not" not in t for t in texts), texts
            assert not errors, errors
        finally:
            browser.close()
    # no pixels went out: every request body is JSON of hex codes, far smaller than the photos
    for body in posted:
        data = json.loads(body)
        assert set(data) <= {"codes", "note", "photos"}
    reg = Registry.load(registry)
    assert len(reg) == 2
    # the browser's code pairs are the CLI's: 64-bit codes identical, 256-bit codes within a few bits
    for entry, photo in zip(reg.entries, photos):
        mine = {c["kind"]: c for c in _pairs(photo)}
        assert entry.codes[0].kind == "id/full" and entry.codes[0].hash.hex() == mine["id/full"]["hash"]
        shared = [c for c in entry.codes if c.kind in mine]
        assert len(shared) >= 0.95 * len(mine)
        # the browser decodes the JPEG itself (its IDCT rounds differently): a few codes differ by a bit or two
        near = [_bits(c.hash, bytes.fromhex(mine[c.kind]["hash"])) for c in shared]
        dist = [_bits(c.confirm, bytes.fromhex(mine[c.kind]["confirm"])) for c in shared]
        print(photo.name, "64-bit", np.bincount(near).tolist(), "256-bit", np.bincount(dist).tolist())
        assert np.mean(np.array(near) == 0) >= 0.8 and max(near) <= 4, near
        assert np.median(dist) <= 2 and max(dist) <= 16, dist
    exp = _expected()
    assert _filtered(tmp_path, registry) == set(exp["IMG_0001.jpg"]) | set(exp["IMG_0003.jpg"])
