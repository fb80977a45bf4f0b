"""Removing items without a rebuild: tombstones, compaction, bad input, re-adding, a kill between steps.

A real index of the bundled sample (real photos, real SQLite, real FAISS); searched with the sample's
own photos through the library and through the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from conftest import catalog_sql, run_matcher
from matcher.errors import CatalogError
from matcher.index.binary import read_trailer
from matcher.engine.api import add, compact, remove, search
from matcher.ingest.open_source import open_source
from matcher.index.store import IndexStore

PHOTO = "IMG_0002.jpg"  # its copies in the sample dataset: ds-0007 and ds-0011
GONE, KEPT = "ds-0007", "ds-0011"


def _faiss_ids(index: Path) -> list[int]:
    """The ids in the FAISS file on disk (the sample is small: flat layout)."""
    raw = faiss.read_index_binary(str(index / "index.faiss"))
    return sorted(faiss.vector_to_array(raw.id_map).tolist())


def _entry_ids(index: Path, key: str | None = None) -> list[int]:
    if key is None:
        return [i for (i,) in catalog_sql(index, "SELECT id FROM entries ORDER BY id")]
    return [i for (i,) in catalog_sql(index, "SELECT entries.id FROM entries JOIN items ON items.id = entries.item_id"
                                             " WHERE items.key = ? ORDER BY entries.id", key)]


def _tombstones(index: Path) -> list[int]:
    return [i for (i,) in catalog_sql(index, "SELECT entry_id FROM tombstones ORDER BY entry_id")]


def _found(store: IndexStore, photo: Path) -> set[str]:
    (r,) = list(search(store, [photo], workers=0))
    assert r.error is None
    return {m.item.key for m in r.matches}


def _cli_found(index: Path, *photos: Path) -> dict[str, set[str]]:
    p = run_matcher("search", "--index", str(index), "--json", *map(str, photos))
    assert p.returncode in (0, 1), p.stderr
    return {Path(r["query"]).name: {m["key"] for m in r["matches"]} for r in map(json.loads, p.stdout.splitlines())}


def _state(index: Path) -> tuple:
    """Everything a failed remove must leave untouched."""
    return (catalog_sql(index, "SELECT * FROM items ORDER BY id"),
            catalog_sql(index, "SELECT id, item_id, kind, code FROM entries ORDER BY id"),
            catalog_sql(index, "SELECT * FROM meta ORDER BY key"),
            catalog_sql(index, "SELECT * FROM tombstones ORDER BY entry_id"),
            (index / "index.faiss").read_bytes())


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample) -> Path:
    d = tmp_path_factory.mktemp("remove") / "D"
    add(d, [open_source(str(sample / "manifest.csv"), "sample")], workers=0)
    return d


@pytest.fixture
def index(built, tmp_path) -> Path:
    dst = tmp_path / "D"
    shutil.copytree(built, dst)
    return dst


def test_removed_item_is_gone_at_once_and_after_reopen(index, sample):
    photo = sample / "my-photos" / PHOTO
    faiss_before = (index / "index.faiss").read_bytes()
    gone_ids = _entry_ids(index, GONE)
    assert gone_ids
    reader = IndexStore.open(index)  # another process's searcher, opened before the removal
    with IndexStore.open(index, writable=True) as store:
        assert _found(store, photo) == {GONE, KEPT}
        stats = store.remove_items(keys=[GONE])
        assert stats == {"items": 1, "entries": len(gone_ids), "tombstones": len(gone_ids)}
        assert _found(store, photo) == {KEPT}  # at once, in the same process
        assert _found(reader, photo) == {KEPT}  # and in a searcher that opened before
    reader.close()
    # no rebuild: the FAISS file is the same bytes; its ids are tombstones in the catalog
    assert (index / "index.faiss").read_bytes() == faiss_before
    assert _tombstones(index) == gone_ids
    assert set(gone_ids) <= set(_faiss_ids(index))
    assert catalog_sql(index, "SELECT COUNT(*) FROM items WHERE key = ?", GONE) == [(0,)]
    with IndexStore.open(index) as store:  # after a restart
        assert store.reconciled == {"added": 0, "removed": 0}  # the trailer still matches: nothing to repair
        assert store.dead.tolist() == gone_ids
        assert _found(store, photo) == {KEPT}
        # the raw FAISS search still returns the removed entry; the store drops it
        code = np.frombuffer(catalog_sql(index, "SELECT code FROM entries WHERE id = ?",
                                         _entry_ids(index, KEPT)[0])[0][0], np.uint8)
        raw_ids = set(store.faiss.range_search(code, 10)[0][0].tolist())
        assert raw_ids & set(gone_ids)
        assert not {item.key for row in store.search_codes(code[None], 10) for item, *_ in row} & {GONE}


def test_cli_remove_then_compact_shrinks_faiss_and_keeps_the_others(index, sample, expected):
    photos = sorted((sample / "my-photos").iterdir())
    before = _cli_found(index, *photos)
    assert {k: v for k, v in before.items() if v} == {k: v for k, v in expected.items() if v}
    n_faiss = len(_faiss_ids(index))
    gone_ids = _entry_ids(index, GONE)

    p = run_matcher("remove", "--index", str(index), "--key", GONE)
    assert p.returncode == 0, p.stderr
    assert "removed 1 item (1 index entry)" in " ".join(p.stderr.split())  # grammar
    want = {k: v - {GONE} for k, v in expected.items()}
    assert _cli_found(index, *photos) == want

    p = run_matcher("compact", "--index", str(index))
    assert p.returncode == 0, p.stderr
    assert f"{n_faiss:,} -> {n_faiss - len(gone_ids):,} entries" in " ".join(p.stderr.split())
    assert _faiss_ids(index) == _entry_ids(index)  # FAISS holds exactly the live entries again
    assert not set(gone_ids) & set(_faiss_ids(index))
    assert _tombstones(index) == []
    meta = dict(catalog_sql(index, "SELECT key, value FROM meta"))
    assert read_trailer(index / "index.faiss")["seq"] == int(meta["entries_seq"]) == int(meta["faiss_seq"])
    assert _cli_found(index, *photos) == want  # every other copy is still found
    with IndexStore.open(index) as store:
        assert store.reconciled == {"added": 0, "removed": 0}


@pytest.mark.parametrize("args, message", [
    (["--key", "no-such-key"], "no item with key 'no-such-key'"),
    (["--key", GONE, "--key", "no-such-key"], "no item with key 'no-such-key'"),  # all or nothing
    (["--url", "https://example.org/nope.jpg"], "no item with url"),
    (["--dataset", "nope"], "no dataset 'nope' in the index (datasets: sample)"),
    (["--dataset", "nope", "--key", GONE], "no item with key 'ds-0007' in dataset 'nope'"),
    (["--key", GONE, "--url", "https://example.org/x.jpg"], "choose one of --key and --url"),
    ([], "say what to remove"),
])
def test_bad_input_exits_2_and_changes_nothing(index, args, message):
    before = _state(index)
    p = run_matcher("remove", "--index", str(index), *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in " ".join(p.stderr.split())
    assert "Traceback" not in p.stderr
    assert _state(index) == before


def test_remove_and_compact_without_an_index(tmp_path):
    for cmd in (["remove", "--key", "x"], ["compact"]):
        p = run_matcher(*cmd[:1], "--index", str(tmp_path / "none"), *cmd[1:])
        assert p.returncode == 2 and "no index at" in p.stderr
        assert not (tmp_path / "none").exists()


def test_library_errors_change_nothing(index):
    before = _state(index)
    with pytest.raises(CatalogError, match="no item with key 'zzz'"):
        remove(index, keys=[KEPT, "zzz"])
    assert _state(index) == before


def test_remove_by_url_and_by_dataset(index, sample):
    photo = sample / "my-photos" / PHOTO
    (url,) = catalog_sql(index, "SELECT url FROM items WHERE key = ?", KEPT)[0]
    assert remove(index, urls=[url])["items"] == 1
    with IndexStore.open(index) as store:
        assert _found(store, photo) == {GONE}
    n_items = catalog_sql(index, "SELECT COUNT(*) FROM items")[0][0]
    assert remove(index, dataset="sample")["items"] == n_items
    assert catalog_sql(index, "SELECT COUNT(*) FROM entries") == [(0,)]
    p = run_matcher("search", "--index", str(index), str(photo))
    assert p.returncode == 1  # nothing left to match
    stats = compact(index)
    assert stats["after"] == 0 and len(_faiss_ids(index)) == 0


def test_readd_a_removed_item(index, sample, expected):
    """Re-adding works and gets fresh entry ids. The item with the highest entry ids is the one whose
    ids SQLite would hand out again; a reused id would still be a tombstone (or name the wrong code)."""
    (last,) = catalog_sql(index, "SELECT items.key FROM entries JOIN items ON items.id = entries.item_id"
                                 " ORDER BY entries.id DESC LIMIT 1")[0]
    (photo_name,) = [q for q, keys in expected.items() if last in keys]
    photo = sample / "my-photos" / photo_name
    old_ids = _entry_ids(index, last)
    assert run_matcher("remove", "--index", str(index), "--key", last).returncode == 0
    assert last not in _cli_found(index, photo)[photo_name]
    p = run_matcher("add", "--index", str(index), "--dataset", "sample", str(sample / "manifest.csv"))
    assert p.returncode == 0, p.stderr
    assert "1 added" in " ".join(p.stderr.split())
    new_ids = _entry_ids(index, last)
    assert len(new_ids) == len(old_ids) and min(new_ids) > max(old_ids)  # a tombstoned id never names a new entry
    assert _cli_found(index, photo) == {photo_name: expected[photo_name]}
    with IndexStore.open(index) as store:
        assert _found(store, photo) == expected[photo_name]
        assert not set(store.dead.tolist()) & set(new_ids)
    compact(index)
    assert _faiss_ids(index) == _entry_ids(index)
    assert _cli_found(index, photo) == {photo_name: expected[photo_name]}


def test_kill_between_compaction_commit_and_faiss_save(index, sample):
    """Compaction commits the catalog (tombstones cleared, entries_seq bumped) before it replaces the
    FAISS file. A kill in between leaves the old file, still holding the removed ids: the next open
    sees its trailer does not name the catalog's state and reconciles, dropping them."""
    photo = sample / "my-photos" / PHOTO
    gone_ids = _entry_ids(index, GONE)
    remove(index, keys=[GONE])
    stale = (index / "index.faiss").read_bytes()
    compact(index)
    (index / "index.faiss").write_bytes(stale)  # the state a kill before the rename leaves
    assert set(gone_ids) <= set(_faiss_ids(index)) and _tombstones(index) == []
    with IndexStore.open(index) as store:  # a read-only searcher repairs in memory
        assert store.reconciled == {"added": 0, "removed": len(gone_ids)}
        assert _found(store, photo) == {KEPT}
    assert _cli_found(index, photo) == {PHOTO: {KEPT}}
    with IndexStore.open(index, writable=True) as store:  # a writer repairs the file
        assert store.reconciled["removed"] == len(gone_ids)
    assert _faiss_ids(index) == _entry_ids(index)
    with IndexStore.open(index) as store:
        assert store.reconciled == {"added": 0, "removed": 0}


