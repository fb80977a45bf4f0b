"""``matcher add --engine dask``: a real Dask LocalCluster (2 worker processes) and a real HTTP server.

The manifest lists the 32 real photos of ``sample/dataset`` served on 127.0.0.1, plus rows that
fail per item (404, an HTML page, a truncated JPEG, a blank image, a row without a URL). Its
first row is served by a "gate" route that holds the response until the test opens the gate,
which is how a run is caught with shard 0 unfinished and every later shard finished.

The reference is the same manifest added by the default local engine; each Dask-built index
must hold the same items, codes, thumbnails and failure records.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import faiss
import pytest
from PIL import Image

from conftest import LoopbackHandler, LoopbackServer, catalog_sql, check_entry_kinds, run_matcher
from matcher.ingest.fetch import FetchSettings
from matcher.ingest.shards import PoolEngine, add_sharded
from matcher.ingest.sources import ManifestSource

distributed = pytest.importorskip("distributed")

SHARD = 4  # rows per shard: the 38-row manifest makes 10 shards
FAILURES = {"http": 1, "not_image": 1, "unreadable": 1, "uniform": 1, "bad_row": 1}


# ---------------------------------------------------------------------------
# the server


class _Handler(LoopbackHandler):
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path, _ = self.count_hit()
        route = self.server.routes.get(path)
        if route is None:
            status, body, ctype = 404, b"<html>Not Found</html>", "text/html"
        else:
            what, body = route
            status, ctype = 200, "image/jpeg"
            if what == "gate":
                self.server.gate.wait(timeout=120)
            elif what == "html":
                ctype = "text/html"
            time.sleep(self.server.delay)
        self.reply(status, ctype, body)


class _Server(LoopbackServer):
    def __init__(self, routes: dict[str, tuple[str, bytes]]):
        super().__init__(_Handler, routes)
        self.gate = threading.Event()
        self.gate.set()
        self.delay = 0.0

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.hits)


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(sample: Path):
    photos = sorted((sample / "dataset").iterdir())
    assert len(photos) == 32
    jpeg = next(p for p in photos if p.suffix == ".jpg" and p.stat().st_size > 50_000).read_bytes()
    routes: dict[str, tuple[str, bytes]] = {"/gate.jpg": ("gate", (sample / "my-photos" / "IMG_0001.jpg").read_bytes())}
    for p in photos:
        routes[f"/img/{p.name}"] = ("image", p.read_bytes())
    routes["/bad/page.jpg"] = ("html", b"<!DOCTYPE html><html><body>Photo removed</body></html>")
    routes["/bad/truncated.jpg"] = ("image", jpeg[: len(jpeg) // 3])
    routes["/bad/blank.png"] = ("image", _png(Image.new("L", (200, 150), 128)))
    srv = _Server(routes)
    srv.thread.start()
    yield srv
    srv.gate.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def rows(server: _Server, sample: Path) -> list[tuple[str, str]]:
    """(id, url) in manifest order: the gate first, failures spread over later shards."""
    out = [("gate-0", server.url("/gate.jpg"))]
    out += [(f"ds-{p.stem}", server.url(f"/img/{p.name}")) for p in sorted((sample / "dataset").iterdir())]
    for pos, row in [(6, ("missing", server.url("/bad/missing.jpg"))), (12, ("html", server.url("/bad/page.jpg"))),
                     (18, ("truncated", server.url("/bad/truncated.jpg"))),
                     (24, ("blank", server.url("/bad/blank.png"))), (30, ("no-url", ""))]:
        out.insert(pos, row)
    assert len(out) == 38
    return out


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, rows) -> Path:
    path = tmp_path_factory.mktemp("dask-manifest") / "served.csv"
    lines = ["id,url,owner,license"] + [f"{k},{u},owner-{i},CC BY 2.0" for i, (k, u) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _snapshot(index: Path) -> tuple[dict, list]:
    """Everything an index says about its items and entries, independent of the ids it gave them."""
    items = {(r[0], r[1]): r[2:] for r in catalog_sql(
        index, "SELECT dataset, key, url, page_url, path, owner, license, title, width, height, hash, status, error,"
               " error_kind, attempts, extra FROM items")}
    entries = sorted(catalog_sql(index, "SELECT items.key, entries.kind, entries.code, entries.thumb FROM entries"
                                        " JOIN items ON items.id = entries.item_id"))
    return items, entries


def _check_faiss(index: Path) -> None:
    ids = sorted(i for (i,) in catalog_sql(index, "SELECT id FROM entries"))
    raw = faiss.read_index_binary(str(index / "index.faiss"))
    assert sorted(faiss.vector_to_array(raw.id_map).tolist()) == ids
    check_entry_kinds(index)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, server, manifest) -> tuple[dict, list]:
    """The default local engine's index of the manifest."""
    index = tmp_path_factory.mktemp("dask-reference") / "index"
    proc = run_matcher("add", "--index", str(index), "--workers", "2", "--allow-private-urls", str(manifest))
    assert proc.returncode == 0, proc.stderr
    snap = _snapshot(index)
    statuses = Counter(v[9] for v in snap[0].values())
    assert statuses == {"ok": 33, "failed": 5}, statuses
    assert Counter(v[11] for v in snap[0].values() if v[9] == "failed") == FAILURES
    _check_faiss(index)
    return snap


