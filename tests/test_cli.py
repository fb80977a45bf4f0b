"""The ``matcher`` command end to end, in subprocesses, on the bundled sample."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import faiss
import pytest
from PIL import Image

from conftest import catalog_sql, check_entry_kinds, run_matcher
from matcher.imaging.regions import FACE_SCALES, query_variants
from matcher.report.formats import CSV_COLUMNS
from matcher.hashing.detail import DEFAULT_MAX_MOTION
from matcher.hashing.verify import DEFAULT_MIN_SCORE

MATCH_KEYS = {"dataset", "key", "url", "path", "distance", "owner", "license", "evidence"}
#: Items in sample/manifest.csv (one per row).
SAMPLE_ITEMS = sum(1 for _ in csv.DictReader(open(Path(__file__).resolve().parent.parent / "sample" / "manifest.csv")))
#: Every name a query variant can have (they do not depend on the photo), faces aside.
VARIANT_NAMES = {v.name for v in query_variants(Image.new("L", (64, 48)))[1]}
FACE_VARIANT = re.compile(r"face\d+/x(%s)(@[+-]\d[+-]\d)?" % "|".join(re.escape(f"{k:g}") for k in FACE_SCALES))


def _flat(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


def _jsonl(stdout: str) -> list[dict]:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines]


def _matched(results: list[dict]) -> dict[str, set[str]]:
    return {Path(r["query"]).name: {m["key"] for m in r["matches"]} for r in results}


def _info(index: Path, *extra: str) -> dict:
    p = run_matcher("info", "--index", str(index), "--json", *extra, check=True)
    return json.loads(p.stdout)


def _counts(dataset: dict) -> dict:
    """A dataset of `info --json` without its record's source and times."""
    return {k: v for k, v in dataset.items() if k not in ("source", "created_at", "updated_at")}


def _no_traceback(p) -> None:
    assert "Traceback" not in p.stderr, p.stderr
    assert "Traceback" not in p.stdout


def _sql(index: Path, query: str, *args) -> list[tuple]:
    return catalog_sql(index, query, *args)


def _entry_ids(index: Path) -> list[int]:
    return [i for (i,) in _sql(index, "SELECT id FROM entries ORDER BY id")]


def _entry_kinds(index: Path, dataset: str, key: str) -> list[str]:
    return [k for (k,) in _sql(index, "SELECT entries.kind FROM entries JOIN items ON items.id = entries.item_id"
                                      " WHERE items.dataset = ? AND items.key = ? ORDER BY entries.kind", dataset, key)]


def _check_entries(index: Path, data: dict) -> None:
    """``info --json`` against the catalog, and the FAISS file against the catalog.

    Each hashed item has one ``full`` entry and at most one entry of each other kind (the
    photo inside padding or a frame); a failed item has none. FAISS holds exactly the
    catalog's entry ids, so ``entries`` counts entries, not items.
    """
    ids = _entry_ids(index)
    assert data["entries"] == len(ids)
    raw = faiss.read_index_binary(str(index / "index.faiss"))
    assert sorted(faiss.vector_to_array(raw.id_map).tolist()) == ids
    check_entry_kinds(index)
    per_ds = dict(_sql(index, "SELECT items.dataset, COUNT(*) FROM entries JOIN items ON items.id = entries.item_id"
                              " GROUP BY items.dataset"))
    assert sum(d["entries"] for d in data["datasets"]) == len(ids)
    for d in data["datasets"]:
        assert d["entries"] == per_ds.get(d["dataset"], 0)
        assert d["entries"] >= d["hashed"]


@pytest.fixture(scope="module")
def index(tmp_path_factory, sample) -> Path:
    """An index of the sample manifest, built once with the real CLI; tests only read it."""
    with open(sample / "manifest.csv", newline="") as f:
        assert sum(1 for _ in csv.DictReader(f)) == SAMPLE_ITEMS
    d = tmp_path_factory.mktemp("cli") / "D"
    p = run_matcher("add", "--index", str(d), "--dataset", "sample", str(sample / "manifest.csv"))
    assert p.returncode == 0, p.stderr
    _no_traceback(p)
    assert f"{SAMPLE_ITEMS} added" in _flat(p.stderr)
    assert "0 failed" in _flat(p.stderr)
    return d


