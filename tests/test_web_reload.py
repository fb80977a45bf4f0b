"""`matcher serve` follows its index: a `remove` takes items out of its answers, an `add` puts new ones in,
without a restart (the server reopens the index when a writer has changed it)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from conftest import SAMPLE, MatcherServer, run_matcher
from test_web_api import call

OCTET = {"content-type": "application/octet-stream"}


def upload_keys(server, photo: Path) -> set[tuple[str, str]]:
    status, _, body = call(server, "POST", f"/api/v1/search-upload?name={photo.name}", photo.read_bytes(), OCTET)
    assert status == 200, body
    return {(m["dataset"], m["key"]) for m in body["matches"]}


def until(fn, want, timeout: float = 15.0):
    """Poll ``fn()`` until it returns ``want`` (the server rechecks its index every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def test_the_server_follows_remove_and_add(sample_index, expected, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(sample_index, index)
    photo = SAMPLE / "my-photos" / "IMG_0003.jpg"
    new_photo = SAMPLE / "my-photos" / "IMG_0007.jpg"  # not in the sample dataset
    with MatcherServer(index, "--rate-limit", "0") as s:
        before = upload_keys(s, photo)
        assert {k for _, k in before} >= expected["IMG_0003.jpg"]
        assert upload_keys(s, new_photo) == set()
        status, _, ds = call(s, "GET", "/api/v1/datasets")
        assert [d["dataset"] for d in ds["datasets"]] == ["sample-dataset"]

        gone = sorted(expected["IMG_0003.jpg"])[0]
        rm = run_matcher("remove", "--index", str(index), "--dataset", "sample-dataset", "--key", gone)
        assert rm.returncode == 0, rm.stderr
        after = until(lambda: upload_keys(s, photo), before - {("sample-dataset", gone)})
        assert after == before - {("sample-dataset", gone)}  # out of the answers, no restart

        extra = tmp_path / "extra"
        extra.mkdir()
        shutil.copyfile(new_photo, extra / "copy-of-7.jpg")
        add = run_matcher("add", "--index", str(index), "--dataset", "extra", str(extra))
        assert add.returncode == 0, add.stderr
        assert until(lambda: upload_keys(s, new_photo), {("extra", "copy-of-7.jpg")}) == {("extra", "copy-of-7.jpg")}
        status, _, ds = call(s, "GET", "/api/v1/datasets")
        assert sorted(d["dataset"] for d in ds["datasets"]) == ["extra", "sample-dataset"]
        status, _, health = call(s, "GET", "/api/v1/health")
        assert health["datasets"] == 2
        assert upload_keys(s, photo) == after  # the rest of the index answers as before
    # the served copy is a real index still: the CLI agrees
    res = run_matcher("search", "--index", str(index), "--json", str(new_photo))
    assert '"extra"' in res.stdout
