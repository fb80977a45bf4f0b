"""kill -9 at random and at named points of ``matcher add`` (local and Dask), ``remove`` and ``compact``.

The CI-sized version of benchmarks/bench_crash.py (same harness: tests/crashkit.py): a manifest of 40
real photos (distinct re-encodings of the bundled sample) served on 127.0.0.1 plus a folder of 20,
three failing rows; a handful of kills per command, each followed by the full check of
:func:`crashkit.check` (``matcher info`` opens it, FAISS == catalog, searches, nothing lost) and a
rerun that must end with every manifest item exactly once. Named points are reached through
``MATCHER_TEST_PAUSE_AT`` (matcher/testpoints.py).

Also the regression tests of the bugs the campaign found: an index whose first ``add`` was killed while
creating it could not be opened by ``info``/``search``; a searcher that repaired a stale FAISS file in
memory while removed items were pending under-counted ``info``'s entries; a FAISS save killed before its
rename left its temporary file for good; a Dask shard applied just before a kill left its files (and
INDEX/shards/) for good; a sharded add could not be resumed (nor rerun) once more shards were done than
it plans ahead.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

import crashkit as ck
from matcher.index.catalog import Catalog
from matcher.errors import CatalogError
from matcher.index.store import IndexStore

SEED = 20240611


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    c = ck.make_corpus(tmp_path_factory.mktemp("kill9-corpus"), n_web=40, n_disk=20, seed=SEED)
    yield c
    c.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    """A clean, uninterrupted local add: what every interrupted-then-resumed add must end with; and its duration."""
    index = tmp_path_factory.mktemp("kill9-reference") / "index"
    t = time.monotonic()
    assert ck.run(ck.add_args(index, corpus, "local"), index.parent / "add.log") == 0, (index.parent / "add.log").read_text()
    duration = time.monotonic() - t
    c = ck.check(index)
    assert c.consistent, c.problems
    assert set(c.snap) == corpus.keys
    assert {k for k, v in c.snap.items() if v[0] != "ok"} == corpus.failing
    return index, c.snap, ck.item_hashes(index), duration


def _assert_campaign(records, op, kills):
    for r in records:
        assert r.check.consistent, r.line()
    s = ck.summarize(records)[op]
    assert (s["lost"], s["duplicated"], s["inconsistent"]) == (0, 0, 0), s
    named = [r for r in records if r.kill.point]
    assert all(r.outcome.killed for r in named), [r.line() for r in named if not r.outcome.killed]
    assert s["kills"] >= kills, s


def test_add_local_kill9(tmp_path, corpus, reference):
    _, snap, hashes, duration = reference
    rng = random.Random(SEED)
    rand = [ck.Kill(delay=rng.uniform(0.3, duration), group=rng.random() < 0.5) for _ in range(3)]
    # episode 1: killed while the index is created, mid catalog transaction, at random, then in the FAISS
    # save a resumed run makes when it opens (reconcile); episode 2: at random, twice, then in a FAISS save
    kills = [ck.Kill(point="create.meta-written"), ck.Kill(point="catalog.record:2", group=False), rand[0],
             ck.Kill(point="faiss.after-rename"),
             rand[1], rand[2], ck.Kill(point="faiss.before-rename")]
    records = ck.add_campaign("add local", lambda index: ck.add_args(index, corpus, "local"), kills, tmp_path, snap,
                              hashes, episode=4, rng=rng, log=print)
    _assert_campaign(records, "add local", 5)


@pytest.fixture
def base(reference, tmp_path):
    index = tmp_path / "base"
    shutil.copytree(reference[0], index)
    return index


def test_remove_kill9(tmp_path, base):
    rng = random.Random(SEED + 1)
    records = ck.remove_campaign([ck.Kill(point="catalog.remove"), ck.Kill(point="remove.committed", group=False)],
                                 base, tmp_path, rng=rng, log=print)
    _assert_campaign(records, "remove", 2)
    assert "removed not at all" in records[0].note and "rerun (exit 0) removed them" in records[0].note
    assert "removed entirely" in records[1].note


def test_compact_kill9(tmp_path, base):
    rng = random.Random(SEED + 2)
    records = ck.compact_campaign([ck.Kill(point="compact.committed"), ck.Kill(point="faiss.after-rename")],
                                  base, tmp_path, rng=rng, log=print)
    _assert_campaign(records, "compact", 2)


def test_add_dask_kill9(tmp_path, corpus, reference):
    pytest.importorskip("distributed")
    import dask
    from distributed import LocalCluster

    _, snap, hashes, _ = reference
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                         memory_limit="2GiB") as lc:
        records = ck.add_campaign(
            "add dask", lambda index: ck.add_args(index, corpus, "dask", lc.scheduler_address, shard_size=10),
            [ck.Kill(point="shards.applied:2"), ck.Kill(point="catalog.record:1", group=False)], tmp_path, snap, hashes,
            rng=random.Random(SEED + 3), log=print)
    _assert_campaign(records, "add dask", 2)


# ---------------------------------------------------------------------------
# regression tests of the bugs found


def _index_meta_only(tmp_path: Path) -> Path:
    """The state `matcher add` killed right after writing a new index's meta.json leaves."""
    index = tmp_path / "index"
    IndexStore.open(index, create=True, writable=True).close()
    (index / "catalog.sqlite").unlink()
    return index


