"""Many datasets in one index: versions recorded by `add`, per-dataset `info`, results grouped by dataset,
a dataset removed as a whole. Real CLI in subprocesses, real SQLite and FAISS, the bundled sample photos
(and a loopback HTTP server for dead links)."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from pathlib import Path

import pytest

from conftest import SAMPLE, LoopbackHandler, LoopbackServer, catalog_sql, run_matcher
from matcher.index.catalog import Catalog
from matcher.errors import CatalogError


def _flat(text: str) -> str:
    return " ".join(text.split())


def _manifest(sample: Path, path: Path, keys: set[str]) -> Path:
    """Rows of sample/manifest.csv with these ids, local paths made absolute."""
    with open(sample / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["id"] in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "path": str((sample / r["path"]).resolve())})
    return path


A_KEYS = {f"ds-{i:04d}" for i in range(1, 11)}  # holds ds-0007, a copy of IMG_0002.jpg
B_KEYS = {f"ds-{i:04d}" for i in range(11, 17)}  # holds ds-0011, another copy of IMG_0002.jpg, and ds-0014 (IMG_0001)


def _add(index: Path, *args: str):
    # the manifests here name the sample's photos by absolute path, outside their own folder
    return run_matcher("add", "--index", str(index), "--allow-paths", str(SAMPLE), *args)


def _info(index: Path) -> dict[str, dict]:
    p = run_matcher("info", "--index", str(index), "--json", check=True)
    return {d["dataset"]: d for d in json.loads(p.stdout)["datasets"]}


def _snapshot(index: Path) -> tuple:
    """Everything an add could change: items, entries, dataset records, and the FAISS file's bytes."""
    return (catalog_sql(index, "SELECT dataset, key, status, attempts, updated_at FROM items ORDER BY id"),
            catalog_sql(index, "SELECT id, item_id, kind FROM entries ORDER BY id"),
            catalog_sql(index, "SELECT * FROM datasets ORDER BY name"),
            (index / "index.faiss").read_bytes())


@pytest.fixture
def two(tmp_path, sample) -> Path:
    """An index holding dataset a (version 2019-01) and dataset b (version v1)."""
    index = tmp_path / "index"
    a = _manifest(sample, tmp_path / "a.csv", A_KEYS)
    b = _manifest(sample, tmp_path / "b.csv", B_KEYS)
    for name, version, m in (("a", "2019-01", a), ("b", "v1", b)):
        p = _add(index, "--dataset", name, "--version", version, str(m))
        assert p.returncode == 0, p.stderr
    return index


def test_versions_recorded_and_shown(two, tmp_path):
    info = _info(two)
    assert list(info) == ["a", "b"]
    a, b = info["a"], info["b"]
    assert (a["version"], a["items"], a["hashed"], a["failed"], a["dead_links"], a["removed"]) == ("2019-01", 10, 10, 0, 0, 0)
    assert (b["version"], b["items"], b["hashed"]) == ("v1", 6, 6)
    assert a["entries"] >= 10 and b["entries"] >= 6
    assert a["source"] == str((tmp_path / "a.csv").resolve())
    assert a["created_at"] <= a["updated_at"]
    rows = catalog_sql(two, "SELECT name, version FROM datasets ORDER BY name")
    assert rows == [("a", "2019-01"), ("b", "v1")]
    text = _flat(run_matcher("info", "--index", str(two), check=True).stdout)
    assert f"a (version 2019-01) 10 items: 10 hashed, 0 failed, 0 dead links; {a['entries']} entries" in text, text
    assert f"b (version v1) 6 items: 6 hashed, 0 failed, 0 dead links; {b['entries']} entries" in text, text
    assert "{" not in text  # in words: no raw dicts


def test_other_version_refused_then_new_version(two, tmp_path, sample):
    a_csv = tmp_path / "a.csv"
    more = _manifest(sample, tmp_path / "a-2020.csv", A_KEYS | {"ds-0020"})
    before = _snapshot(two)
    p = _add(two, "--dataset", "a", "--version", "2020-06", str(more))
    assert p.returncode == 2
    err = _flat(p.stderr)
    assert "dataset 'a' is version '2019-01' in this index, not '2020-06'" in err and "--new-version" in err
    assert "nothing was changed" in err and "Traceback" not in p.stderr
    assert _snapshot(two) == before  # nothing changed: no item, entry, record or FAISS byte

    # the same version, or none: accepted, and the version stays
    assert _add(two, "--dataset", "a", "--version", "2019-01", str(a_csv)).returncode == 0
    assert _add(two, "--dataset", "a", str(a_csv)).returncode == 0
    assert _info(two)["a"]["version"] == "2019-01"

    p = _add(two, "--dataset", "a", "--new-version", str(more))
    assert p.returncode == 2 and "--new-version needs --version" in _flat(p.stderr)

    p = _add(two, "--dataset", "a", "--version", "2020-06", "--new-version", str(more))
    assert p.returncode == 0, p.stderr
    info = _info(two)
    assert info["a"]["version"] == "2020-06" and info["a"]["items"] == 11
    assert info["b"]["version"] == "v1"  # the other dataset untouched
    assert info["a"]["source"] == str(more.resolve())


