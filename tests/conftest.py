"""Shared fixtures: the bundled sample photos, a CLI runner, a loopback HTTP server."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
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