@pytest.fixture(scope="module")
def cluster():
    """2 worker processes. The scheduler gives up on a task at the first worker lost while running it
    (allowed-failures 0), so that matcher's own retry of a failed shard is what a killed worker tests."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                         memory_limit="2GiB") as lc, Client(lc) as client:
        yield lc, client


def _dask_add(index: Path, manifest: Path, scheduler: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "matcher", "add", "--index", str(index), "--engine", "dask",
            "--scheduler", scheduler, "--shard-size", str(SHARD), "--allow-private-urls", *extra, str(manifest)]


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200"))


def _item_order(index: Path) -> list[str]:
    return [k for (k,) in catalog_sql(index, "SELECT key FROM items ORDER BY id")]


# ---------------------------------------------------------------------------
# tests


def test_dask_builds_the_same_index_as_local_and_rerun_downloads_nothing_hashed(
        tmp_path, cluster, server, manifest, rows, reference):
    lc, _ = cluster
    index = tmp_path / "index"
    proc = _run(_dask_add(index, manifest, lc.scheduler_address))
    assert proc.returncode == 0, proc.stderr
    assert "33 added, 5 failed" in proc.stderr and "10 shards" in proc.stderr, proc.stderr
    assert _snapshot(index) == reference
    assert _item_order(index) == [k for k, _ in rows]  # applied in shard order, whatever finished first
    _check_faiss(index)
    assert not (index / "shards").exists()  # every shard applied: nothing left to resume

    before = server.snapshot()
    proc = _run(_dask_add(index, manifest, lc.scheduler_address))
    assert proc.returncode == 0, proc.stderr
    assert "0 added, 5 failed" in proc.stderr and "33 already in the index" in proc.stderr, proc.stderr
    delta = server.snapshot() - before
    # hashed items are not downloaded again; the failed ones are retried, as with the local engine
    assert delta == Counter({"/bad/missing.jpg": 1, "/bad/page.jpg": 1, "/bad/truncated.jpg": 1,
                             "/bad/blank.png": 1}), delta
    items, entries = _snapshot(index)
    assert entries == reference[1]
    assert {k: v[12] for k, v in items.items() if v[9] == "failed"} == {k: 2 for k, v in reference[0].items()
                                                                           if v[9] == "failed"}


def test_worker_killed_mid_run_loses_nothing(tmp_path, cluster, server, manifest, reference):
    lc, client = cluster
    client.wait_for_workers(2, timeout=60)
    pids = client.run(os.getpid)
    index = tmp_path / "index"
    server.delay = 0.3  # every image takes 0.3 s: shards last long enough to be caught running
    try:
        proc = subprocess.Popen(_dask_add(index, manifest, lc.scheduler_address), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        victim = None
        deadline = time.monotonic() + 30
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            busy = [w for w, keys in client.processing().items() if any("run_shard" in str(k) for k in keys)]
            if busy:
                victim = pids[busy[0]]
                os.kill(victim, signal.SIGKILL)
            else:
                time.sleep(0.02)
        assert victim is not None, "no shard task was ever seen running"
        out, err = proc.communicate(timeout=90)
    finally:
        server.delay = 0.0
    assert proc.returncode == 0, err
    assert "33 added, 5 failed" in err, err
    retried = re.search(r"(\d+)\s+task\s+retries", err)
    assert retried and int(retried.group(1)) >= 1, err  # the killed worker's shard failed (KilledWorker), resubmitted
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert _snapshot(index) == reference
    _check_faiss(index)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it for the next tests


def test_rerun_after_interrupted_run_skips_finished_shards(tmp_path, cluster, server, manifest, rows, reference):
    lc, client = cluster
    client.wait_for_workers(2, timeout=60)
    index = tmp_path / "index"
    server.gate.clear()  # shard 0 cannot finish: shards 1-9 finish and wait for it, on disk
    try:
        before = server.snapshot()
        proc = subprocess.Popen(_dask_add(index, manifest, lc.scheduler_address), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 40
        while len(list((index / "shards").glob("*.done"))) < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list((index / "shards").glob("*.done"))) == 9
        proc.send_signal(signal.SIGKILL)  # the client machine dies
        proc.wait(timeout=10)
    finally:
        server.gate.set()
    assert catalog_sql(index, "SELECT COUNT(*) FROM items") == [(0,)]  # shard 0 first: nothing applied yet
    later = {urlsplit(u).path for _, u in rows[SHARD:] if u}
    fetched = server.snapshot() - before
    assert all(fetched[p] == 1 for p in later), fetched

    before = server.snapshot()
    proc = _run(_dask_add(index, manifest, lc.scheduler_address))
    assert proc.returncode == 0, proc.stderr
    assert "33 added, 5 failed" in proc.stderr and "9 from an interrupted run" in proc.stderr, proc.stderr
    fetched = server.snapshot() - before
    assert all(fetched[p] == 0 for p in later), fetched  # finished shards were not redone
    assert fetched["/gate.jpg"] >= 1
    assert _snapshot(index) == reference
    assert _item_order(index) == [k for k, _ in rows]
    _check_faiss(index)
    assert not (index / "shards").exists()


def test_local_pool_runs_the_same_shard_tasks(tmp_path, manifest, reference):
    index = tmp_path / "index"
    with PoolEngine(2) as engine:
        stats = add_sharded(index, [ManifestSource(manifest)], engine, fetch=FetchSettings(allow_private=True),
                            shard_size=SHARD)
    assert (stats.added, stats.failed, stats.shards_done) == (33, 5, 10)
    assert dict(stats.failures) == FAILURES
    assert _snapshot(index) == reference


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheduler, message", [
    (None, "--engine dask needs --scheduler"),
    ("tcp://127.0.0.1:{port}", "cannot reach the Dask scheduler at tcp://127.0.0.1:"),
    ("nonsense", "invalid Dask scheduler address 'nonsense'"),
])
def test_bad_scheduler_is_a_clear_error(tmp_path, manifest, scheduler, message):
    index = tmp_path / "index"
    args = ["add", "--index", str(index), "--engine", "dask", str(manifest)]
    if scheduler:
        args[5:5] = ["--scheduler", scheduler.format(port=_free_port())]
    t0 = time.monotonic()
    proc = run_matcher(*args, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - t0 < 20
    assert not index.exists()  # nothing was created


def test_folder_rows_are_read_on_the_workers(tmp_path, cluster, sample):
    """Rows with a local path are hashed from the file by the worker (same machine here: a shared mount)."""
    from matcher.engine.api import add
    from matcher.ingest.shards import DaskEngine
    from matcher.ingest.sources import FolderSource

    lc, _ = cluster
    add(tmp_path / "local", [FolderSource(sample / "dataset")], workers=2)
    with DaskEngine(lc.scheduler_address) as engine:
        stats = add_sharded(tmp_path / "dask", [FolderSource(sample / "dataset")], engine, shard_size=10)
    assert (stats.added, stats.failed, stats.shards_done) == (32, 0, 4)
    assert _snapshot(tmp_path / "dask") == _snapshot(tmp_path / "local")
    assert _item_order(tmp_path / "dask") == sorted(p.name for p in (sample / "dataset").iterdir())


def test_shard_failing_every_attempt_is_reported_and_the_rest_kept(tmp_path, cluster, server, manifest, rows,
                                                                   reference):
    """Shard 0 (held at the gate) loses its worker on both of its attempts (retries=1): the run applies
    the 9 other shards and raises ShardsFailed naming the lost shard; a rerun (CLI) adds it.

    Run through the library in a thread (fewer kills than the CLI's 3 retries need: LocalCluster's
    worker management can drop a nanny when its workers are killed in quick succession)."""
    from matcher.ingest.shards import DaskEngine, ShardsFailed

    lc, client = cluster
    client.wait_for_workers(2, timeout=60)
    index = tmp_path / "index"
    server.gate.clear()
    kills = 0
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            with DaskEngine(lc.scheduler_address) as engine:
                outcome.append(add_sharded(index, [ManifestSource(manifest)], engine, shard_size=SHARD, retries=1,
                                           fetch=FetchSettings(allow_private=True)))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(e)

    runner = threading.Thread(target=run)
    try:
        runner.start()
        deadline = time.monotonic() + 90
        while len(list((index / "shards").glob("*.done"))) < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
        while runner.is_alive() and time.monotonic() < deadline and kills < 5:
            busy = [w for w, keys in client.processing().items() if keys]  # only shard 0 is left to run
            try:
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]] if busy else None
            except (OSError, KeyError):  # that worker went away meanwhile (CommClosedError is an OSError)
                pid = None
            if pid is None:
                time.sleep(0.05)
                continue
            os.kill(pid, signal.SIGKILL)
            kills += 1
            # Until the scheduler has dropped that worker, and (for at most 5 s: LocalCluster does not
            # always restart it) its replacement has registered.
            settle = time.monotonic() + 5
            while runner.is_alive() and time.monotonic() < deadline and (
                    busy[0] in client.nthreads() or (len(client.nthreads()) < 2 and time.monotonic() < settle)):
                time.sleep(0.05)
            time.sleep(0.5)
        runner.join(timeout=60)
    finally:
        server.gate.set()
    (err,) = outcome
    assert isinstance(err, ShardsFailed), err
    assert kills == 2  # the first attempt and 1 retry
    assert "1 shard(s) failed 2 times" in err.reason and "KilledWorker" in err.reason, err.reason
    assert "run the same add again" in err.reason
    assert (err.stats.added, err.stats.failed, err.stats.shards_done) == (29, 5, 9)  # all but shard 0's 4 rows
    assert sorted(k for (k,) in catalog_sql(index, "SELECT key FROM items")) == sorted(k for k, _ in rows[SHARD:])

    client.wait_for_workers(1, timeout=60)  # (LocalCluster sometimes loses a nanny after such kills)
    proc = _run(_dask_add(index, manifest, lc.scheduler_address))
    assert proc.returncode == 0, proc.stderr
    assert "4 added, 5 failed" in proc.stderr, proc.stderr
    items, entries = _snapshot(index)
    assert entries == reference[1]
    without_attempts = {k: v[:12] + v[13:] for k, v in items.items()}  # the 5 failed rows were tried twice
    assert without_attempts == {k: v[:12] + v[13:] for k, v in reference[0].items()}
    _check_faiss(index)
