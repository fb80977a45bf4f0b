"""Worker processes that die (the OOM killer, a crashing decoder): a search answers for every photo, an add
records every image (hashed, or failed with why) and a rerun hashes what a dead worker took down.

The workers are really killed: each stops itself at a pause point (``MATCHER_TEST_PAUSE_AT=query.photo``,
matcher/testpoints.py) and this harness SIGKILLs it there, as the kernel's OOM killer would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import crashkit as ck
from conftest import ROOT, catalog_sql, run_matcher
from matcher.pipeline.pool import CRASH_REASON


@pytest.fixture(scope="module")
def folder(tmp_path_factory, sample) -> Path:
    """The sample's photos twice over (20 files): enough for several chunks in flight on 2 workers."""
    out = tmp_path_factory.mktemp("crash-folder") / "photos"
    out.mkdir()
    for rep in range(2):
        for p in sorted((sample / "my-photos").iterdir()):
            shutil.copyfile(p, out / f"{rep}-{p.name}")
    return out


def by_query(stdout: str) -> dict[str, dict]:
    rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return {Path(r["query"]).name: r for r in rows}


def summary(r: dict) -> tuple:
    return r["error"], r["hash"], sorted((m["dataset"], m["key"], m["distance"]) for m in r["matches"])


def search_killing_workers(index: Path, folder: Path, tmp: Path, pause: str, kill_all: bool,
                           timeout: float = 240) -> tuple[subprocess.CompletedProcess, int]:
    """``matcher search --json`` with its workers pausing at ``pause`` (see :func:`killing_workers`)."""
    return killing_workers(["search", "--index", str(index), "--json", "--workers", "2", str(folder)], tmp, pause,
                           kill_all, timeout)


def killing_workers(args: list[str], tmp: Path, pause: str, kill_all: bool,
                    timeout: float = 240) -> tuple[subprocess.CompletedProcess, int]:
    """``matcher ARGS`` with its workers pausing at ``pause``; the first stopped worker is SIGKILLed (every
    one if ``kill_all``), the others continued. Returns the finished process and the kills made."""
    out, err = tmp / "out.txt", tmp / "err.txt"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "matcher", *args], stdout=fo, stderr=fe, cwd=ROOT,
                                env=ck.matcher_env(pause), start_new_session=True)
    kills = 0
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the search did not finish"
            for pid in ck.group_members(proc.pid):
                if pid != proc.pid and ck.proc_state(pid) == "T":
                    if kill_all or kills == 0:
                        os.kill(pid, signal.SIGKILL)
                        kills += 1
                    else:
                        os.kill(pid, signal.SIGCONT)
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text()), kills


def test_a_worker_killed_mid_search_loses_no_photo(sample_index, folder, tmp_path):
    clean = run_matcher("search", "--index", str(sample_index), "--json", "--workers", "2", str(folder))
    assert clean.returncode in (0, 1), clean.stderr
    reference = by_query(clean.stdout)
    assert len(reference) == 20 and not any(r["error"] for r in reference.values())
    assert any(r["matches"] for r in reference.values())
    proc, kills = search_killing_workers(sample_index, folder, tmp_path, "query.photo:3", kill_all=False)
    assert kills == 1
    assert proc.returncode == clean.returncode and "Traceback" not in proc.stderr, proc.stderr
    got = by_query(proc.stdout)
    assert sorted(got) == sorted(reference)  # every photo answered once
    assert {k: summary(r) for k, r in got.items()} == {k: summary(r) for k, r in reference.items()}


