"""The SQLite catalog against a real database file."""

import sqlite3

import pytest

from matcher.index.catalog import Catalog, ItemRecord
from matcher.errors import CatalogError


def ok(key, code=b"\x01" * 8, **fields):
    return ItemRecord("ds", key, fields=fields, width=640, height=480, hash_hex=code.hex(), codes=[("full", code)],
                      extra={"camera": "x"})


def test_round_trip_and_wal(tmp_path):
    c = Catalog(tmp_path / "c.sqlite", create=True)
    ids, codes, removed = c.record([
        ok("k1", url="https://e.example/1.jpg", owner="12@N01", license="CC BY 2.0", title="t", page_url="p"),
        ItemRecord("ds", "k2", fields={"url": "https://e.example/2.jpg"}, error="HTTP 404 Not Found", error_kind="http"),
    ])
    assert len(ids) == 1 and codes == [b"\x01" * 8] and removed == []
    c.close()
    c = Catalog(tmp_path / "c.sqlite")
    assert c.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    [(eid, (item, kind, verify))] = c.items_for_entries(ids).items()
    assert (item.dataset, item.key, item.url, item.owner, item.license, item.width, item.height, kind) == \
        ("ds", "k1", "https://e.example/1.jpg", "12@N01", "CC BY 2.0", 640, 480, "full")
    assert item.extra == {"camera": "x"} and item.hash == "01" * 8 and item.added_at
    failed = c.get_item("ds", "k2")
    assert failed.status == "failed" and failed.error == "HTTP 404 Not Found"
    assert c.status_of("ds", ["k1", "k2", "k3"]) == {"k1": "ok", "k2": "failed"}
    assert c.stats() == [{"dataset": "ds", "items": 2, "hashed": 1, "failed": 1, "entries": 1,
                          "failures": {"http": 1}}]


def test_same_item_twice_is_not_duplicated_and_failure_never_overwrites_success(tmp_path):
    c = Catalog(tmp_path / "c.sqlite", create=True)
    c.record([ok("k1")])
    seq = c.entries_seq
    ids2, _, removed = c.record([ok("k1", code=b"\x02" * 8)])
    assert len(removed) == 1 and len(ids2) == 1 and c.entries_seq == seq + 1
    c.record([ItemRecord("ds", "k1", error="timed out", error_kind="timeout")])
    item = c.get_item("ds", "k1")
    assert item.status == "ok" and item.hash == "02" * 8
    assert c.db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 1
    assert c.entry_ids().tolist() == ids2
    # a failed item that later succeeds becomes ok
    c.record([ItemRecord("ds", "k9", error="x", error_kind="http")])
    c.record([ok("k9")])
    assert c.get_item("ds", "k9").status == "ok"


def test_batch_is_atomic(tmp_path):
    c = Catalog(tmp_path / "c.sqlite", create=True)
    c.record([ok("a")])
    bad = ItemRecord("ds", "b", codes=[("full", b"\x00" * 8)], hash_hex="00" * 8)
    bad.dataset = None  # violates NOT NULL half-way through the batch
    with pytest.raises(sqlite3.IntegrityError):
        c.record([ok("c"), bad])
    assert c.status_of("ds", ["a", "c"]) == {"a": "ok"}


def test_not_a_catalog(tmp_path):
    (tmp_path / "x.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(CatalogError):
        Catalog(tmp_path / "x.sqlite")
    with pytest.raises(CatalogError):
        Catalog(tmp_path / "missing.sqlite")
