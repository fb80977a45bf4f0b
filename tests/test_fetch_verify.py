"""On-demand verification (issue 16): a dataset added with ``--thumbnails none`` from URLs, searched while its
images are only on a (real, loopback) web server. A candidate is verified against the image fetched from its
URL with the ingest downloader's guards (loopback refused unless allowed), exactly as a local file is
(aligned pixels, then the full-detail check), nothing is written to disk, and an image that cannot be fetched
leaves the match unverified with the reason. The real CLI in subprocesses; the upload path of ``serve``
(``search_bytes``) in-process.
"""

from __future__ import annotations

import csv
import json
import urllib.request
from pathlib import Path

import pytest

from conftest import LoopbackHandler, LoopbackServer, MatcherServer, run_matcher
from matcher.engine.api import search_bytes
from matcher.engine.fetched import NOT_FETCHED
from matcher.index.store import IndexStore
from matcher.ingest.policy import FetchSettings

PHOTO = "IMG_0002.jpg"  # its copies in the sample dataset: ds-0007 and ds-0011
COPIES = {"ds-0007", "ds-0011"}


class _Images(LoopbackHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path, _ = self.count_hit()
        route = self.server.routes.get(path)
        if route is None:
            self.reply(404, "text/plain", b"no such image")
        else:
            self.reply(200, *route)


@pytest.fixture(scope="module")
def remote(tmp_path_factory, sample):
    """A codes-only index of the sample dataset added from the loopback server's URLs (no local files)."""
    root = tmp_path_factory.mktemp("fetch-verify")
    routes = {}
    with open(sample / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    server = LoopbackServer(_Images, routes)
    with server.running():
        with open(root / "manifest.csv", "w", newline="") as out:
            w = csv.writer(out)
            w.writerow(["id", "url"])
            for r in rows:
                name = "/" + Path(r["path"]).name
                routes[name] = ("image/jpeg", (sample / r["path"]).read_bytes())
                w.writerow([r["id"], server.url(name)])
        index = root / "index"
        run_matcher("add", "--index", str(index), "--thumbnails", "none", "--allow-private-urls", "--workers", "0",
                    str(root / "manifest.csv"), check=True)
        server.hits.clear()
        yield index, server, routes


def _search(index: Path, photo: Path, *flags: str, cwd: Path | None = None) -> list[dict]:
    p = run_matcher("search", "--index", str(index), "--json", "--workers", "0", *flags, str(photo), cwd=cwd)
    assert p.returncode in (0, 1), p.stderr
    (r,) = [json.loads(line) for line in p.stdout.splitlines()]
    return r["matches"]


def _files(d: Path) -> dict[str, int]:
    """The index's files and their sizes (SQLite's -wal/-shm come and go with any reader)."""
    return {p.name: p.stat().st_size for p in d.iterdir() if not p.name.endswith(("-wal", "-shm"))}


def test_a_remote_copy_is_verified_against_its_image_fetched_from_the_url(remote, sample, tmp_path):
    index, server, _ = remote
    before = _files(index)
    matches = _search(index, sample / "my-photos" / PHOTO, "--allow-private-urls", cwd=tmp_path)
    assert {m["key"] for m in matches} == COPIES
    for m in matches:
        ev = m["evidence"]
        assert ev["score"] >= ev["min_score"] and "unverifiable" not in ev
        assert ev["motion"] <= ev["max_motion"]  # the full-detail check ran on the fetched image
    assert sum(server.hits.values()) >= len(COPIES)
    assert _files(index) == before and not any(tmp_path.iterdir())  # nothing cached: index, working folder


def test_an_image_that_cannot_be_fetched_leaves_the_match_unverified_with_the_reason(remote, sample):
    index, server, routes = remote
    saved = dict(routes)
    routes.clear()  # every image now answers 404
    try:
        matches = _search(index, sample / "my-photos" / PHOTO, "--allow-private-urls")
    finally:
        routes.update(saved)
    assert COPIES <= {m["key"] for m in matches}
    for m in matches:
        ev = m["evidence"]
        assert ev["verified"] is False and "score" not in ev
        assert "dataset image could not be fetched: HTTP 404" in ev["unverifiable"]


def test_loopback_is_refused_without_allow_private_urls_as_in_ingest(remote, sample):
    index, server, _ = remote
    server.hits.clear()
    matches = _search(index, sample / "my-photos" / PHOTO)
    assert COPIES <= {m["key"] for m in matches}
    for m in matches:
        assert m["evidence"]["verified"] is False
        assert "could not be fetched" in m["evidence"]["unverifiable"]
        assert "refusing to connect to non-public address 127.0.0.1" in m["evidence"]["unverifiable"]
    assert sum(server.hits.values()) == 0  # refused before connecting


def test_no_fetch_reports_unverified_and_fetches_nothing(remote, sample):
    index, server, _ = remote
    server.hits.clear()
    matches = _search(index, sample / "my-photos" / PHOTO, "--no-fetch", "--allow-private-urls")
    assert COPIES <= {m["key"] for m in matches}
    for m in matches:
        assert m["evidence"]["verified"] is False and "fetching is off" in m["evidence"]["unverifiable"]
    assert sum(server.hits.values()) == 0


def test_upload_search_fetches_only_when_the_server_opts_in(remote, sample):
    """``serve`` passes its ``--fetch-unverified`` settings to search_bytes (None by default: nothing fetched)."""
    index, server, _ = remote
    data = (sample / "my-photos" / PHOTO).read_bytes()
    server.hits.clear()
    with IndexStore.open(index) as store:
        off = search_bytes(store, PHOTO, data)
        assert sum(server.hits.values()) == 0
        on = search_bytes(store, PHOTO, data, fetch=FetchSettings(allow_private=True, retries=0))
    assert {m.item.key for m in off.matches} >= COPIES
    assert all(m.evidence["verified"] is False and NOT_FETCHED in m.evidence["unverifiable"] for m in off.matches)
    assert {m.item.key for m in on.matches} == COPIES
    assert all("unverifiable" not in m.evidence and m.evidence["score"] >= m.evidence["min_score"]
               for m in on.matches)


def _upload(server: MatcherServer, photo: Path) -> list[dict]:
    req = urllib.request.Request(server.url(f"/api/v1/search-upload?name={photo.name}"), data=photo.read_bytes(),
                                 headers={"content-type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["matches"]


def test_serve_fetches_for_uploads_only_with_fetch_unverified(remote, sample):
    """The server's default fetches nothing (no dataset host is contacted for whoever uploads);
    --fetch-unverified verifies with the same guards as search."""
    index, images, _ = remote
    photo = sample / "my-photos" / PHOTO
    images.hits.clear()
    with MatcherServer(index, "--rate-limit", "0") as s:
        off = _upload(s, photo)
    assert sum(images.hits.values()) == 0
    assert COPIES <= {m["key"] for m in off}
    assert all(m["evidence"]["verified"] is False and "fetching is off" in m["evidence"]["unverifiable"] for m in off)
    with MatcherServer(index, "--rate-limit", "0", "--fetch-unverified", "--allow-private-urls") as s:
        on = _upload(s, photo)
    assert {m["key"] for m in on} == COPIES
    assert all("unverifiable" not in m["evidence"] and m["evidence"]["score"] >= m["evidence"]["min_score"]
               for m in on)