def test_kill_after_remove_before_anything_else(index, sample):
    """A removal is one catalog transaction and writes no FAISS file: a process killed right after it
    leaves an index whose FAISS trailer still matches (entries + tombstones), so the next open has
    nothing to repair and the item stays gone; a stale FAISS file from before the removal is the
    same file."""
    photo = sample / "my-photos" / PHOTO
    p = run_matcher("remove", "--index", str(index), "--key", GONE)
    assert p.returncode == 0
    meta = dict(catalog_sql(index, "SELECT key, value FROM meta"))
    assert read_trailer(index / "index.faiss")["seq"] == int(meta["entries_seq"])
    assert len(_faiss_ids(index)) == len(_entry_ids(index)) + len(_tombstones(index))
    with IndexStore.open(index, writable=True) as store:
        assert store.reconciled == {"added": 0, "removed": 0}
        assert _found(store, photo) == {KEPT}


def test_many_tombstones_are_compacted_by_a_later_save(index, sample):
    """Once removed entries are 10% of FAISS, the next save (an add's, or closing a writer) drops them."""
    keys = [k for (k,) in catalog_sql(index, "SELECT key FROM items ORDER BY id LIMIT 6")]
    assert remove(index, keys=keys)["items"] == 6
    assert len(_tombstones(index)) >= 6
    with IndexStore.open(index, writable=True) as store:
        store.save()
    assert _tombstones(index) == [] and _faiss_ids(index) == _entry_ids(index)