@pytest.mark.parametrize("state", ["no catalog", "catalog without tables"])
def test_an_index_whose_creation_was_cut_short_opens_empty(tmp_path, state, corpus):
    index = _index_meta_only(tmp_path)
    if state == "catalog without tables":
        sqlite3.connect(index / "catalog.sqlite").execute("PRAGMA journal_mode = WAL").close()
    rc, out = ck.cli_info_inprocess(index)
    assert rc == 0, out
    assert json.loads(out)["entries"] == 0 and json.loads(out)["datasets"] == []
    with IndexStore.open(index) as store:
        assert len(store.faiss) == 0 and store.catalog.entries_count == 0
    assert ck.run(ck.add_args(index, corpus, "local", workers=0), tmp_path / "add.log") == 0
    c = ck.check(index)
    assert c.consistent and set(c.snap) == corpus.keys, c.summary()


def test_a_damaged_catalog_is_still_an_error(tmp_path):
    index = _index_meta_only(tmp_path)
    (index / "catalog.sqlite").write_bytes(b"not a database" * 400)
    with pytest.raises(CatalogError, match="cannot open catalog"):
        IndexStore.open(index)
    assert not Catalog.unfinished(index / "catalog.sqlite")


def test_catalog_schema_is_created_in_one_transaction(tmp_path, corpus, reference):
    """`matcher add` killed while it creates a new index's catalog, its tables made but not committed:
    the catalog holds no table (unfinished), and the next add builds the whole index."""
    index = tmp_path / "index"
    out = ck.execute(ck.add_args(index, corpus, "local", workers=0), ck.Kill(point="catalog.schema"), tmp_path / "k.log")
    assert out.killed
    db = sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True)
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
    db.close()
    assert Catalog.unfinished(index / "catalog.sqlite")
    assert ck.run(ck.add_args(index, corpus, "local", workers=0), tmp_path / "add.log") == 0
    c = ck.check(index)
    ck.final_check(c, reference[1], hashes=reference[2], index=index)
    assert c.consistent and not c.problems and (c.lost, c.duplicates) == (0, 0), c.problems


def test_a_searcher_repairing_faiss_counts_removed_entries_right(tmp_path, reference):
    """A stale FAISS file (a writer killed before its save) while removed items wait for compaction: a
    read-only open repairs FAISS in memory, dropping the tombstoned ids too; `matcher info` must then
    still count the live entries (it subtracted the tombstones a second time)."""
    from matcher.engine.api import remove

    index = tmp_path / "index"
    shutil.copytree(reference[0], index)
    keys = sorted(k for (ds, k), (st, _) in ck.snapshot(index).items() if ds == ck.DISK and st == "ok")[:3]
    remove(index, dataset=ck.DISK, keys=keys)
    (index / "index.faiss").unlink()
    live = sum(len(e) for _, e in ck.snapshot(index).values())
    rc, out = ck.cli_info_inprocess(index)
    assert rc == 0 and json.loads(out)["entries"] == live, out
    with IndexStore.open(index) as store:
        assert store.reconciled["added"] == live
        assert len(store.faiss) - len(store.dead) == live


def test_shard_files_of_a_shard_applied_just_before_a_kill_are_deleted(tmp_path, sample):
    """A kill between a shard's catalog commit and the deletion of its files left them (and INDEX/shards/)
    for good: the rerun found nothing to do in that shard and so never deleted them."""
    from matcher.ingest.shards import PoolEngine, ShardDir, _source_tag, add_sharded
    from matcher.ingest.sources import FolderSource

    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted((sample / "dataset").iterdir())[:6]:
        shutil.copy(p, folder / p.name)
    index = tmp_path / "index"
    with PoolEngine(1) as engine:
        assert add_sharded(index, [FolderSource(folder)], engine, shard_size=3).added == 6
        assert not (index / "shards").exists()
        # what the kill leaves: shard 0's rows in the catalog, its result and done marker still on disk
        ShardDir(index / "shards").save(f"{_source_tag(FolderSource(folder))}-000000", "fp", ["k"], [("err", "x", "y")])
        stats = add_sharded(index, [FolderSource(folder)], engine, shard_size=3)
    assert (stats.added, stats.skipped) == (0, 6)
    assert not (index / "shards").exists()


def test_a_sharded_add_resumes_after_more_finished_shards_than_it_plans_ahead(tmp_path, sample):
    """Resuming a sharded add (Dask) whose already-added rows fill more shards than the planning window
    (capacity + up to 3 x capacity shards; 16 on a 2-thread cluster, so 16,000 rows at the default shard
    size) raised "nothing in flight but shards are not ready" on every rerun: the window emptied of shards
    with nothing to do, and the loop stopped planning. A rerun of a complete index failed the same way."""
    from matcher.ingest.shards import PoolEngine, add_sharded
    from matcher.ingest.sources import FolderSource

    photos = sorted((sample / "dataset").iterdir())
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos[:10]:
        shutil.copy(p, folder / p.name)
    index = tmp_path / "index"
    with PoolEngine(1) as engine:  # capacity 2: a window of 8 one-row shards
        assert add_sharded(index, [FolderSource(folder)], engine, shard_size=1).added == 10
        stats = add_sharded(index, [FolderSource(folder)], engine, shard_size=1)  # a rerun of a complete index
        assert (stats.added, stats.skipped) == (0, 10)
        for p in photos[10:12]:  # two more rows after ten done ones: a resume
            shutil.copy(p, folder / f"z-{p.name}")
        stats = add_sharded(index, [FolderSource(folder)], engine, shard_size=1)
    assert (stats.added, stats.skipped, stats.shards_done) == (2, 10, 12)
    c = ck.check(index)
    assert c.consistent and len(c.snap) == 12, c.summary()


def test_the_next_writer_deletes_a_killed_saves_temporary_file(tmp_path, reference):
    """A kill between writing FAISS's temporary file and its rename left the file (as big as the index)
    for good, one more per such crash, and `info` counted it in the size on disk."""
    index = tmp_path / "index"
    shutil.copytree(reference[0], index)
    stale = index / ".index.faiss.tmp-4242"
    shutil.copy(index / "index.faiss", stale)
    IndexStore.open(index).close()
    assert stale.exists()  # a reader leaves it (a writer may be saving)
    IndexStore.open(index, writable=True).close()
    assert not stale.exists()
    assert sorted(p.name for p in index.iterdir() if p.name.startswith(".")) == []
