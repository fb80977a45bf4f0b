"""Memory of `matcher serve` under concurrent large uploads (issue 19, point 5).

1. An index of the bundled sample (``matcher add sample/manifest.csv``), built in a temporary folder.
2. ``matcher serve`` on 127.0.0.1 (a free port, ``--rate-limit 0``), run from ``--code`` (a checkout of
   matcher: default this one; give an older checkout to measure it the same way).
3. ``--uploads`` clients at once each POST ``--size-mb`` MB of seeded random bytes (not an image: the server
   reads the body, fails to decode it, answers 422) to ``/api/v1/search-upload``.
4. The server's resident memory is read from /proc every 10 ms; reported: idle RSS, peak RSS (VmHWM), the
   answers' status codes, wall clock.

    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_upload_memory.py
    flock /tmp/matcher-bench.lock .venv/bin/python benchmarks/bench_upload_memory.py --code /tmp/matcher-before
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uploads", type=int, default=16)
    ap.add_argument("--size-mb", type=float, default=45)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--code", type=Path, default=ROOT, help="the matcher checkout to run (its folder)")
    args = ap.parse_args()
    header("bench_upload_memory", uploads=args.uploads, size_mb=args.size_mb, seed=args.seed, code=str(args.code))
    env = dict(os.environ, PYTHONPATH=str(args.code), PYTHONUNBUFFERED="1")
    blob = random.Random(args.seed).randbytes(int(args.size_mb * (1 << 20)))
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        subprocess.run([sys.executable, "-m", "matcher", "add", "--index", str(index), "--dataset", "sample",
                        str(ROOT / "sample" / "manifest.csv")], check=True, env=env, capture_output=True,
                       cwd=args.code)
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "matcher", "serve", "--index", str(index), "--port", str(port),
                                   "--rate-limit", "0"], env=env, cwd=args.code, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not come up")
                    time.sleep(0.2)
            time.sleep(1)
            idle = _kb(server.pid, "VmRSS")
            statuses: Counter = Counter()
            peak_seen = [idle]
            done = threading.Event()

            def sample():
                while not done.is_set():
                    peak_seen[0] = max(peak_seen[0], _kb(server.pid, "VmRSS"))
                    time.sleep(0.01)

            def upload():
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                    conn.request("POST", "/api/v1/search-upload", body=blob,
                                 headers={"content-type": "application/octet-stream"})
                    r = conn.getresponse()
                    r.read()
                    statuses[r.status] += 1
                    conn.close()
                except OSError as e:  # a refused upload may be closed while its body is still being sent
                    statuses[type(e).__name__] += 1

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.monotonic()
            clients = [threading.Thread(target=upload) for _ in range(args.uploads)]
            for c in clients:
                c.start()
            for c in clients:
                c.join(600)
            wall = time.monotonic() - t0
            done.set()
            sampler.join()
            hwm = _kb(server.pid, "VmHWM")
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"| idle RSS | peak RSS (VmHWM) | growth | answers | wall clock |")
    print(f"|---|---|---|---|---|")
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str))
    print(f"| {idle / 1024:,.0f} MB | {hwm / 1024:,.0f} MB | {(hwm - idle) / 1024:,.0f} MB | {answers} | {wall:.1f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
