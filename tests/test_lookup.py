"""Flickr identities end to end: a real index built with the CLI, `matcher lookup`, `search --flickr-user`,
and a catalog from before the identities table."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import catalog_sql, run_matcher
from matcher.index.catalog import SCHEMA_VERSION, Catalog
from matcher.provenance.flickr import short_url

ALICE_NSID = "90018885@N03"
ALICE = "alice_p"
BOB_NSID = "12345678@N00"
MY = "my-photos"


def _manifest(sample: Path, root: Path) -> Path:
    """Rows with Flickr URLs of several forms; the images are the sample's dataset files (local paths)."""
    ds = sample / "dataset"
    rows = [
        # id, url, path, owner, page_url, license, username
        # alice's, matched by IMG_0001.jpg: static URL, NSID owner, her user name as an extra column
        ("a1", "https://farm9.staticflickr.com/7371/3719541668_cd273cbdc1_z.jpg", ds / "flickr_3719541668_cd273c.jpg",
         ALICE_NSID, "", "CC BY 2.0", ALICE),
        # alice's, matched by IMG_0002.jpg: live.staticflickr.com, page URL under her path alias
        ("a2", "https://live.staticflickr.com/7014/2368127776_6b877559d9_b.jpg", ds / "flickr_2368127776_6b8775.jpg",
         ALICE, "https://www.flickr.com/photos/alice_p/2368127776/in/photostream/", "CC BY 2.0", ""),
        # alice's, no photo of the folder matches it: c1.staticflickr.com, page URL under her NSID
        ("a3", "https://c1.staticflickr.com/9/8822/7428492435_b2da9dd176_z.jpg", ds / "flickr_7428492435_b2da9d.jpg",
         "", f"https://secure.flickr.com/photos/{ALICE_NSID}/7428492435/lightbox", "CC BY-NC 2.0", ""),
        # alice's, a dead link: the file is gone and the row has no URL; the page is a flic.kr short link
        ("a4", "", root / "gone" / "4325695128.jpg", ALICE_NSID, short_url(4325695128), "CC BY 2.0", ""),
        # bob's, matched by IMG_0003.jpg: original size, photo.gne page
        ("b1", "https://farm5.staticflickr.com/1915/4540693305_1d7a35dd0d_o.jpg", ds / "flickr_4540693305_1d7a35.jpg",
         BOB_NSID, "https://www.flickr.com/photo.gne?id=4540693305", "CC BY 2.0", ""),
        # not on Flickr by any sign: an owner called alice_p is nobody's Flickr account
        ("c1", "https://images.rehost.example/b1/38/b13829d34779ef0c.jpg", ds / "img_b13829d34779ef0c.jpg",
         ALICE, "", "", ""),
    ]
    path = root / "dif.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "url", "path", "owner", "page_url", "license", "username"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def built(sample, tmp_path_factory):
    root = tmp_path_factory.mktemp("lookup")
    index = root / "index"
    proc = run_matcher("add", "--index", str(index), "--workers", "0", "--allow-paths", str(sample),
                       str(_manifest(sample, root)), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "5 added, 1 failed" in proc.stderr
    photos = root / MY
    photos.mkdir()
    for name in ("IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg", "IMG_0010.jpg"):
        shutil.copy(sample / "my-photos" / name, photos / name)
    return root, index


def _lookup(index: Path, *args: str) -> tuple[int, dict | None, str]:
    proc = run_matcher("lookup", "--index", str(index), *args, "--json")
    data = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, data, proc.stderr


def _keys(data: dict) -> list[str]:
    return [it["key"] for it in data["items"]]


# --------------------------------------------------------------------------- what the catalog holds

def test_identities_recorded_for_ok_and_failed_items(built):
    _, index = built
    rows = catalog_sql(index, "SELECT items.key, items.status, photo_id, owner_nsid, owner_name FROM items"
                              " LEFT JOIN identities ON identities.item_id = items.id ORDER BY items.key")
    assert rows == [
        ("a1", "ok", "3719541668", ALICE_NSID, ALICE),
        ("a2", "ok", "2368127776", None, ALICE),
        ("a3", "ok", "7428492435", ALICE_NSID, None),
        ("a4", "failed", "4325695128", ALICE_NSID, None),
        ("b1", "ok", "4540693305", BOB_NSID, None),
        ("c1", "ok", None, None, None),
    ]
    assert catalog_sql(index, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert SCHEMA_VERSION == 3


# --------------------------------------------------------------------------- matcher lookup

def test_lookup_by_user_name_case_insensitive(built):
    _, index = built
    for name in (ALICE, "ALICE_P", "https://www.flickr.com/photos/alice_p/"):
        rc, data, _ = _lookup(index, "--flickr-user", name)
        assert rc == 0 and _keys(data) == ["a1", "a2"], name  # c1's owner is not a Flickr account
    first = data["items"][0]
    assert first["dataset"] == "dif" and first["url"].startswith("https://farm9.") and first["license"] == "CC BY 2.0"
    assert first["status"] == "ok" and first["flickr"] == {"photo_id": "3719541668", "owner_nsid": ALICE_NSID,
                                                          "owner_name": ALICE}
    assert data["identities_recorded"] is True and data["query"]["owner_name"] == ALICE


def test_lookup_by_nsid_lists_dead_links(built):
    _, index = built
    rc, data, err = _lookup(index, "--nsid", ALICE_NSID.lower())
    assert rc == 0 and _keys(data) == ["a1", "a3", "a4"]
    dead = data["items"][2]
    assert dead["status"] == "failed" and dead["error"] and dead["page_url"] == "https://flic.kr/p/7Afjsu"
    assert "3 items listed (1 failed" in err
    # a user name that is an NSID is looked up as one
    rc, data, _ = _lookup(index, "--flickr-user", ALICE_NSID)
    assert rc == 0 and _keys(data) == ["a1", "a3", "a4"]


def test_lookup_by_photo_id(built):
    _, index = built
    rc, data, _ = _lookup(index, "--photo-id", "4540693305")
    assert rc == 0 and _keys(data) == ["b1"] and data["items"][0]["owner"] == BOB_NSID
    assert _lookup(index, "--photo-id", "04540693305")[1]["items"][0]["key"] == "b1"
    rc, data, err = _lookup(index, "--photo-id", "999")
    assert rc == 1 and data["items"] == [] and "0 items listed" in err


@pytest.mark.parametrize("url, key", [
    # any Flickr URL form of a listed photo finds it, whatever form the dataset listed
    ("https://farm9.staticflickr.com/7371/3719541668_cd273cbdc1_b.jpg", "a1"),  # another size
    ("https://live.staticflickr.com/7371/3719541668_cd273cbdc1.jpg", "a1"),
    ("https://www.flickr.com/photos/alice_p/3719541668/in/photostream/", "a1"),
    ("http://m.flickr.com/photos/90018885@N03/2368127776/", "a2"),
    (short_url(7428492435), "a3"),
    ("https://www.flickr.com/photo.gne?id=4325695128", "a4"),  # the dead link
    ("https://flickr.com/photos/bob/4540693305/sizes/o/", "b1"),
    # any other URL: an exact image URL
    ("https://images.rehost.example/b1/38/b13829d34779ef0c.jpg", "c1"),
])
def test_lookup_by_url(built, url, key):
    _, index = built
    rc, data, _ = _lookup(index, "--url", url)
    assert rc == 0 and _keys(data) == [key]


def test_lookup_nothing_and_errors(built):
    _, index = built
    assert _lookup(index, "--url", "https://images.rehost.example/nope.jpg")[0] == 1
    assert _lookup(index, "--flickr-user", "nobody")[0] == 1
    for args in ([], ["--nsid", "alice"], ["--photo-id", "12x"], ["--flickr-user", "https://example.com/photos/a/"],
                 ["--url", " "], ["--flickr-user", "1@N01", "--nsid", "2@N02"]):
        proc = run_matcher("lookup", "--index", str(index), *args)
        assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr, args
    proc = run_matcher("lookup", "--index", str(index.parent), "--nsid", ALICE_NSID)
    assert proc.returncode == 2 and "not a matcher index" in proc.stderr
    # a record per listed item, each URL whole on a line of its own
    proc = run_matcher("lookup", "--index", str(index), "--nsid", ALICE_NSID)
    assert proc.returncode == 0
    assert "dif a4" in proc.stdout and "failed" in proc.stdout and "   https://flic.kr/p/7Afjsu" in proc.stdout.splitlines()


# --------------------------------------------------------------------------- search joins identity with content

def _search(root: Path, index: Path, *args: str) -> tuple[int, list[dict], str]:
    proc = run_matcher("search", "--index", str(index), "--workers", "0", "--json", *args, str(root / MY))
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_search_with_flickr_user(built):
    root, index = built
    rc, lines, err = _search(root, index, "--flickr-user", ALICE, "--nsid", ALICE_NSID)
    assert rc == 0, err
    photos, identity = lines[:-1], lines[-1]
    found = {Path(r["query"]).name: {m["key"]: m["found_by"] for m in r["matches"]} for r in photos}
    assert found == {"IMG_0001.jpg": {"a1": "both"}, "IMG_0002.jpg": {"a2": "both"}, "IMG_0003.jpg": {"b1": "content"},
                     "IMG_0010.jpg": {}}
    both = photos[0]["matches"][0]
    assert both["distance"] == 0 and both["evidence"]["identity"]["photo_id"] == "3719541668"
    assert "score" in both["evidence"]  # the content evidence stays
    # the listed items no photo matched: query null, found by identity, dead link included
    assert identity["query"] is None and identity["hash"] is None and identity["error"] is None
    assert [(m["key"], m["found_by"], m["distance"]) for m in identity["matches"]] == \
        [("a3", "identity", None), ("a4", "identity", None)]
    a4 = identity["matches"][1]["evidence"]
    assert a4["status"] == "failed" and a4["error"] and a4["identity"]["owner_nsid"] == ALICE_NSID
    assert "4 photos checked, 3 found (3 copies)" in err and "4 items listed under Flickr user alice_p (90018885@N03)" in err
    assert "2 of them also matched a photo" in err


def test_search_without_identity_says_found_by_content(built):
    root, index = built
    rc, lines, _ = _search(root, index)
    assert rc == 0 and len(lines) == 4 and all(r["query"] for r in lines)
    assert {m["found_by"] for r in lines for m in r["matches"]} == {"content"}


def test_search_identity_only_finds_something(built, sample, tmp_path):
    """A folder without matching photos: the listed items alone make exit 0."""
    root, index = built
    folder = tmp_path / MY
    folder.mkdir()
    shutil.copy(sample / "my-photos" / "IMG_0010.jpg", folder)
    proc = run_matcher("search", "--index", str(index), "--workers", "0", "--json", "--nsid", BOB_NSID, str(folder))
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and lines[0]["matches"] == []
    assert [m["key"] for m in lines[1]["matches"]] == ["b1"]
    proc = run_matcher("search", "--index", str(index), "--workers", "0", "--flickr-user", "nobody", str(folder))
    assert proc.returncode == 1 and "no other item is listed" in proc.stdout
    proc = run_matcher("search", "--index", str(index), "--nsid", "nobody", str(folder))
    assert proc.returncode == 2 and "not a Flickr NSID" in proc.stderr


def test_search_csv_table_html_letters(built, tmp_path):
    root, index = built
    html = tmp_path / "report.html"
    letters = tmp_path / "letters"
    proc = run_matcher("search", "--index", str(index), "--workers", "0", "--csv", "--flickr-user", ALICE,
                       "--html", str(html), "--letters", str(letters), str(root / MY))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [(Path(r["query"]).name, r["key"], r["found_by"]) for r in rows] == [
        ("IMG_0001.jpg", "a1", "both"), ("IMG_0002.jpg", "a2", "both"), ("IMG_0003.jpg", "b1", "content")]
    # by name only: a3 and a4 are listed under the NSID, not the name
    proc = run_matcher("search", "--index", str(index), "--workers", "0", "--csv", "--nsid", ALICE_NSID, str(root / MY))
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    identity = [(r["query"], r["key"], r["found_by"], r["distance"]) for r in rows if r["query"] == "(identity)"]
    assert identity == [("(identity)", "a3", "identity", ""), ("(identity)", "a4", "identity", "")]
    assert {r["key"]: r["found_by"] for r in rows if r["query"] != "(identity)"} == \
        {"a1": "both", "a2": "content", "b1": "content"}

    page = html.read_text()
    assert "found by your photo and your Flickr account" in page
    assert 'id="identity"' in page and "0 items" in page  # alice_p by name: every listed item matched a photo
    text = (letters / "dif-list.txt").read_text()
    assert "Flickr account: alice_p" in text and "3719541668" in text

    proc = run_matcher("search", "--index", str(index), "--workers", "0", "--nsid", ALICE_NSID,
                       "--html", str(html), str(root / MY))
    assert proc.returncode == 0
    out = proc.stdout
    assert "found by your photo and your Flickr account" in out and "Listed under" in out and "dif a4" in out
    page = html.read_text()
    assert 'id="identity"' in page and "dif" in page and "https://flic.kr/p/7Afjsu" in page
    assert "Listed under your Flickr account, not found among your photos" in page


# --------------------------------------------------------------------------- catalogs from before the table

def _make_old(index: Path, to: Path) -> Path:
    shutil.copytree(index, to, ignore=shutil.ignore_patterns("lock"))
    db = sqlite3.connect(to / "catalog.sqlite")
    db.execute("DROP TABLE identities")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    return to


def test_old_catalog_is_searched_and_backfilled_when_opened_writable(built, tmp_path):
    root, index = built
    before = catalog_sql(index, "SELECT item_id, photo_id, owner_nsid, owner_name FROM identities ORDER BY item_id")
    old = _make_old(index, tmp_path / "old")

    # read-only: the search works, content only, and says why identities are missing
    rc, lines, err = _search(root, old, "--nsid", ALICE_NSID)
    assert rc == 0 and "no Flickr identities" in err and "matcher compact" in err
    assert {Path(r["query"]).name: [m["key"] for m in r["matches"]] for r in lines[:-1]} == \
        {"IMG_0001.jpg": ["a1"], "IMG_0002.jpg": ["a2"], "IMG_0003.jpg": ["b1"], "IMG_0010.jpg": []}
    assert lines[-1] == {"query": None, "hash": None, "matches": [], "error": None}
    assert {m["found_by"] for r in lines for m in r["matches"]} == {"content"}
    # lookup cannot tell "not listed" from "not recorded": it says so (exit 2); exact URLs still work
    rc, data, err = _lookup(old, "--nsid", ALICE_NSID)
    assert rc == 2 and data["identities_recorded"] is False and data["items"] == []
    assert "rebuild it, or open it writable once" in err
    rc, data, _ = _lookup(old, "--url", "https://images.rehost.example/b1/38/b13829d34779ef0c.jpg")
    assert rc == 0 and _keys(data) == ["c1"]
    c = Catalog(old / "catalog.sqlite")
    assert not c.has_identities and c.lookup(owner_nsid=ALICE_NSID) == [] and c.identities_of([1, 2]) == {}
    c.close()
    assert catalog_sql(old, "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]
    assert not catalog_sql(old, "SELECT 1 FROM sqlite_master WHERE name = 'identities'")  # read-only left it alone

    # opened writable once (compact does): the identities are backfilled from the items, as ingest made them
    proc = run_matcher("compact", "--index", str(old))
    assert proc.returncode == 0, proc.stderr
    assert catalog_sql(old, "SELECT item_id, photo_id, owner_nsid, owner_name FROM identities ORDER BY item_id") == before
    assert catalog_sql(old, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    rc, data, _ = _lookup(old, "--nsid", ALICE_NSID)
    assert rc == 0 and _keys(data) == ["a1", "a3", "a4"]


def test_backfill_is_atomic_and_redone(built, tmp_path):
    """A catalog at version 2 that already has the table (a killed upgrade) is filled again; a version 3
    catalog whose table is missing gets it back."""
    _, index = built
    old = _make_old(index, tmp_path / "old")
    db = sqlite3.connect(old / "catalog.sqlite")
    db.execute("CREATE TABLE identities (item_id INTEGER PRIMARY KEY REFERENCES items (id) ON DELETE CASCADE,"
               " photo_id TEXT, owner_nsid TEXT, owner_name TEXT)")
    db.commit()
    db.close()
    c = Catalog(old / "catalog.sqlite", create=True)
    assert len(c.lookup(owner_nsid=ALICE_NSID)) == 3 and c.get_meta("schema_version") == str(SCHEMA_VERSION)
    c.db.execute("DROP TABLE identities")
    c.close()
    c = Catalog(old / "catalog.sqlite", create=True)
    assert [it.key for it in c.lookup(owner_name="Alice_P")] == ["a1", "a2"]
    c.close()


def test_removed_items_leave_no_identity(built, tmp_path):
    _, index = built
    copy = tmp_path / "copy"
    shutil.copytree(index, copy, ignore=shutil.ignore_patterns("lock"))
    proc = run_matcher("remove", "--index", str(copy), "--key", "a1")
    assert proc.returncode == 0, proc.stderr
    assert _keys(_lookup(copy, "--nsid", ALICE_NSID)[1]) == ["a3", "a4"]
    assert len(catalog_sql(copy, "SELECT * FROM identities")) == 4


def test_rerun_keeps_identities_and_updates_them(built, sample, tmp_path):
    """A rerun of add skips hashed items and retries failed ones: identities stay one per item; an item
    hashed again with other fields gets the new identity."""
    root, index = built
    copy = tmp_path / "copy"
    shutil.copytree(index, copy, ignore=shutil.ignore_patterns("lock"))
    manifest = root / "dif.csv"
    proc = run_matcher("add", "--index", str(copy), "--workers", "0", "--allow-paths", str(sample), str(manifest))
    assert proc.returncode == 0 and "0 added, 1 failed" in proc.stderr
    assert len(catalog_sql(copy, "SELECT * FROM identities")) == 5
    # the dead link comes back (the file appears) under another owner: hashed, identity updated
    gone = root / "gone" / "4325695128.jpg"
    gone.parent.mkdir(exist_ok=True)
    shutil.copy(sample / "dataset" / "flickr_2005397842_dc4d3a.jpg", gone)
    try:
        text = manifest.read_text().replace(f"a4,,{gone},{ALICE_NSID}", f"a4,,{gone},{BOB_NSID}")
        other = tmp_path / "dif.csv"
        other.write_text(text)
        proc = run_matcher("add", "--index", str(copy), "--workers", "0", "--dataset", "dif", "--allow-paths",
                           str(root), "--allow-paths", str(sample), str(other))
        assert proc.returncode == 0 and "1 added, 0 failed" in proc.stderr, proc.stderr
    finally:
        gone.unlink()
    assert catalog_sql(copy, "SELECT items.status, owner_nsid FROM identities JOIN items ON items.id = item_id"
                             " WHERE items.key = 'a4'") == [("ok", BOB_NSID)]
