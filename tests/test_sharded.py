"""A sharded index (a folder with shards.json listing ordinary index directories) searched by the local engine.

The sample dataset is split into two shards numbered 0 and 3 (so shard 3's global item ids carry the shard
number in their high bits); every command must answer as it does on one index of the whole sample: the same
matches (by dataset key), the same counts, lookups and item images reachable by the global ids.
"""

from __future__ import annotations

import csv
import json
import urllib.request
from pathlib import Path

import pytest

from conftest import SAMPLE, MatcherServer, run_matcher
from matcher.engine.api import add, search
from matcher.errors import CatalogError, IndexMismatch
from matcher.index.sharded import (LOCAL_BITS, MANIFEST, ShardedStore, global_id, open_index, read_manifest, split_id,
                                   write_manifest)
from matcher.ingest.sources import ManifestSource

PHOTOS = SAMPLE / "my-photos"


def split_manifest(out: Path, parts: int) -> list[Path]:
    """The sample manifest cut into ``parts`` manifests of consecutive rows (absolute paths: read them with
    ``allow_paths=[SAMPLE]``)."""
    with open(SAMPLE / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(parts):
        p = out / f"part-{k}.csv"
        chunk = rows[k * len(rows) // parts : (k + 1) * len(rows) // parts]
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for r in chunk:
                w.writerow({**r, "path": str(SAMPLE / r["path"])})
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sharded") / "index"
    parts = split_manifest(root.parent / "manifests", 2)
    for name, part in zip(("a", "b"), parts):
        add(root / f"shard-{name}", [ManifestSource(part, dataset="sample-dataset", allow_paths=[SAMPLE])], workers=0)
    write_manifest(root, [{"number": 0, "path": "shard-a"}, {"number": 3, "path": "shard-b"}])
    return root


def keys_by_query(stdout: str) -> dict[str, list[str]]:
    out = {}
    for line in stdout.splitlines():
        r = json.loads(line)
        out[Path(r["query"]).name] = sorted(m["key"] for m in r["matches"])
    return out


def test_global_ids_round_trip():
    assert global_id(0, 17) == 17
    assert split_id(global_id(3, 17)) == (3, 17)
    assert global_id(8191, (1 << LOCAL_BITS) - 1) < 2 ** 53


def test_manifest_is_checked(tmp_path, sharded):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / MANIFEST).write_text(json.dumps({"format": "matcher-shards", "format_version": 1,
                                            "shards": [{"number": 1, "path": "a"}, {"number": 1, "path": "b"}]}))
    with pytest.raises(CatalogError, match="distinct"):
        read_manifest(bad)
    (bad / MANIFEST).write_text(json.dumps({"format": "matcher-shards", "format_version": 99, "shards": []}))
    with pytest.raises(CatalogError, match="format 99"):
        read_manifest(bad)
    # a shard that verifies otherwise (no thumbnails) is refused when the list is written
    other = tmp_path / "other"
    from matcher.index.store import IndexStore

    IndexStore.open(other / "s", create=True, regions=False).close()
    with pytest.raises(IndexMismatch):
        write_manifest(other, [{"number": 0, "path": str(sharded / "shard-a")}, {"number": 1, "path": "s"}])
    assert not (other / MANIFEST).exists()


def test_search_matches_the_single_index(sharded, sample_index):
    one = run_matcher("search", "--index", str(sample_index), "--json", "--workers", "0", str(PHOTOS))
    many = run_matcher("search", "--index", str(sharded), "--json", "--workers", "0", str(PHOTOS))
    assert one.returncode == many.returncode == 0, many.stderr
    assert keys_by_query(many.stdout) == keys_by_query(one.stdout)
    ids = {m["key"]: m["id"] for line in many.stdout.splitlines() for m in json.loads(line)["matches"]}
    manifest = read_manifest(sharded)
    assert [s["number"] for s in manifest["shards"]] == [0, 3]
    # items of the second shard carry shard number 3 in their high bits; their ids are their own in the shard
    with ShardedStore.open(sharded, load=False) as store:
        for key, gid in ids.items():
            n, local = split_id(gid)
            assert n in (0, 3)
            assert store.catalog.shards[n].items_by_id([local])[local].key == key
    assert any(split_id(i)[0] == 3 for i in ids.values()) and any(split_id(i)[0] == 0 for i in ids.values())


def test_library_search_is_the_same_path(sharded):
    with open_index(sharded) as store:
        assert isinstance(store, ShardedStore)
        results = list(search(store, [PHOTOS / "IMG_0002.jpg"], workers=0))
    assert sorted(m.item.key for m in results[0].matches) == ["ds-0007", "ds-0011"]


def test_info_and_lookup(sharded, sample_index):
    one = json.loads(run_matcher("info", "--index", str(sample_index), "--json", check=True).stdout)
    many = json.loads(run_matcher("info", "--index", str(sharded), "--json", check=True).stdout)
    assert many["entries"] == one["entries"] and many["layout"].startswith("2 shards")
    strip = lambda ds: [{k: v for k, v in d.items() if not k.endswith("_at") and k != "source"} for d in ds]
    assert strip(many["datasets"]) == strip(one["datasets"])
    last = read_manifest(sharded)["shards"][1]
    url = "https://farm5.staticflickr.com/3332/8599654898_f6d2129ea6_z.jpg"  # ds-0002: shard 0
    got = json.loads(run_matcher("lookup", "--index", str(sharded), "--url", url, "--json", check=True).stdout)
    assert [(i["key"], i["id"]) for i in got["items"]] == [("ds-0002", 2)]
    with open(SAMPLE / "manifest.csv", newline="") as f:
        tail = list(csv.DictReader(f))[-1]
    got = json.loads(run_matcher("lookup", "--index", str(sharded), "--url", tail["url"], "--json", check=True).stdout)
    assert [i["key"] for i in got["items"]] == [tail["id"]] and split_id(got["items"][0]["id"])[0] == last["number"]


def test_serve_a_sharded_index(sharded):
    with MatcherServer(sharded, "--rate-limit", "0") as s:
        data = (PHOTOS / "IMG_0003.jpg").read_bytes()
        req = urllib.request.Request(s.url("/api/v1/search-upload?name=IMG_0003.jpg"), data=data,
                                     headers={"content-type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.loads(r.read())
        assert sorted(m["key"] for m in body["matches"]) == ["ds-0026", "ds-0030"]
        for m in body["matches"]:
            with urllib.request.urlopen(s.url(f"/api/v1/items/{m['id']}/image"), timeout=30) as r:
                assert r.status == 200 and r.headers["content-type"] in ("image/jpeg", "image/png")
        assert any(split_id(m["id"])[0] == 3 for m in body["matches"])
        with urllib.request.urlopen(s.url("/api/v1/health"), timeout=30) as r:
            assert r.status == 200


def test_single_index_commands_name_the_shards(sharded, tmp_path):
    r = run_matcher("compact", "--index", str(sharded))
    assert r.returncode == 2 and "is a sharded index" in r.stderr and "shard" in r.stderr
    with pytest.raises(CatalogError, match="sharded index"):
        add(sharded, [ManifestSource(SAMPLE / "manifest.csv")], workers=0)
    assert not (sharded / "meta.json").exists()
