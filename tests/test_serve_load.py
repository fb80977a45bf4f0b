"""`matcher serve` under load: benchmarks/bench_serve_load.py --quick (20K items, 10 clients, 5 s) must pass.

It builds (or reuses) a synthetic index under a temporary folder, starts the server on a free loopback
port, loads it with concurrent searches while malformed requests are sent alongside, and exits 0 only
when no response was 5xx, no request failed to connect or timed out, and every malformed request
was answered 4xx. Timing figures are printed, not asserted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_serve_load.py"

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("aiohttp")


def test_serve_under_load(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path / "work")],
                              capture_output=True, text=True, timeout=90, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"bench_serve_load.py --quick did not finish within 90 s\n{out}")
    out = proc.stdout + proc.stderr
    print(out)
    assert proc.returncode == 0, out
    status = re.search(r"^status codes: .*; 5xx: (\d+)$", out, re.M)
    assert status and status.group(1) == "0", out
    assert re.search(r"^connection errors / timeouts: 0\b", out, re.M), out
    requests = re.search(r"^requests completed: ([\d,]+) in [\d.]+ s \(([\d,]+) answered 200\)", out, re.M)
    assert requests and int(requests.group(2).replace(",", "")) > 0, out
    assert requests.group(1) == requests.group(2), out
    malformed = re.search(r"^malformed requests: ([\d,]+);", out, re.M)
    assert malformed and int(malformed.group(1).replace(",", "")) > 0, out
    assert re.search(r"^malformed requests not answered 4xx: 0\b", out, re.M), out
    for kind in ("bad_json", "bad_hex", "wrong_length", "oversized", "too_many_photos", "wrong_content_type", "schema"):
        counts = re.search(rf"\b{kind} \{{([^}}]*)\}}", out)
        assert counts, f"no {kind} requests were sent\n{out}"
        assert all(re.fullmatch(r"4\d\d: \d+", c.strip()) for c in counts.group(1).split(",")), out
    found = re.search(r"planted near-copies found ([\d,]+) / ([\d,]+)", out)
    assert found and found.group(1) == found.group(2), out  # 20K items: the exact flat layout finds every one
