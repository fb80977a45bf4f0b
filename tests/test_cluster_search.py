"""``matcher search/serve --engine dask``: a sharded index held in the workers of a real Dask LocalCluster.

The sample dataset in 4 shards; the results must equal the local engine's on the same sharded index. A
worker killed (SIGKILL of its process) while it runs a shard's search: its shards are placed on the other
worker, loaded there, and the query completes with the same matches. No worker left: a clear error.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import SAMPLE, MatcherServer, run_matcher
from test_sharded import keys_by_query, split_manifest

from matcher.engine.api import add, search
from matcher.index.sharded import open_index, split_id, write_manifest
from matcher.ingest.sources import ManifestSource

distributed = pytest.importorskip("distributed")

PHOTOS = SAMPLE / "my-photos"
SHARDS = 4


@pytest.fixture(scope="module")
def sharded4(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sharded4") / "index"
    parts = split_manifest(root.parent / "manifests", SHARDS)
    for k, part in enumerate(parts):
        add(root / f"s{k}", [ManifestSource(part, dataset="sample-dataset", allow_paths=[SAMPLE])], workers=0)
    write_manifest(root, [{"number": k, "path": f"s{k}"} for k in range(SHARDS)])
    return root


def _cluster(**env):
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                        memory_limit="2GiB", env=env)


@pytest.fixture(scope="module")
def cluster():
    with _cluster() as lc:
        yield lc


@pytest.fixture(scope="module")
def local_keys(sharded4) -> dict[str, list[str]]:
    r = run_matcher("search", "--index", str(sharded4), "--json", "--workers", "0", str(PHOTOS))
    assert r.returncode == 0, r.stderr
    return keys_by_query(r.stdout)


def test_cli_search_on_the_cluster_equals_local(sharded4, cluster, local_keys):
    r = run_matcher("search", "--index", str(sharded4), "--json", "--workers", "0", "--engine", "dask",
                    "--scheduler", cluster.scheduler_address, str(PHOTOS))
    assert r.returncode == 0, r.stderr
    assert keys_by_query(r.stdout) == local_keys
    assert sum(len(v) for v in local_keys.values()) >= 10
    ids = [m["id"] for line in r.stdout.splitlines() for m in json.loads(line)["matches"]]
    assert {split_id(i)[0] for i in ids} >= {0, 3}


def test_shards_are_spread_and_cached(sharded4, cluster):
    from matcher.engine.cluster import open_searchable

    with open_searchable(sharded4, engine="dask", scheduler=cluster.scheduler_address) as store:
        shards = store.cluster
        first = shards.preload()  # already loaded by open_searchable: the cache answers
        assert [r["shard"] for r in first] == list(range(SHARDS))
        assert len({r["pid"] for r in first}) == 2  # both workers hold shards
        assert sorted(list(shards.place.values()).count(w) for w in set(shards.place.values())) == [2, 2]
        pids = {r["pid"] for r in first}
        # the rows and stage counts of a photo's variant codes are the local engine's, in global ids
        from matcher.imaging.images import DEFAULT_LIMITS
        from matcher.pipeline.photo import query_one

        q = query_one(store.hasher, True, str(PHOTOS / "IMG_0002.jpg"), DEFAULT_LIMITS)[2]
        got, want = {}, {}
        remote = store.search_codes(q.codes, 10, q.fcodes, got)
        with open_index(sharded4) as local:
            here = local.search_codes(q.codes, 10, q.fcodes, want)
        flat = lambda rows: [[(it.id, kind, d, thumb) for it, kind, d, thumb in row] for row in rows]
        assert flat(remote) == flat(here) and any(flat(here))
        assert {k: got[k] for k in ("hits", "filtered", "catalog_rows")} == \
            {k: want[k] for k in ("hits", "filtered", "catalog_rows")} and got["hits"] > 0
    assert all(pid != os.getpid() for pid in pids)


def test_cli_dask_needs_a_sharded_index_and_a_scheduler(sample_index, sharded4):
    r = run_matcher("search", "--index", str(sample_index), "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9",
                    str(PHOTOS / "IMG_0001.jpg"))
    assert r.returncode == 2 and "not a sharded index" in r.stderr
    r = run_matcher("search", "--index", str(sharded4), "--engine", "dask", str(PHOTOS / "IMG_0001.jpg"))
    assert r.returncode == 2 and "--scheduler" in r.stderr
    r = run_matcher("search", "--index", str(sharded4), "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9",
                    str(PHOTOS / "IMG_0001.jpg"))
    assert r.returncode == 2 and "cannot reach the Dask scheduler" in r.stderr


def test_serve_on_the_cluster(sharded4, cluster):
    with MatcherServer(sharded4, "--rate-limit", "0", "--engine", "dask", "--scheduler", cluster.scheduler_address) as s:
        req = urllib.request.Request(s.url("/api/v1/search-upload?name=IMG_0002.jpg"),
                                     data=(PHOTOS / "IMG_0002.jpg").read_bytes(),
                                     headers={"content-type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=60) as r:
            body = json.loads(r.read())
        assert sorted(m["key"] for m in body["matches"]) == ["ds-0007", "ds-0011"]
        for m in body["matches"]:
            with urllib.request.urlopen(s.url(f"/api/v1/items/{m['id']}/image"), timeout=30) as r:
                assert r.status == 200


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except FileNotFoundError:
        return False


def test_worker_killed_mid_query(sharded4, local_keys):
    """Each worker stops itself (SIGSTOP) at its 3rd shard search: the first query (2 shards a worker) runs
    through, the second catches both workers inside a search. One is SIGKILLed, the other continued: the
    killed worker's 2 shards are placed again, loaded from disk, and the query completes."""
    from matcher.engine.cluster import open_searchable

    with _cluster(MATCHER_TEST_PAUSE_AT="cluster.shard-search:3") as lc:
        store = open_searchable(sharded4, engine="dask", scheduler=lc.scheduler_address)
        try:
            shards = store.cluster
            pids = {r["pid"] for r in shards.preload()}
            assert len(pids) == 2
            photos = [PHOTOS / name for name in sorted(local_keys)]
            first = {Path(r.query).name: sorted(m.item.key for m in r.matches) for r in search(store, photos[:1], workers=0)}
            assert first == {photos[0].name: local_keys[photos[0].name]}
            out: list = []
            runner = threading.Thread(target=lambda: out.append(list(search(store, photos, workers=0))), daemon=True)
            runner.start()
            deadline = time.monotonic() + 30
            while not all(_stopped(p) for p in pids):
                assert time.monotonic() < deadline, "the workers did not reach the shard search"
                time.sleep(0.05)
            victim, other = sorted(pids)
            os.kill(victim, signal.SIGKILL)
            os.kill(other, signal.SIGCONT)
            runner.join(timeout=45)
            assert not runner.is_alive(), "the query did not complete after a worker was killed"
            got = {Path(r.query).name: sorted(m.item.key for m in r.matches) for r in out[0]}
            assert got == local_keys
            assert shards.moves == 2  # the killed worker's two shards
        finally:
            for p in pids:
                if _stopped(p):
                    os.kill(p, signal.SIGCONT)
            store.close()


def test_no_worker_left_is_a_clear_error(sharded4):
    from matcher.engine.cluster import ClusterError, open_searchable

    with _cluster() as lc:
        store = open_searchable(sharded4, engine="dask", scheduler=lc.scheduler_address)
        try:
            lc.scale(0)
            deadline = time.monotonic() + 30
            while store.cluster.client.scheduler_info()["workers"]:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            with pytest.raises(ClusterError, match="no Dask worker is left"):
                list(search(store, [PHOTOS / "IMG_0001.jpg"], workers=0))
        finally:
            store.close()