def test_faiss_file_lost_after_a_removal(index, sample):
    """The catalog is the truth: FAISS rebuilt from it holds only live entries, and the tombstones it no
    longer needs are cleared, so the next open has nothing to repair."""
    photo = sample / "my-photos" / PHOTO
    remove(index, keys=[GONE])
    (index / "index.faiss").unlink()
    with IndexStore.open(index, writable=True) as store:
        assert store.reconciled == {"added": len(_entry_ids(index)), "removed": 0}
        assert _found(store, photo) == {KEPT}
    assert _tombstones(index) == [] and _faiss_ids(index) == _entry_ids(index)
    with IndexStore.open(index) as store:
        assert store.reconciled == {"added": 0, "removed": 0}
        assert _found(store, photo) == {KEPT}


def test_remove_and_compact_with_the_ivf_layout(tmp_path):
    """Past FLAT_MAX_ENTRIES a save lays FAISS out as IVF; tombstones, compaction and reopening work the
    same there. Codes are random (no photos needed to exercise the layout), entries real catalog rows."""
    from matcher.index.catalog import ItemRecord
    from matcher.index.binary import FLAT_MAX_ENTRIES

    n = FLAT_MAX_ENTRIES + 5_000
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    with IndexStore.open(tmp_path / "big", create=True, writable=True) as store:
        for start in range(0, n, 50_000):
            store.record([ItemRecord("synthetic", f"k{i}", hash_hex=codes[i].tobytes().hex(),
                                     codes=[("full", codes[i].tobytes())]) for i in range(start, min(n, start + 50_000))],
                         save_every=1e9)
        assert store.faiss.layout == "flat"
    with IndexStore.open(tmp_path / "big", writable=True) as store:  # the close above saved: now IVF
        assert store.reconciled == {"added": 0, "removed": 0} and store.faiss.layout == "ivf"
        assert [r[0][0].key for r in store.search_codes(codes[:3], 0)] == ["k0", "k1", "k2"]
        assert store.remove_items(keys=["k1"])["items"] == 1
        assert [[item.key for item, *_ in r] for r in store.search_codes(codes[:3], 0)] == [["k0"], [], ["k2"]]
    with IndexStore.open(tmp_path / "big") as store:
        assert store.faiss.layout == "ivf" and len(store.faiss) == n and len(store.dead) == 1
        assert store.search_codes(codes[1:2], 0) == [[]]
    stats = compact(tmp_path / "big")
    assert stats == {"dropped": 1, "before": n, "after": n - 1, "layout": "ivf"}
    with IndexStore.open(tmp_path / "big") as store:
        assert store.reconciled == {"added": 0, "removed": 0} and len(store.dead) == 0
        assert sorted(store.faiss.ids().tolist()) == _entry_ids(tmp_path / "big")
        assert [[item.key for item, *_ in r] for r in store.search_codes(codes[:3], 0)] == [["k0"], [], ["k2"]]


def test_info_counts_removed_entries_apart_until_compaction(index):
    def info() -> dict:
        return json.loads(run_matcher("info", "--index", str(index), "--json", check=True).stdout)

    before = info()
    assert before["removed_entries"] == 0 and before["entries"] == len(_faiss_ids(index))
    assert before["layout"] == "flat"
    key = catalog_sql(index, "SELECT key FROM items WHERE status = 'ok' ORDER BY id LIMIT 1")[0][0]
    n = len(_entry_ids(index, key))
    run_matcher("remove", "--index", str(index), "--key", key, check=True)
    after = info()
    assert after["entries"] == before["entries"] - n and after["removed_entries"] == n
    assert "of removed items" in run_matcher("info", "--index", str(index), check=True).stdout
    run_matcher("compact", "--index", str(index), check=True)
    compacted = info()
    assert compacted["entries"] == after["entries"] and compacted["removed_entries"] == 0
