"""Hostile files: no crash on any input, every file hashed or reported with a reason, each one bounded.

A small corpus from scripts/make-hostile-corpus (150 entries: every fixed case once, and random
truncations, bit flips and splices of real photos in every format) goes through `matcher add` and
`matcher search --json` as a user runs them. benchmarks/bench_hostile.py runs the same with 1,000+
files and 100 MP images, and measures time and memory. Then regression tests for what the corpus
found: a progressive JPEG of thousands of scans (minutes of decoding for 40 KB), file names that are
not UTF-8 (a traceback from `add`), folders that cannot be listed (silently skipped), wide pixel
modes through float64 copies (2.7 GB for a 100 MP float TIFF).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, catalog_sql, run_matcher
from matcher.errors import ImageTooLarge, UnreadableImage
from matcher.imaging.images import Limits, iter_image_files, load_image, normalise, shown_path
from matcher.ingest.sources import FolderSource

COUNT = 150
#: Bound on each command over the small corpus (it takes ~10-20 s on a busy 2-core machine).
RUN_TIMEOUT = 150


def _load_maker():
    path = ROOT / "scripts" / "make-hostile-corpus"
    loader = importlib.machinery.SourceFileLoader("make_hostile_corpus", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


maker = _load_maker()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("hostile") / "corpus"
    t0 = time.monotonic()
    proc = maker.main(["--out", str(out), "--count", str(COUNT), "--seed", "7", "--no-large"])
    assert proc == 0
    listing = maker.read_listing(out)
    assert len(listing) == COUNT
    assert time.monotonic() - t0 < 60
    return out, listing


def _files(listing: list[dict]) -> list[dict]:
    return [r for r in listing if r["expect"] != "not_a_file"]


def _check(files: list[dict], outcomes: dict[str, tuple[str, str, str]]) -> None:
    missing = [r["path"] for r in files if maker.outcome_of(r["path"], outcomes) is None]
    assert not missing, f"neither hashed nor reported: {missing}"
    wrong = []
    for r in files:
        status, kind, reason = maker.outcome_of(r["path"], outcomes)
        if status == "failed":
            assert reason.strip(), r["path"]
        ok = {"hashed": status == "ok", "too_large": (status, kind) == ("failed", "too_large"),
              "refused": status == "failed"}.get(r["expect"], True)
        if not ok:
            wrong.append(f"{r['path']}: expected {r['expect']}, got {status} {kind} {reason}")
    assert not wrong, "\n".join(wrong)


def test_the_corpus_covers_every_category(corpus):
    _, listing = corpus
    cats = {r["category"] for r in listing}
    assert {"zero-byte", "wrong-ext", "bomb", "dims", "modes", "animated", "heif", "exif", "fs", "truncated",
            "header-flip", "body-flip", "splice", "heif-corrupt"} <= cats
    kinds = {r["kind"] for r in listing}
    assert {"file", "symlink", "fifo", "dir"} <= kinds
    assert any(r["path"].endswith(".heic") and r["category"] == "heif-corrupt" for r in listing)
    assert any("\\x" in r["path"] for r in listing)  # names that are not UTF-8


@pytest.fixture(scope="module")
def added(corpus, tmp_path_factory):
    root, _ = corpus
    index = tmp_path_factory.mktemp("hostile-index") / "index"
    t0 = time.monotonic()
    proc = run_matcher("add", "--index", str(index), "--workers", "2", str(root), timeout=RUN_TIMEOUT)
    return index, proc, time.monotonic() - t0


def test_add_hashes_or_reports_every_file(corpus, added):
    _, listing = corpus
    index, proc, elapsed = added
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    rows = catalog_sql(index, "SELECT key, status, error_kind, error FROM items")
    outcomes = {k: (s, ek or "", e or "") for k, s, ek, e in rows}
    _check(_files(listing), outcomes)
    assert elapsed < RUN_TIMEOUT
    # the index opens cleanly, and lists every failure with its reason
    info = run_matcher("info", "--index", str(index), "--json", "--failures", timeout=60)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    failed = {f["key"]: f["error"] for f in data["failed"]}
    assert failed == {k: e for k, (s, _, e) in outcomes.items() if s == "failed"}
    assert all(failed.values())
    (ds,) = data["datasets"]
    assert ds["items"] == len(rows) and ds["hashed"] == sum(s == "ok" for s, _, _ in outcomes.values())


def test_search_answers_for_every_file(corpus, added):
    root, listing = corpus
    index, _, _ = added
    t0 = time.monotonic()
    proc = run_matcher("search", "--index", str(index), "--workers", "2", "--json", str(root), timeout=RUN_TIMEOUT)
    assert time.monotonic() - t0 < RUN_TIMEOUT
    assert proc.returncode in (0, 1, 2), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    prefix = str(root) + "/"
    outcomes = {}
    for line in proc.stdout.splitlines():
        obj = json.loads(line)
        assert obj["query"].startswith(prefix)
        err = obj["error"]
        assert (obj["hash"] is None) == bool(err), obj
        kind = "too_large" if err and ("limit" in err or "bomb" in err) else "unreadable"
        outcomes[obj["query"][len(prefix):]] = ("failed", kind, err) if err else ("ok", "", "")
    _check(_files(listing), outcomes)


def test_bombs_are_refused_as_too_large_at_once(corpus):
    root, listing = corpus
    bombs = [r for r in listing if r["expect"] == "too_large"]
    assert len(bombs) >= 10
    for r in bombs:
        p = os.fsdecode(os.path.join(os.fsencode(root), bytes.fromhex(r["raw"])))
        t0 = time.monotonic()
        with pytest.raises(ImageTooLarge):
            load_image(p)
        assert time.monotonic() - t0 < 2.0, r["path"]


# --------------------------------------------------------------------------- regressions


def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding():
    """A valid progressive JPEG whose last scan repeats: each repeat costs a pass over every block
    (libjpeg-turbo's LJT-01-003). 2000x2000 with 3000 scans decoded for 23 s; 100 MP would take hours."""
    bomb = maker.scan_bomb(512, 300)
    t0 = time.monotonic()
    with pytest.raises(ImageTooLarge, match="more than 100 scans"):
        load_image(bomb)
    assert time.monotonic() - t0 < 1.0
    # under the limit it decodes; the limit is a Limits field
    assert load_image(maker.scan_bomb(64, 20)).image.size == (64, 64)
    with pytest.raises(ImageTooLarge):
        load_image(maker.scan_bomb(64, 20), limits=Limits(max_scans=10))
    # an ordinary progressive photo, and a baseline one, are far from it
    for prog in (True, False):
        im = Image.effect_noise((640, 480), 60).convert("RGB")
        b = maker.encode(im, "JPEG", progressive=prog, quality=90)
        assert load_image(b).image.size == (640, 480)


def test_file_names_that_are_not_utf8_are_hashed_and_shown(tmp_path, sample, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    data = (sample / "my-photos" / "IMG_0003.jpg").read_bytes()
    (photos / "plain.jpg").write_bytes(data)
    with open(os.path.join(os.fsencode(photos), b"caf\xe9.jpg"), "wb") as f:
        f.write(data)
    keys = sorted(i.key for i in FolderSource(photos).items())
    assert keys == ["caf\\xe9.jpg", "plain.jpg"]
    assert shown_path("caf\udce9.jpg") == "caf\\xe9.jpg" and shown_path("é.jpg") == "é.jpg"
    index = tmp_path / "index"
    add = run_matcher("add", "--index", str(index), "--workers", "0", str(photos), timeout=120)
    assert add.returncode == 0 and "Traceback" not in add.stderr, add.stderr
    assert sorted(catalog_sql(index, "SELECT key, status FROM items")) == [("caf\\xe9.jpg", "ok"), ("plain.jpg", "ok")]
    # a strict UTF-8 stdout (any UTF-8 locale but C.UTF-8) printed the raw name: UnicodeEncodeError
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8:strict")
    search = run_matcher("search", "--index", str(index), "--workers", "0", "--json", str(photos), timeout=120)
    assert search.returncode == 0 and "Traceback" not in search.stderr, search.stderr
    queries = sorted(json.loads(line)["query"] for line in search.stdout.splitlines())
    assert queries == [str(photos / "caf\\xe9.jpg"), str(photos / "plain.jpg")]


def test_a_folder_that_cannot_be_listed_is_reported_not_skipped(tmp_path, sample):
    """A folder past PATH_MAX (or without permission, as any user but root) was silently left out."""
    data = (sample / "my-photos" / "IMG_0003.jpg").read_bytes()
    fd = os.open(tmp_path, os.O_RDONLY)
    rel = []
    try:
        for k in range(18):
            name = f"d{k:02d}" + "x" * 247
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            rel.append(name)
        w = os.open("deep.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(w, data)
        os.close(w)
    finally:
        os.close(fd)
    (tmp_path / "top.jpg").write_bytes(data)
    found = list(iter_image_files(tmp_path))
    assert found[-1] == tmp_path / "top.jpg" and len(found) == 2
    folder = found[0]
    assert len(str(folder)) >= 4096 and tmp_path.joinpath(*rel).as_posix().startswith(str(folder))
    with pytest.raises(UnreadableImage, match="cannot read file"):
        load_image(folder)
    with pytest.raises(UnreadableImage, match="not a regular file: a folder$"):
        load_image(tmp_path)


def test_a_reason_does_not_depend_on_the_file_name(tmp_path):
    p = tmp_path / "truncated-but-not-an-image.png"
    p.write_bytes(b"hello" * 50)
    with pytest.raises(UnreadableImage, match="^not an image"):
        load_image(p)


def test_wide_modes_convert_as_before_without_float64_copies():
    """I;16, I and F were converted through float64 arrays (a 100 MP float TIFF: 2.7 GB); now in place, in
    4 bytes a pixel, to exactly the same pixels."""
    rng = np.random.default_rng(3)
    a16 = rng.integers(0, 65536, (64, 80), dtype=np.uint16)
    i32 = rng.integers(-500, 70000, (64, 80)).astype(np.int32)
    f = rng.random((64, 80), dtype=np.float32)
    f[::5, ::3] = np.nan
    for im, ref in [
        (Image.fromarray(a16), a16 / 257.0),
        (Image.frombytes("I;16B", (80, 64), a16.astype(">u2").tobytes()), a16 / 257.0),
        (Image.fromarray(i32), i32 * (255.0 / i32.max())),  # above 65535: scaled by the image's own maximum
        (Image.fromarray(f), np.nan_to_num(f.astype(np.float64) * 255.0, nan=0.0)),
        (Image.fromarray(f * 255), np.nan_to_num(f.astype(np.float64) * 255.0, nan=0.0)),
    ]:
        out = normalise(im)
        assert out.mode == "L"
        want = np.clip(np.rint(ref), 0, 255).astype(np.uint8)
        assert np.abs(np.asarray(out).astype(int) - want).max() <= (0 if im.mode.startswith("I;16") else 1), im.mode
