"""`matcher serve` against hostile clients (issue 19, points 1, 4, 5, 9), on a real server on 127.0.0.1:
slowloris connections, uploads that would fill memory, huge ids, forged X-Forwarded-For, foreign Host
headers, and what item images it hands out.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import resource
import socket
import threading
import time

import pytest
from PIL import Image

from conftest import MatcherServer


def call(port: int, method: str, path: str, body=None, headers: dict | None = None, source: str = "127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers = {"content-type": "application/json", **(headers or {})}
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def _rss_peak_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _low_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


# --- point 4: slowloris -----------------------------------------------------------------------------------
def test_idle_and_trickling_connections_do_not_starve_others(sample_index):
    """300 connections that send nothing (one address) and 20 that trickle header lines (another), against
    a server with 256 file descriptors: a normal client is answered at once, and the slow ones are closed
    after the header timeout."""
    with MatcherServer(sample_index, "--rate-limit", "0", "--header-timeout", "2", "--max-connections-per-client",
                       "16", preexec=_low_fd_limit) as s:
        idle = []
        for _ in range(300):
            c = socket.socket()
            c.bind(("127.0.0.2", 0))
            c.settimeout(5)
            try:
                c.connect(("127.0.0.1", s.port))
            except OSError:
                c.close()
                continue
            idle.append(c)
        stop = threading.Event()
        trickles = []
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5, source_address=("127.0.0.3", 0))
            c.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            trickles.append(c)
        closed_trickles = []

        def trickle():
            while not stop.is_set() and len(closed_trickles) < len(trickles):
                for c in trickles:
                    if c in closed_trickles:
                        continue
                    try:
                        c.sendall(b"x-slow: 1\r\n")
                    except OSError:
                        closed_trickles.append(c)
                time.sleep(0.3)

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        t0 = time.monotonic()
        try:
            status, _, body = call(s.port, "GET", "/api/v1/health")
        except OSError as e:
            raise AssertionError(f"a normal request failed ({e}): {s.stop()[-3000:]}") from None
        assert status == 200 and json.loads(body)["items"] == 32
        assert time.monotonic() - t0 < 2
        # the idle ones: the first 16 are held until the header timeout, the rest got 503 and were closed at once
        time.sleep(3)
        answers = []
        for c in idle:
            data = b""
            try:
                while chunk := c.recv(4096):
                    data += chunk
            except (ConnectionResetError, socket.timeout) as e:
                data += f"<{type(e).__name__}>".encode()
            answers.append(data)
            c.close()
        assert not any(b"timeout>" in a for a in answers), "a connection was still open after the header timeout"
        # beyond the 16 held, each got 503 at once (or, past the listen backlog, a reset): none is open
        assert sum(a.startswith(b"HTTP/1.1 503") for a in answers) >= len(idle) // 2
        deadline = time.monotonic() + 5
        while len(closed_trickles) < len(trickles) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        assert len(closed_trickles) == len(trickles), "trickling connections were not cut off"
        for c in trickles:
            c.close()
        assert call(s.port, "GET", "/api/v1/health")[0] == 200


# --- point 5: uploads -------------------------------------------------------------------------------------
def _start_upload(port: int, size: int, source: str = "127.0.0.1") -> socket.socket:
    c = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    c.sendall(f"POST /api/v1/search-upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
              f"Content-Length: {size}\r\n\r\n".encode())
    return c


def _reply(c: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := c.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and b"content-length" in data.lower():
                head, _, rest = data.partition(b"\r\n\r\n")
                n = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
                if len(rest) >= n:
                    break
    except (ConnectionResetError, BrokenPipeError):
        pass
    return data


def test_uploads_are_admitted_before_their_body_is_read(sample_index):
    """Beyond the uploads in flight (4), an upload is refused from its headers (503), before its body."""
    with MatcherServer(sample_index, "--rate-limit", "0", "--body-timeout", "5") as s:
        socks = [_start_upload(s.port, 20 << 20) for _ in range(10)]
        t0 = time.monotonic()
        refused = 0
        for c in socks[4:]:
            c.settimeout(3)
            reply = _reply(c)
            assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
            assert b'"busy"' in reply
            refused += 1
        assert refused == 6 and time.monotonic() - t0 < 3
        for c in socks:
            c.close()
        status, _, body = call(s.port, "POST", "/api/v1/search-upload", b"x" * 100,
                               {"content-type": "application/octet-stream"})
        assert status == 422, body  # slots come back when the connections go


def test_upload_without_content_length_is_refused(sample_index):
    with MatcherServer(sample_index, "--rate-limit", "0") as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"POST /api/v1/search-upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream"
                      b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            assert _reply(c).startswith(b"HTTP/1.1 411")


def test_concurrent_large_uploads_keep_memory_bounded(sample_index):
    """16 concurrent 20 MB uploads: at most 4 bodies are held at once (each briefly twice while it is joined)."""
    size = 20 << 20
    with MatcherServer(sample_index, "--rate-limit", "0") as s:
        base = _rss_peak_kb(s.proc.pid)
        blob = os.urandom(size)
        results = []

        def upload():
            try:
                status, _, _ = call(s.port, "POST", "/api/v1/search-upload", blob,
                                    {"content-type": "application/octet-stream"})
            except OSError as e:  # a refused upload may be closed while its body is still being sent
                status = type(e).__name__
            results.append(status)

        threads = [threading.Thread(target=upload) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        grown_mb = (_rss_peak_kb(s.proc.pid) - base) / 1024
        assert results.count(422) >= 4 and all(r in (422, 503, "ConnectionResetError", "BrokenPipeError") for r in results), results
        assert grown_mb < 4 * 2 * size / (1 << 20) + 80, f"server peak RSS grew {grown_mb:.0f} MB"


# --- point 9: ids, proxies, Host --------------------------------------------------------------------------
def test_ids_beyond_int64_are_refused_not_a_crash(sample_index):
    with MatcherServer(sample_index, "--rate-limit", "0") as s:
        status, _, body = call(s.port, "GET", f"/api/v1/items/{2 ** 63}/image")
        assert status in (404, 422), body
        status, _, body = call(s.port, "POST", "/api/v1/letters", {"items": [2 ** 63], "template": "list"})
        assert status in (404, 422), body
        status, _, body = call(s.port, "GET", "/api/v1/items/-1/image")
        assert status in (404, 422), body


def test_x_forwarded_for_is_trusted_only_with_trust_proxy(sample_index):
    forged = [{"x-forwarded-for": f"203.0.113.{i}"} for i in range(12)]
    with MatcherServer(sample_index, "--rate-limit", "1") as s:
        statuses = [call(s.port, "GET", "/api/v1/datasets", headers=h)[0] for h in forged]
        assert 429 in statuses, statuses
    with MatcherServer(sample_index, "--rate-limit", "1", "--trust-proxy") as s:
        statuses = [call(s.port, "GET", "/api/v1/datasets", headers=h)[0] for h in forged]
        assert statuses == [200] * 12, statuses


def test_host_header_must_name_this_server(sample_index):
    with MatcherServer(sample_index, "--rate-limit", "0", "--allowed-host", "check.example.org") as s:
        for host, want in ((f"127.0.0.1:{s.port}", 200), (f"localhost:{s.port}", 200), ("check.example.org", 200),
                           ("evil.example", 421), (f"rebind.attacker.example:{s.port}", 421)):
            status, _, body = call(s.port, "GET", "/api/v1/datasets", headers={"host": host})
            assert status == want, (host, status, body)
        status, _, body = call(s.port, "GET", "/", headers={"host": "evil.example"})
        assert status == 421 and json.loads(body)["error"]["code"] == "unknown_host"


# --- point 1: what item images serve hands out -------------------------------------------------------------
def test_item_images_are_thumbnails_unless_originals_are_served(sample_index):
    with MatcherServer(sample_index, "--rate-limit", "0") as s:
        status, headers, data = call(s.port, "GET", "/api/v1/items/1/image")
        assert status == 200 and headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(data)).size == (64, 64)
    with MatcherServer(sample_index, "--rate-limit", "0", "--serve-originals") as s:
        status, headers, data = call(s.port, "GET", "/api/v1/items/1/image")
        assert status == 200 and headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(data)).size) == 256