@pytest.fixture
def index_copy(index, tmp_path) -> Path:
    dst = tmp_path / "D"
    shutil.copytree(index, dst)
    return dst


# --------------------------------------------------------------------------- add / info

def test_info_after_add(index):
    data = _info(index)
    assert data["hasher"]["name"] == "phash"
    assert data["hasher"]["bits"] == 64
    assert data["size_bytes"] > 0
    n = data["entries"]  # one or more entries per item: exactly the catalog's (checked below)
    assert n >= SAMPLE_ITEMS
    assert [_counts(d) for d in data["datasets"]] == [
        {"dataset": "sample", "items": SAMPLE_ITEMS, "hashed": SAMPLE_ITEMS, "failed": 0, "entries": n, "failures": {},
         "version": None, "dead_links": 0, "removed": 0, "removed_entries": 0,
         # how its manifest was read: as a plain CSV, one row an item
         "read": {"formats": ["plain csv"], "rows": SAMPLE_ITEMS, "items": SAMPLE_ITEMS, "faces": 0, "skipped": {}}}
    ]
    _check_entries(index, data)
    assert "failed" not in data
    assert _info(index, "--failures")["failed"] == []


def test_info_text(index):
    p = run_matcher("info", "--index", str(index))
    assert p.returncode == 0
    out = _flat(p.stdout)
    assert "phash" in out and "64 bits" in out and "sample" in out and str(SAMPLE_ITEMS) in out


# --------------------------------------------------------------------------- search

def test_search_json_matches_ground_truth(index, sample, expected):
    p = run_matcher("search", "--index", str(index), "--json", str(sample / "my-photos"))
    assert p.returncode == 0, p.stderr
    _no_traceback(p)
    results = _jsonl(p.stdout)
    assert len(results) == 10
    assert [Path(r["query"]).name for r in results] == sorted(expected)  # input order
    for r in results:
        assert {"query", "matches", "error", "hash"} <= set(r)
        assert r["error"] is None
        assert re.fullmatch(r"[0-9a-f]{16}", r["hash"])
        assert Path(r["query"]).parent == sample / "my-photos"
    got = _matched(results)
    assert got == expected
    # the stereo pair: a different shot of the same scene is not a copy
    assert got["IMG_0007.jpg"] == set()
    assert got["IMG_0002.jpg"] == {"ds-0007", "ds-0011"}

    for r in results:
        for m in r["matches"]:
            assert MATCH_KEYS <= set(m), m
            assert m["dataset"] == "sample"
            assert type(m["distance"]) is int and 0 <= m["distance"] <= 10
            assert m["url"].startswith("https://")
            assert Path(m["path"]).is_file() and Path(m["path"]).parent == (sample / "dataset").resolve()
            assert m["owner"] and m["license"]
            ev = m["evidence"]
            base = {"variant", "entry", "distance", "threshold", "score", "min_score"}
            # the sample's dataset images are local files: every match passed the full-detail check
            assert set(ev) in (base | {"motion", "max_motion"}, base | {"detail"}), ev
            if "motion" in ev:
                assert 0 <= ev["motion"] <= ev["max_motion"] == DEFAULT_MAX_MOTION, ev
            else:
                assert ev["detail"] == "too small or flat to measure motion", ev
            assert ev["variant"] in VARIANT_NAMES or FACE_VARIANT.fullmatch(ev["variant"]), ev
            assert ev["entry"] in _entry_kinds(index, "sample", m["key"]), ev  # an entry this item has
            assert type(ev["distance"]) is int and ev["distance"] == m["distance"]
            assert ev["threshold"] == 10
            assert ev["min_score"] == DEFAULT_MIN_SCORE
            assert isinstance(ev["score"], float) and ev["min_score"] <= ev["score"] <= 1, ev

    one = next(r for r in results if Path(r["query"]).name == "IMG_0001.jpg")["matches"][0]
    assert one["key"] == "ds-0014"
    assert one["owner"] == "90018885@N03"
    assert one["license"] == "CC BY-NC-SA 2.0"
    assert one["title"] == "desk, pens, Tuesday night"
    assert one["page_url"] == "https://www.flickr.com/photos/90018885@N03/3719541668/"
    n_photos, n_matches = sum(1 for v in expected.values() if v), sum(len(v) for v in expected.values())
    assert (n_photos, n_matches) == (7, 12)
    assert f"10 photos checked, {n_photos} found ({n_matches} copies), 0 could not be read" in _flat(p.stderr)


def test_search_table_output(index, sample):
    p = run_matcher("search", "--index", str(index), str(sample / "my-photos" / "IMG_0002.jpg"))
    assert p.returncode == 0, p.stderr
    assert "ds-0007" in p.stdout and "ds-0011" in p.stdout


def test_search_no_match_exits_1(index, sample):
    photos = [str(sample / "my-photos" / q) for q, keys in sorted(_expected_rows(sample).items()) if not keys[0]]
    assert len(photos) == 3  # IMG_0007 (stereo pair), IMG_0008, IMG_0010
    p = run_matcher("search", "--index", str(index), "--json", *photos)
    assert p.returncode == 1, p.stderr
    results = _jsonl(p.stdout)
    assert len(results) == 3
    assert all(r["matches"] == [] and r["error"] is None for r in results)


def test_search_missing_index_dir(tmp_path, sample):
    p = run_matcher("search", "--index", str(tmp_path / "nope"), str(sample / "my-photos"))
    assert p.returncode == 2
    _no_traceback(p)
    assert "nope" in p.stderr


@pytest.mark.parametrize("content", ["some-file", None])
def test_search_dir_that_is_not_an_index(tmp_path, sample, content):
    d = tmp_path / "notindex"
    d.mkdir()
    if content:
        (d / content).write_text("hello")
    p = run_matcher("search", "--index", str(d), "--json", str(sample / "my-photos"))
    assert p.returncode == 2
    _no_traceback(p)
    assert p.stdout == ""
    err = _flat(p.stderr)
    assert "error:" in err
    assert ("not a matcher index" in err) if content else ("no index at" in err)


def test_search_folder_with_broken_file(index, sample, expected, tmp_path):
    q = tmp_path / "photos"
    shutil.copytree(sample / "my-photos", q)
    data = (sample / "my-photos" / "IMG_0001.jpg").read_bytes()
    (q / "IMG_0005b.jpg").write_bytes(data[: len(data) // 3])  # truncated, sorts among the good ones
    p = run_matcher("search", "--index", str(index), "--json", str(q))
    assert p.returncode == 2, p.stderr
    _no_traceback(p)
    results = _jsonl(p.stdout)
    assert len(results) == 11
    by_name = {Path(r["query"]).name: r for r in results}
    broken = by_name.pop("IMG_0005b.jpg")
    assert broken["error"] and isinstance(broken["error"], str)
    assert broken["matches"] == [] and broken["hash"] is None
    assert all(r["error"] is None for r in by_name.values())
    assert _matched(list(by_name.values())) == expected
    assert "1 could not be read" in _flat(p.stderr)


def test_search_missing_query_file(index, tmp_path):
    p = run_matcher("search", "--index", str(index), "--json", str(tmp_path / "ghost.jpg"))
    assert p.returncode == 2
    [r] = _jsonl(p.stdout)
    assert r["error"] and r["matches"] == []


def test_search_empty_folder(index, tmp_path):
    p = run_matcher("search", "--index", str(index), str(tmp_path))
    assert p.returncode == 2
    assert "no photos found" in _flat(p.stderr)


def test_search_csv(index, sample, expected):
    p = run_matcher("search", "--index", str(index), "--csv", str(sample / "my-photos"))
    assert p.returncode == 0, p.stderr
    rows = list(csv.reader(io.StringIO(p.stdout)))
    assert tuple(rows[0]) == CSV_COLUMNS
    body = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert len(body) == sum(len(v) for v in expected.values()) == 12
    got: dict[str, set[str]] = {}
    for r in body:
        got.setdefault(Path(r["query"]).name, set()).add(r["key"])
        assert r["dataset"] == "sample"
        assert int(r["distance"]) <= 10
        assert r["error"] == ""
        assert r["url"].startswith("https://")
    assert got == {k: v for k, v in expected.items() if v}


def test_search_json_and_csv_is_an_error(index, sample):
    p = run_matcher("search", "--index", str(index), "--json", "--csv", str(sample / "my-photos"))
    assert p.returncode == 2
    assert p.stdout == ""
    assert "--json" in p.stderr and "--csv" in p.stderr


def test_search_html_report(index, sample, tmp_path):
    report = tmp_path / "R.html"
    p = run_matcher("search", "--index", str(index), "--html", str(report), str(sample / "my-photos"))
    assert p.returncode == 0, p.stderr
    html = report.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html")
    uris = re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) >= 13  # 6 matched photos + 7 matches
    im = Image.open(io.BytesIO(base64.b64decode(uris[0])))
    assert im.format == "JPEG" and max(im.size) > 16
    # self-contained: nothing is loaded from elsewhere
    assert not re.search(r'<(img|script|link|iframe)[^>]+(src|href)="(https?:)?//', html, re.I)
    assert "ds-0014" in html and "ds-0011" in html
    assert "IMG_0001.jpg" in html


def _expected_rows(sample) -> dict[str, tuple[set[str], set[str]]]:
    """query -> (expected keys, edited keys among them)."""
    with open(sample / "expected.csv", newline="") as f:
        return {r["query"]: ({k for k in r["expected_keys"].split(";") if k},
                             {k for k in r["edited_keys"].split(";") if k}) for r in csv.DictReader(f)}


def test_search_threshold_zero_finds_exact_copies(index, sample, expected):
    """At distance 0 every plain re-host is found, nothing wrong is, and all distances are 0 (most edited
    copies need the default threshold; a 20% centre crop is an exact match of the photo's c80 variant)."""
    p = run_matcher("search", "--index", str(index), "--json", "--threshold", "0", str(sample / "my-photos"))
    assert p.returncode == 0, p.stderr
    results = _jsonl(p.stdout)
    rows = _expected_rows(sample)
    assert sum(len(e) for e, _ in rows.values()) == 12 and sum(len(x) for _, x in rows.values()) == 5
    got = _matched(results)
    assert all(e - x <= got[q] <= e for q, (e, x) in rows.items()), got
    assert sum(len(v) for v in got.values()) < 12
    assert all(m["distance"] == 0 and m["evidence"]["threshold"] == 0 for r in results for m in r["matches"])


@pytest.mark.parametrize("value", ["-1", "65", "ten"])
def test_search_threshold_validated(index, sample, value):
    p = run_matcher("search", "--index", str(index), "--threshold", value, str(sample / "my-photos"))
    assert p.returncode == 2
    assert p.stdout == ""
    assert "--threshold" in p.stderr
    _no_traceback(p)


def test_search_threshold_bounds_accepted(index, sample):
    p = run_matcher("search", "--index", str(index), "--json", "--threshold", "64",
                    str(sample / "my-photos" / "IMG_0007.jpg"))
    # every item is a 64-bit candidate; the pixel verification still rejects the stereo pair
    assert p.returncode == 1, p.stderr
    [r] = _jsonl(p.stdout)
    assert r["matches"] == []


# --------------------------------------------------------------------------- re-adding, failures

def test_add_same_manifest_again(index_copy, sample):
    before = _entry_ids(index_copy)
    p = run_matcher("add", "--index", str(index_copy), "--dataset", "sample", str(sample / "manifest.csv"))
    assert p.returncode == 0, p.stderr
    err = _flat(p.stderr)
    assert "0 added" in err
    assert "0 failed" in err
    assert f"{SAMPLE_ITEMS} already in the index" in err
    data = _info(index_copy)
    assert data["entries"] == len(before)
    assert data["datasets"][0]["items"] == SAMPLE_ITEMS and data["datasets"][0]["hashed"] == SAMPLE_ITEMS
    assert _entry_ids(index_copy) == before  # nothing was re-hashed under new entry ids
    _check_entries(index_copy, data)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_bomb(w: int = 50_000, h: int = 50_000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + _png_chunk(b"IEND", b""))


def test_add_folder_of_broken_files(index_copy, sample, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    good = (sample / "dataset" / "flickr_3719541668_cd273c.jpg").read_bytes()  # ds-0014, copy of IMG_0001
    (junk / "empty.jpg").write_bytes(b"")
    (junk / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (junk / "text.jpg").write_text("this is not a JPEG, just text\n")
    (junk / "random.png").write_bytes(bytes((i * 7919 + 13) % 251 for i in range(4096)))
    (junk / "bomb.png").write_bytes(_png_bomb())
    assert (junk / "bomb.png").stat().st_size < 200
    (junk / "good.jpg").write_bytes(good)
    shutil.copy(sample / "my-photos" / "IMG_0008.jpg", junk / "sub_rocket.jpg")

    before = _info(index_copy)
    p = run_matcher("add", "--index", str(index_copy), "--dataset", "junk", str(junk))
    assert p.returncode == 0, p.stderr
    _no_traceback(p)
    err = _flat(p.stderr)
    assert "2 added" in err and "5 failed" in err

    data = _info(index_copy, "--failures")
    by_ds = {d["dataset"]: d for d in data["datasets"]}
    assert by_ds["sample"] == before["datasets"][0]  # nothing stored earlier is lost
    assert by_ds["junk"]["items"] == 7
    assert by_ds["junk"]["hashed"] == 2
    assert by_ds["junk"]["failed"] == 5
    assert by_ds["junk"]["failures"] == {"unreadable": 4, "too_large": 1}
    assert by_ds["junk"]["entries"] >= 2
    assert data["entries"] == before["entries"] + by_ds["junk"]["entries"]
    _check_entries(index_copy, data)
    # good.jpg is byte for byte ds-0014: the same entries, with the same codes
    same = "SELECT entries.kind, entries.code FROM entries JOIN items ON items.id = entries.item_id" \
           " WHERE items.dataset = ? AND items.key = ? ORDER BY entries.kind"
    assert _sql(index_copy, same, "junk", "good.jpg") == _sql(index_copy, same, "sample", "ds-0014")
    entries = _entry_ids(index_copy)

    failed = {f["key"]: f for f in data["failed"]}
    assert set(failed) == {"empty.jpg", "truncated.jpg", "text.jpg", "random.png", "bomb.png"}
    for key, f in failed.items():
        assert f["dataset"] == "junk"
        assert f["error"] and len(f["error"]) > 5, f
        assert f["path"] == str((junk / key).resolve())
    assert "empty" in failed["empty.jpg"]["error"]
    assert "truncated" in failed["truncated.jpg"]["error"]
    assert "bomb" in failed["bomb.png"]["error"]

    # the old dataset still answers, and the good junk file was hashed
    s = run_matcher("search", "--index", str(index_copy), "--json", str(sample / "my-photos" / "IMG_0001.jpg"))
    assert s.returncode == 0, s.stderr
    [r] = _jsonl(s.stdout)
    assert {(m["dataset"], m["key"]) for m in r["matches"]} == {("sample", "ds-0014"), ("junk", "good.jpg")}

    # rerun: good files are skipped, failed ones retried (and still fail)
    p = run_matcher("add", "--index", str(index_copy), "--dataset", "junk", str(junk))
    assert p.returncode == 0, p.stderr
    err = _flat(p.stderr)
    assert "0 added" in err and "5 failed" in err and "2 already in the index" in err
    data = _info(index_copy)
    assert _entry_ids(index_copy) == entries  # unchanged
    _check_entries(index_copy, data)


def test_add_missing_source(tmp_path):
    p = run_matcher("add", "--index", str(tmp_path / "D"), str(tmp_path / "missing.csv"))
    assert p.returncode == 2
    _no_traceback(p)
    assert "missing.csv" in p.stderr


def test_add_manifest_without_image_column(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("id,caption\n1,a cat\n")
    p = run_matcher("add", "--index", str(tmp_path / "D"), str(m))
    assert p.returncode == 2
    _no_traceback(p)
    assert "--column" in _flat(p.stderr)


def test_add_with_column_override(tmp_path, sample):
    m = tmp_path / "m.csv"
    img = (sample / "dataset" / "flickr_3719541668_cd273c.jpg").resolve()
    m.write_text(f"ident,Pic,Who\nx1,{img},someone\n")
    p = run_matcher("add", "--index", str(tmp_path / "D"), "--column", "path=Pic", "--column", "key=ident",
                    "--column", "owner=Who", "--allow-paths", str(sample), str(m))
    assert p.returncode == 0, p.stderr
    s = run_matcher("search", "--index", str(tmp_path / "D"), "--json", str(sample / "my-photos" / "IMG_0001.jpg"))
    assert s.returncode == 0, s.stderr
    [r] = _jsonl(s.stdout)
    [match] = r["matches"]
    assert (match["dataset"], match["key"], match["owner"], match["path"]) == ("m", "x1", "someone", str(img))


def test_add_non_utf8_manifest_is_reported_not_a_traceback(tmp_path, sample):
    """BUG (matcher/sources.py ManifestSource._rows): a Latin-1 manifest raises UnicodeDecodeError,
    which `add` does not catch (it only catches MatcherError): exit 1 with a traceback."""
    img = (sample / "dataset" / "flickr_3719541668_cd273c.jpg").resolve()
    m = tmp_path / "latin.csv"
    m.write_bytes(f"path,title\n{img},caf\xe9\n".encode("latin-1"))
    p = run_matcher("add", "--index", str(tmp_path / "D"), str(m))
    _no_traceback(p)
    assert p.returncode in (0, 2)


def test_add_gzip_manifest(tmp_path, sample):
    m = tmp_path / "man.csv.gz"
    rows = (sample / "manifest.csv").read_text().splitlines()
    # keep the header + 3 rows, with absolute paths so the manifest can live anywhere
    out = [rows[0]]
    for line in rows[1:4]:
        f = line.split(",")
        f[2] = str((sample / f[2]).resolve())
        out.append(",".join(f))
    with gzip.open(m, "wt", newline="") as fh:
        fh.write("\n".join(out) + "\n")
    p = run_matcher("add", "--index", str(tmp_path / "D"), "--allow-paths", str(sample), str(m))
    assert p.returncode == 0, p.stderr
    data = _info(tmp_path / "D")
    n = data["entries"]
    assert n >= 3
    assert [_counts(d) for d in data["datasets"]] == [
        {"dataset": "man", "items": 3, "hashed": 3, "failed": 0, "entries": n, "failures": {}, "version": None,
         "dead_links": 0, "removed": 0, "removed_entries": 0,
         "read": {"formats": ["plain csv"], "rows": 3, "items": 3, "faces": 0, "skipped": {}}}
    ]
    _check_entries(tmp_path / "D", data)


# --------------------------------------------------------------------------- hasher identity

def _edit_hasher(index_dir: Path, **changes) -> None:
    meta_path = index_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    params = changes.pop("params", {})
    meta["hasher"].update(changes)
    meta["hasher"]["params"].update(params)
    meta_path.write_text(json.dumps(meta, indent=2))


@pytest.mark.parametrize(
    "changes, drop_faiss, needles",
    [
        ({"bits": 256, "params": {"hash_size": 16}}, False, ("256",)),
        ({"bits": 256, "params": {"hash_size": 16}}, True, ("256",)),
        ({"params": {"hash_size": 16}}, False, ("hash_size", "rebuild")),
        ({"version": 2}, False, ("version", "rebuild")),
    ],
    ids=["256-bit", "256-bit-no-faiss", "params-only", "version"],
)
def test_search_index_with_other_hasher_identity(index_copy, sample, changes, drop_faiss, needles):
    _edit_hasher(index_copy, **changes)
    if drop_faiss:
        (index_copy / "index.faiss").unlink()
    p = run_matcher("search", "--index", str(index_copy), "--json", str(sample / "my-photos"))
    assert p.returncode == 2
    _no_traceback(p)
    assert p.stdout == ""  # no results computed with the wrong hash
    err = _flat(p.stderr)
    assert err.startswith("error:")
    for n in needles:
        assert n in err, err
    i = run_matcher("info", "--index", str(index_copy))
    assert i.returncode == 2
    _no_traceback(i)


def test_unknown_hasher_name(index_copy, sample):
    _edit_hasher(index_copy, name="dhash")
    p = run_matcher("search", "--index", str(index_copy), str(sample / "my-photos"))
    assert p.returncode == 2
    _no_traceback(p)
    assert "dhash" in _flat(p.stderr)