def test_refusal_changes_no_dataset_of_the_command(two, tmp_path, sample):
    """Two manifests of two datasets in one add, one of them at a conflicting version: neither is touched."""
    c = _manifest(sample, tmp_path / "c.csv", {"ds-0020", "ds-0021"})
    b = tmp_path / "b.csv"
    before = _snapshot(two)
    p = _add(two, "--version", "v2", str(c), str(b))  # datasets c (new) and b (recorded at v1)
    assert p.returncode == 2 and "dataset 'b' is version 'v1'" in _flat(p.stderr)
    assert _snapshot(two) == before
    assert "c" not in _info(two)


def test_remove_whole_dataset_drops_its_record(two, tmp_path):
    p = run_matcher("remove", "--index", str(two), "--dataset", "b")
    assert p.returncode == 0, p.stderr
    assert "dataset b (and its version record)" in _flat(p.stderr)
    info = _info(two)
    assert list(info) == ["a"]
    assert catalog_sql(two, "SELECT name FROM datasets") == [("a",)]
    assert "b (version v1)" not in _flat(run_matcher("info", "--index", str(two), check=True).stdout)
    # added again, at another version: no conflict with the removed one
    p = _add(two, "--dataset", "b", "--version", "v2", str(tmp_path / "b.csv"))
    assert p.returncode == 0, p.stderr
    assert _info(two)["b"]["version"] == "v2"


def test_removed_items_counted_until_compaction(two):
    p = run_matcher("remove", "--index", str(two), "--dataset", "a", "--key", "ds-0001", "--key", "ds-0002")
    assert p.returncode == 0, p.stderr
    a = _info(two)["a"]
    assert (a["items"], a["removed"]) == (8, 2) and a["removed_entries"] >= 2
    assert _info(two)["b"]["removed"] == 0
    assert "removed: 2 items taken out by `matcher remove`" in _flat(run_matcher("info", "--index", str(two)).stdout)
    run_matcher("compact", "--index", str(two), check=True)
    assert _info(two)["a"]["removed"] == 0


def test_dataset_record_without_items_can_be_removed(two):
    keys = sorted(B_KEYS)
    p = run_matcher("remove", "--index", str(two), "--dataset", "b", *(a for k in keys for a in ("--key", k)))
    assert p.returncode == 0, p.stderr
    b = _info(two)["b"]  # the record stays: the dataset is still known, at its version, with no items
    assert (b["version"], b["items"], b["removed"]) == ("v1", 0, 6)
    p = run_matcher("remove", "--index", str(two), "--dataset", "b")
    assert p.returncode == 0, p.stderr
    assert "b" not in _info(two)
    p = run_matcher("remove", "--index", str(two), "--dataset", "b")
    assert p.returncode == 2 and "no dataset 'b'" in p.stderr


def test_search_grouped_by_dataset(two, tmp_path, sample):
    photos = [sample / "my-photos" / n for n in ("IMG_0002.jpg", "IMG_0001.jpg", "IMG_0008.jpg")]
    p = run_matcher("search", "--index", str(two), *map(str, photos))
    assert p.returncode == 0, p.stderr
    out = _flat(p.stdout)
    assert "copies by dataset: b 2 copies of 2 photos; a 1 copy of 1 photo" in out, out
    # IMG_0002's two copies, one in each dataset, listed one dataset after the other
    assert re.search(r"IMG_0002\.jpg: found 2 times .* a ds-0007 .* b ds-0011 |IMG_0002\.jpg: found 2 times .* b ds-0011 "
                     r".* a ds-0007 ", out), out

    report = tmp_path / "r.html"
    p = run_matcher("search", "--index", str(two), "--html", str(report), *map(str, photos))
    html = report.read_text()
    assert re.search(r'IMG_0002\.jpg <span class="sub">found 2 times in a, b</span>', html)
    assert html.count("<b>b</b> <code>") == 2 and html.count("<b>a</b> <code>") == 1
    assert '<tr><td>b</td><td class="n">2</td><td class="n">2</td></tr>' in html
    assert '<tr><td>a</td><td class="n">1</td><td class="n">1</td></tr>' in html

    # JSON stays one object per photo, each match naming its dataset
    p = run_matcher("search", "--index", str(two), "--json", *map(str, photos))
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
    assert [len(x["matches"]) for x in lines] == [2, 1, 0]
    assert sorted(m["dataset"] for m in lines[0]["matches"]) == ["a", "b"]
    assert "copies by dataset" not in p.stdout


