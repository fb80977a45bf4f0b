"""Shared fixtures: the bundled sample photos, a CLI runner, a loopback HTTP server."""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample"


@pytest.fixture(scope="session")
def sample() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def sample_photos() -> list[Path]:
    """Every real photo in the bundled sample (originals and dataset copies)."""
    files = sorted((SAMPLE / "my-photos").iterdir()) + sorted((SAMPLE / "dataset").iterdir())
    return [f for f in files if f.is_file()]


@pytest.fixture(scope="session")
def expected() -> dict[str, set[str]]:
    """Ground truth: my-photos file name -> manifest ids of its copies in the sample dataset."""
    with open(SAMPLE / "expected.csv", newline="") as f:
        return {r["query"]: {k for k in r["expected_keys"].split(";") if k} for r in csv.DictReader(f)}


def run_matcher(*args: str, check: bool = False, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (as a user would)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "matcher", *args], capture_output=True, text=True, timeout=timeout, env=env, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"matcher {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def matcher_cli():
    return run_matcher


#: What an index entry can be computed from: the whole image, the photo inside padding, one of up
#: to three photos inside a frame (caption bar, screenshot, collage), or the region around one of the
#: face boxes a faces manifest gives (matcher.imaging.facebox: face0 .. face7).
ENTRY_KINDS = {"full", "trim", "content", "content2", "content3", "black"} | {f"face{i}" for i in range(8)}


def catalog_sql(index: Path, query: str, *args) -> list[tuple]:
    """Run a query on an index's catalog, read-only (as another process would)."""
    import sqlite3

    db = sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True, isolation_level=None)
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


def check_entry_kinds(index: Path) -> None:
    """Every hashed item has exactly one 'full' entry, plus at most one of each other kind; a failed
    item has none; no entry belongs to no item."""
    kinds: dict[int, list[str]] = {}
    status: dict[int, str] = {}
    for item_id, st, kind in catalog_sql(index, "SELECT items.id, items.status, entries.kind FROM items"
                                                " LEFT JOIN entries ON entries.item_id = items.id"):
        status[item_id] = st
        if kind is not None:
            kinds.setdefault(item_id, []).append(kind)
    for item_id, st in status.items():
        k = kinds.get(item_id, [])
        if st == "ok":
            assert k.count("full") == 1 and len(set(k)) == len(k) and set(k) <= ENTRY_KINDS, (item_id, k)
        else:
            assert k == [], (item_id, k)
    assert catalog_sql(index, "SELECT COUNT(*) FROM entries WHERE item_id NOT IN (SELECT id FROM items)") == [(0,)]


class LoopbackHandler(BaseHTTPRequestHandler):
    """A request handler for :class:`LoopbackServer`: quiet, with :meth:`reply` for a whole response."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def count_hit(self) -> tuple[str, int]:
        """The request's path without its query, and how many times it has now been asked for."""
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.hits[path] += 1
            return path, self.server.hits[path]

    def reply(self, status: int, ctype: str | None, body: bytes = b"", length: bool = True) -> None:
        """Send a whole response; a client that went away (a timeout, a size limit) is not an error."""
        try:
            self.send_response(status)
            if ctype:
                self.send_header("Content-Type", ctype)
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) serving ``routes`` and counting hits per path.

    Tests give it their own request handler (a :class:`LoopbackHandler`: what each route does) and serve
    with ``with server.running():`` (or ``server.thread.start()`` ... ``server.shutdown()``).
    """

    daemon_threads = True
    # socketserver's default listen backlog (5) drops SYNs when the client opens its 8 per-host
    # connections at once; the kernel's 1 s SYN retry then looks like a timeout to a 0.5 s client.
    request_queue_size = 128

    def __init__(self, handler: type[BaseHTTPRequestHandler], routes: dict[str, tuple[str, bytes]]):
        super().__init__(("127.0.0.1", 0), handler)
        self.routes = routes
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    @contextlib.contextmanager
    def running(self):
        """Serve in a thread for the ``with`` block; stopped and closed after it."""
        self.thread.start()
        try:
            yield self
        finally:
            self.shutdown()
            self.server_close()


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory) -> Path:
    """An index of the bundled sample dataset (built once per test session; do not modify it)."""
    index = tmp_path_factory.mktemp("sample-index") / "index"
    run_matcher("add", "--index", str(index), "--dataset", "sample-dataset", str(SAMPLE / "manifest.csv"), check=True,
                cwd=ROOT)
    return index


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MatcherServer:
    """`matcher serve` in a subprocess on 127.0.0.1 (a free port), ready when /api/v1/health answers."""

    def __init__(self, index: Path, *args: str, env: dict | None = None, cwd: Path | None = None, preexec=None):
        import time
        import urllib.request

        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "matcher", "serve", "--index", str(index), "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})), cwd=cwd or ROOT, preexec_fn=preexec,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"matcher serve exited {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                with urllib.request.urlopen(self.url("/api/v1/health"), timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("matcher serve did not answer within 60 s")
            time.sleep(0.2)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> str:
        """Stop the server (Ctrl-C, as a user would) and return what it printed."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read() if self.proc.stdout else ""

    def __enter__(self) -> "MatcherServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# read-only and full file systems (root only: skipped elsewhere, saying why)


@contextlib.contextmanager
def read_only_mount(src: Path, dst: Path):
    """``src`` seen read-only at ``dst`` (a read-only bind mount: as root, chmod does not stop writes)."""
    dst.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True).returncode != 0:
        pytest.skip("needs root to make a read-only bind mount (mount --bind)")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(dst)], check=True, capture_output=True)
        yield dst
    finally:
        subprocess.run(["umount", "-l", str(dst)], capture_output=True)


@contextlib.contextmanager
def small_tmpfs(dst: Path, size: str = "2m"):
    """A tmpfs of ``size`` at ``dst``: a disk that fills up."""
    dst.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(dst)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs (a full disk)")
    try:
        yield dst
    finally:
        subprocess.run(["umount", "-l", str(dst)], capture_output=True)


def fill_disk(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; returns the filler file (unlink it to free it)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler
