"""What makes `add` and `search` cheaper (issue 20) still gives the same answers, and the cheap paths are taken.

* content boxes: the grey-level spread of a background region read off its histogram equals numpy's
  percentiles (including the cases the histogram alone cannot decide);
* the stage profile (matcher.stages) counts each stage of a real image when on, nothing when off;
* start-up: `import matcher.cli`, and an add of a local folder, never import the downloader (aiohttp);
* an add of one photo runs in the CLI's own process (no worker processes to start): a pause point
  inside the per-image work stops the CLI process itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, SAMPLE
from crashkit import proc_state
from matcher import stages
from matcher.hashing.hashers import PHash
from matcher.imaging.images import DEFAULT_LIMITS
from matcher.imaging.regions import _spread_at_most
from matcher.pipeline.photo import HashSpec, index_batch


def _percentile_spread(v: np.ndarray) -> float:
    lo, hi = np.percentile(v, (5, 95))
    return float(hi - lo)


@pytest.mark.parametrize("seed", range(6))
def test_spread_from_the_histogram_is_numpys(seed):
    rng = np.random.default_rng(seed)
    decided = 0
    for _ in range(400):
        n = int(rng.integers(1, 3000))
        centre, width = int(rng.integers(0, 256)), int(rng.integers(0, 14))
        v = np.clip(rng.normal(centre, width / 3 + 0.01, n).round(), 0, 255).astype(np.uint8)
        if rng.random() < 0.3:  # a few outliers: the percentiles land between two order statistics
            v[rng.integers(0, n, max(1, n // 15))] = rng.integers(0, 256)
        hist = np.bincount(v, minlength=256)
        asked = []

        def values():
            asked.append(1)
            return v

        for limit in (4.0, 6.0, 8.0):
            assert _spread_at_most(hist, limit, values) == (_percentile_spread(v) <= limit)
        decided += not asked
    assert decided > 300  # the histogram alone decides nearly always


def test_stage_profile_counts_the_stages_of_a_real_image():
    photo = str(next(p for p in sorted((SAMPLE / "dataset").iterdir()) if p.suffix.lower() in {".jpg", ".jpeg"}))
    spec = HashSpec.of(PHash(), True, DEFAULT_LIMITS)
    stages.reset()
    index_batch(spec, [photo])
    assert stages.spent() == {}  # off: nothing is counted
    stages.enable()
    try:
        (out,) = index_batch(spec, [photo])
    finally:
        stages.enable(False)
    assert out[0] == "ok"
    spent = stages.spent()
    assert list(spent) == ["decode", "regions", "codes", "filter codes", "thumbnails"]
    assert all(seconds >= 0 and laps == 1 for seconds, laps in spent.values())
    stages.reset()


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return set(out.stdout.split())


def test_the_command_line_starts_without_the_downloader():
    assert "aiohttp" not in _modules_after("import matcher.cli")


def test_the_add_command_on_a_folder_does_not_import_the_downloader(tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE / "dataset", folder)
    loaded = _modules_after(f"""
import sys
from matcher.cli import main
sys.argv = ["matcher", "add", "--index", {str(tmp_path / 'index')!r}, {str(folder)!r}]
try:
    main()
except SystemExit as e:
    assert e.code == 0, e.code
""")
    assert "matcher.ingest.fetch" not in loaded and "aiohttp" not in loaded


def test_an_add_of_a_folder_does_not_import_the_downloader(tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE / "dataset", folder)
    loaded = _modules_after(f"""
from matcher.engine import add, open_source
stats = add({str(tmp_path / 'index')!r}, [open_source({str(folder)!r}, 'd')], workers=0)
assert stats.added > 0, stats
""")
    assert "matcher.ingest.fetch" not in loaded and "aiohttp" not in loaded


def test_an_add_of_one_photo_runs_in_the_cli_process(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    photo = next(p for p in sorted((SAMPLE / "dataset").iterdir()) if p.suffix.lower() in {".jpg", ".jpeg"})
    shutil.copy(photo, folder / photo.name)
    env = dict(os.environ, MATCHER_TEST_PAUSE_AT="index.photo")
    proc = subprocess.Popen([sys.executable, "-m", "matcher", "add", "--index", str(tmp_path / "index"), str(folder)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while proc_state(proc.pid) != "T" and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc_state(proc.pid) == "T", "the CLI process itself should stop at index.photo"
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "1 added" in err.replace(",", ""), err


def test_without_thumbnails_the_same_entries_are_hashed_and_no_thumbnail_is_made():
    photos = [str(p) for p in sorted((SAMPLE / "dataset").iterdir()) if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]
    full = index_batch(HashSpec.of(PHash(), True, DEFAULT_LIMITS), photos)
    none = index_batch(HashSpec.of(PHash(), True, DEFAULT_LIMITS, thumbnails=False), photos)
    for a, b in zip(full, none):
        assert a[0] == b[0] == "ok"
        assert a[1] == b[1] and a[3:] == b[3:]
        assert [(k, c, f) for k, c, _, f in a[2]] == [(k, c, f) for k, c, _, f in b[2]]
        assert all(t for _, _, t, _ in a[2]) and not any(t for _, _, t, _ in b[2])