class _Dead(LoopbackHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.reply(int(self.path.strip("/").split(".")[0]), None)


def test_dead_links(tmp_path, sample):
    """404, 410, 451 and a host that does not exist are dead links; 403, 500 and a refused connection are not."""
    with LoopbackServer(_Dead, {}).running() as srv:
        m = tmp_path / "links.csv"
        urls = [srv.url(f"/{s}.jpg") for s in (404, 410, 451, 403, 500)]
        urls += ["http://no-such-host.invalid/a.jpg", "http://127.0.0.1:1/refused.jpg"]
        m.write_text("id,url\n" + "".join(f"u{i},{u}\n" for i, u in enumerate(urls)))
        index = tmp_path / "index"
        p = _add(index, "--allow-private-urls", "--retries", "0", "--timeout", "5", "--dataset", "links",
                 "--version", "1", str(m))
        assert p.returncode == 2 and "every item failed (7)" in p.stderr, p.stderr  # kept: dead links are evidence
    d = _info(index)["links"]
    assert (d["items"], d["failed"], d["dead_links"], d["version"]) == (7, 7, 4, "1")
    dead = {k for (k,) in catalog_sql(index, f"SELECT key FROM items WHERE {Catalog.DEAD_LINK_SQL}")}
    assert dead == {"u0", "u1", "u2", "u5"}
    assert "links (version 1) 7 items: 0 hashed, 7 failed, 4 dead links; 0 entries" in \
        _flat(run_matcher("info", "--index", str(index)).stdout)


def test_catalog_without_datasets_table_read_only(two, sample):
    """A catalog written before the table existed: read-only opens (info, search) work, versions unknown;
    the next add creates the table."""
    db = sqlite3.connect(two / "catalog.sqlite")
    db.execute("DROP TABLE datasets")
    db.commit()
    db.close()
    info = _info(two)
    assert (info["a"]["version"], info["a"]["items"]) == (None, 10)
    assert catalog_sql(two, "SELECT name FROM sqlite_master WHERE name = 'datasets'") == []
    p = run_matcher("search", "--index", str(two), str(sample / "my-photos" / "IMG_0002.jpg"))
    assert p.returncode == 0, p.stderr
    cat = Catalog(two / "catalog.sqlite", readonly=True)
    try:
        assert cat.dataset_rows() == {} and [d["version"] for d in cat.dataset_overview()] == [None, None]
    finally:
        cat.close()
    p = _add(two, "--dataset", "b", "--version", "v9", str(two.parent / "b.csv"))
    assert p.returncode == 0, p.stderr
    info = _info(two)
    assert (info["a"]["version"], info["b"]["version"]) == (None, "v9")
    # created_at of a dataset recorded late: when its first item was added
    first = catalog_sql(two, "SELECT MIN(added_at) FROM items WHERE dataset = 'b'")[0][0]
    assert info["b"]["created_at"] == first


def test_register_datasets_library(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    try:
        assert cat.register_datasets({"x": ["/m1.csv", "/m2.csv", "/m1.csv"]}, version="1") == [("x", None, "1")]
        assert cat.dataset_rows()["x"]["source"] == "/m1.csv; /m2.csv"
        assert cat.register_datasets({"x": ["/m1.csv"]}) == []
        with pytest.raises(CatalogError, match="is version '1'"):
            cat.register_datasets({"x": ["/m1.csv"]}, version="2")
        with pytest.raises(CatalogError, match="needs --version"):
            cat.register_datasets({"x": ["/m1.csv"]}, new_version=True)
        assert cat.register_datasets({"x": ["/m3.csv"]}, version="2", new_version=True) == [("x", "1", "2")]
        assert cat.dataset_rows()["x"]["version"] == "2"
        assert [d["dataset"] for d in cat.dataset_overview()] == ["x"]  # recorded, no items yet: listed
    finally:
        cat.close()