def test_a_photo_whose_worker_always_dies_is_reported_and_the_search_goes_on(sample_index, folder, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(folder.iterdir())[:6]:
        shutil.copyfile(p, few / p.name)
    proc, kills = search_killing_workers(sample_index, few, tmp_path, "query.photo", kill_all=True)
    assert "Traceback" not in proc.stderr, proc.stderr
    got = by_query(proc.stdout)
    assert sorted(got) == sorted(p.name for p in few.iterdir())
    assert all(r["error"] == CRASH_REASON for r in got.values()), got
    assert kills >= 6  # each photo's worker died at least once on its own
    assert proc.returncode not in (0, 1)  # photos could not be checked


def test_a_photo_whose_verification_always_kills_its_worker_is_reported(sample_index, folder, tmp_path):
    clean = by_query(run_matcher("search", "--index", str(sample_index), "--json", "--workers", "2",
                                 str(folder)).stdout)
    proc, kills = search_killing_workers(sample_index, folder, tmp_path, "verify.photo", kill_all=True)
    assert "Traceback" not in proc.stderr, proc.stderr
    got = by_query(proc.stdout)
    assert sorted(got) == sorted(clean) and kills >= 2
    why = "a worker process died twice while verifying"
    for name, r in got.items():
        if clean[name]["matches"]:  # it had candidates to verify: reported, with why
            assert r["error"].startswith(why), r
        else:  # no candidate at all (answered as before), or candidates that verification turned down
            assert summary(r) == summary(clean[name]) or r["error"].startswith(why), r


def item_states(index: Path) -> dict[str, tuple]:
    return {k: (st, kind, err) for k, st, kind, err in
            catalog_sql(index, "SELECT key, status, error_kind, error FROM items")}


def test_add_with_a_worker_killed_mid_run_hashes_every_image(sample, tmp_path):
    index = tmp_path / "index"
    proc, kills = killing_workers(["add", "--index", str(index), "--workers", "2", str(sample / "dataset")],
                                  tmp_path, "index.photo:2", kill_all=False)
    assert kills == 1 and proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    states = item_states(index)
    assert len(states) == 32 and all(st == "ok" for st, _, _ in states.values()), states


def test_add_records_images_whose_worker_always_dies_and_a_rerun_hashes_them(sample, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted((sample / "dataset").iterdir())[:6]:
        shutil.copyfile(p, few / p.name)
    index = tmp_path / "index"
    proc, kills = killing_workers(["add", "--index", str(index), "--workers", "2", str(few)], tmp_path,
                                  "index.photo", kill_all=True)
    # nothing added: exit 2, the failures kept with their reasons so that the same add retries them
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "0 added, 6 failed" in proc.stderr and "running the same add again retries them" in proc.stderr and kills >= 6
    assert item_states(index) == {p.name: ("failed", "crash", CRASH_REASON) for p in few.iterdir()}
    info = run_matcher("info", "--index", str(index), "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["datasets"][0]["failures"] == {"crash": 6}
    again = run_matcher("add", "--index", str(index), "--workers", "2", str(few))
    assert again.returncode == 0, again.stderr
    assert all(st == "ok" for st, _, _ in item_states(index).values())


def test_no_resource_tracker_traceback_when_every_child_is_killed(sample_index, folder, tmp_path):
    """Every child of a search killed at once (its workers, the fork server and multiprocessing's resource
    tracker, as `pkill -9 -P` or a cgroup OOM kill would): the search still answers for every photo, and
    prints no traceback from the resource tracker multiprocessing starts again (issue 19)."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "matcher", "search", "--index", str(sample_index), "--json",
                                 "--workers", "2", str(folder)], stdout=fo, stderr=fe, cwd=ROOT,
                                env=ck.matcher_env("query.photo"), start_new_session=True)
    killed = False
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the search did not finish"
            stopped = [pid for pid in ck.group_members(proc.pid) if pid != proc.pid and ck.proc_state(pid) == "T"]
            if stopped and not killed:
                for pid in ck.group_members(proc.pid):
                    if pid != proc.pid:
                        os.kill(pid, signal.SIGKILL)
                killed = True
            else:
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stderr = err.read_text()
    assert killed and proc.returncode in (0, 1), stderr
    assert "Traceback" not in stderr and "resource_tracker" not in stderr, stderr
    assert len(by_query(out.read_text())) == len(list(folder.iterdir()))
