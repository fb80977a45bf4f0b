"""``matcher add --engine dask --sharded``: workers of a real Dask LocalCluster write shard folders themselves.

The sample manifest (32 local photos) in shards of 10 rows -> 4 shard folders; the index must answer as one
index of the same manifest does. Resuming skips listed shards and does not rebuild a folder already renamed
into place; a worker killed mid-shard has its shard built again elsewhere; ``--registry`` travels to the workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import SAMPLE, catalog_sql, run_matcher
from test_sharded import keys_by_query

from matcher.index.sharded import MANIFEST, read_manifest

distributed = pytest.importorskip("distributed")

PHOTOS = SAMPLE / "my-photos"
MANIFEST_CSV = SAMPLE / "manifest.csv"


def _cluster(**env):
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                        memory_limit="2GiB", env=env)


@pytest.fixture(scope="module")
def cluster():
    with _cluster() as lc:
        yield lc


def _add(index: Path, scheduler: str, *extra: str):
    return run_matcher("add", "--index", str(index), "--dataset", "sample-dataset", "--engine", "dask", "--sharded",
                       "--scheduler", scheduler, "--shard-size", "10", *extra, str(MANIFEST_CSV))


def _keys(index: Path) -> dict[str, list[str]]:
    r = run_matcher("search", "--index", str(index), "--json", "--workers", "0", str(PHOTOS))
    assert r.returncode in (0, 1), r.stderr
    return keys_by_query(r.stdout)


def test_workers_write_the_shards(tmp_path, cluster, sample_index):
    index = tmp_path / "index"
    r = _add(index, cluster.scheduler_address)
    assert r.returncode == 0, r.stderr
    assert "32 added, 0 failed" in r.stderr and "4 shards" in r.stderr
    shards = read_manifest(index)["shards"]
    assert [s["number"] for s in shards] == [0, 1, 2, 3] and sum(s["items"] for s in shards) == 32
    for s in shards:
        assert (index / s["path"] / "index.faiss").is_file() and (index / s["path"] / "built.json").is_file()
    assert not list(index.glob(".shard-*"))  # no temporary folder left
    assert _keys(index) == _keys(sample_index)
    info = json.loads(run_matcher("info", "--index", str(index), "--json", check=True).stdout)
    one = json.loads(run_matcher("info", "--index", str(sample_index), "--json", check=True).stdout)
    assert info["entries"] == one["entries"]

    # resume: a shard listed is skipped; a folder renamed into place but not listed (the client was killed
    # before its commit) is taken as it is; a missing one is built
    manifest = read_manifest(index)
    kept, unlisted, missing = manifest["shards"][0], manifest["shards"][1], manifest["shards"][2]
    stamp = (index / unlisted["path"] / "built.json").stat().st_mtime_ns
    shutil.rmtree(index / missing["path"])
    manifest["shards"] = [kept]
    (index / MANIFEST).write_text(json.dumps(manifest))
    r = _add(index, cluster.scheduler_address)
    assert r.returncode == 0, r.stderr
    assert "10 already in the index" in r.stderr and "(2 from an interrupted run" in r.stderr, r.stderr
    assert (index / unlisted["path"] / "built.json").stat().st_mtime_ns == stamp
    assert sorted(s["path"] for s in read_manifest(index)["shards"]) == sorted(s["path"] for s in shards)
    assert _keys(index) == _keys(sample_index)


def test_registry_travels_to_the_workers(tmp_path, cluster):
    registry = tmp_path / "registry.json"
    run_matcher("optout", "add", "--registry", str(registry), str(PHOTOS / "IMG_0002.jpg"), check=True)
    index = tmp_path / "index"
    r = _add(index, cluster.scheduler_address, "--registry", str(registry))
    assert r.returncode == 0, r.stderr
    assert "30 added, 2 failed (opted_out: 2)" in r.stderr, r.stderr
    failed = [row for s in read_manifest(index)["shards"]
              for row in catalog_sql(index / s["path"], "SELECT key, error_kind FROM items WHERE status = 'failed'")]
    assert sorted(failed) == [("ds-0007", "opted_out"), ("ds-0011", "opted_out")]
    r = run_matcher("search", "--index", str(index), "--json", str(PHOTOS / "IMG_0002.jpg"))
    assert r.returncode == 1 and json.loads(r.stdout)["matches"] == []


def _stopped_children() -> list[int]:
    """Worker processes of this test's LocalCluster (children of this process) stopped by a pause point."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "T" and int(fields[1]) == os.getpid():
            out.append(int(d))
    return out


def test_worker_killed_mid_shard(tmp_path, sample_index):
    """Every worker stops itself inside its first shard build (rows recorded in the temporary folder, not yet
    renamed). The first one stopped is SIGKILLed; the others (and restarted workers) are continued. The killed
    worker's shard is built again on a live worker and the index is complete."""
    from matcher.ingest.shard_build import add_shards
    from matcher.ingest.shards import DaskEngine
    from matcher.ingest.sources import ManifestSource

    index = tmp_path / "index"
    with _cluster(MATCHER_TEST_PAUSE_AT="cluster.shard-build") as lc:
        out: list = []
        engine = DaskEngine(lc.scheduler_address)

        def run():
            try:
                out.append(add_shards(index, [ManifestSource(MANIFEST_CSV, dataset="sample-dataset")], engine,
                                      rows_per_shard=10))
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                out.append(e)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        deadline = time.monotonic() + 60
        killed = None
        try:
            while runner.is_alive() and time.monotonic() < deadline:
                stopped = _stopped_children()
                if killed is None and stopped:
                    killed = stopped[0]
                    os.kill(killed, signal.SIGKILL)
                    stopped = stopped[1:]
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
                time.sleep(0.05)
            runner.join(timeout=5)
        finally:
            for pid in _stopped_children():
                os.kill(pid, signal.SIGCONT)
            engine.close()
    assert killed is not None and not runner.is_alive()
    (stats,) = out
    assert not isinstance(stats, BaseException), stats
    assert stats.added == 32 and stats.shards_done == 4
    assert len(read_manifest(index)["shards"]) == 4
    assert not list(index.glob(".shard-*"))  # the killed task's temporary folder was swept
    assert _keys(index) == _keys(sample_index)
