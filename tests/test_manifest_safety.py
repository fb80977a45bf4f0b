"""What a manifest may make matcher do (issue 19, points 1 and 9): index only files inside its own folder
(or an --allow-paths folder), never print its bytes raw to the terminal, register nothing when refused,
and never hold a giant line in memory.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest

from conftest import SAMPLE, run_matcher

from matcher.ingest import sources

PHOTOS = sorted((SAMPLE / "dataset").iterdir())


@pytest.fixture
def layout(tmp_path):
    """pub/manifest.csv next to pub/photos/, and secret/private.jpg beside pub/ (not under it)."""
    pub, secret = tmp_path / "pub", tmp_path / "secret"
    (pub / "photos").mkdir(parents=True)
    secret.mkdir()
    shutil.copy(PHOTOS[0], pub / "photos" / "ok.jpg")
    shutil.copy(PHOTOS[1], secret / "private.jpg")
    os.symlink(secret / "private.jpg", pub / "photos" / "link.jpg")
    rows = [("ok", "photos/ok.jpg"), ("dotdot", "../secret/private.jpg"), ("absolute", str(secret / "private.jpg")),
            ("symlink", "photos/link.jpg"), ("sneaky", "photos/../../secret/private.jpg")]
    with open(pub / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path"])
        w.writerows(rows)
    return pub, secret


def _items(index: Path) -> dict[str, dict]:
    info = json.loads(run_matcher("info", "--index", str(index), "--json", "--failures").stdout)
    return {f["key"]: f for f in info["failed"]}, info


def test_paths_outside_the_manifest_folder_are_refused(layout, tmp_path):
    pub, secret = layout
    index = tmp_path / "index"
    p = run_matcher("add", "--index", str(index), "--workers", "0", str(pub / "manifest.csv"))
    assert p.returncode == 0, p.stderr
    failed, info = _items(index)
    assert set(failed) == {"dotdot", "absolute", "symlink", "sneaky"}
    for f in failed.values():
        assert "outside the manifest's folder" in f["error"] and "--allow-paths" in f["error"], f
    assert info["datasets"][0]["hashed"] == 1 and info["datasets"][0]["failures"] == {"refused": 4}


def test_allow_paths_lets_a_folder_in(layout, tmp_path):
    pub, secret = layout
    index = tmp_path / "index"
    p = run_matcher("add", "--index", str(index), "--workers", "0", "--allow-paths", str(secret),
                    str(pub / "manifest.csv"))
    assert p.returncode == 0, p.stderr
    failed, info = _items(index)
    assert failed == {} and info["datasets"][0]["hashed"] == 5


def test_control_characters_from_a_manifest_never_reach_the_terminal(tmp_path):
    shutil.copy(PHOTOS[0], tmp_path / "a.jpg")
    evil = "\x1b]0;owned\x07\x1b[2J\x1b[31mred"
    with open(tmp_path / "m.jsonl", "w") as f:
        f.write(json.dumps({"id": "k" + evil, "path": "a.jpg", "title": evil, "owner": evil}) + "\n")
        f.write(json.dumps({"id": "bad" + evil, "path": "missing" + evil + ".jpg"}) + "\n")
    index = tmp_path / "index"
    outputs = [run_matcher("add", "--index", str(index), "--dataset", "d" + evil, "--workers", "0",
                           str(tmp_path / "m.jsonl"))]
    outputs.append(run_matcher("info", "--index", str(index), "--failures"))
    outputs.append(run_matcher("search", "--index", str(index), "--workers", "0", str(tmp_path / "a.jpg")))
    outputs.append(run_matcher("lookup", "--index", str(index), "--url", "x"))
    for p in outputs:
        assert p.returncode in (0, 1), p.stderr
        for ch in ("\x1b", "\x07"):
            assert ch not in p.stdout + p.stderr, (p.args, repr(p.stdout + p.stderr))
    assert "owned" in outputs[2].stdout or "owned" in outputs[1].stdout


def test_a_refused_add_registers_nothing(tmp_path):
    index = tmp_path / "index"
    run_matcher("add", "--index", str(index), "--dataset", "first", "--workers", "0", str(SAMPLE / "dataset"), check=True)
    bad = tmp_path / "no-columns.csv"
    bad.write_text("colour,size\nred,3\n")
    p = run_matcher("add", "--index", str(index), "--dataset", "second", "--version", "v1", str(bad))
    assert p.returncode == 2 and "no image URL or path column" in p.stderr, p.stderr
    info = json.loads(run_matcher("info", "--index", str(index), "--json").stdout)
    assert [d["dataset"] for d in info["datasets"]] == ["first"]


def test_a_giant_jsonl_line_is_one_failed_row_in_bounded_memory(tmp_path):
    shutil.copy(PHOTOS[0], tmp_path / "a.jpg")
    path = tmp_path / "m.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"id": "one", "path": "a.jpg"}) + "\n")
        f.write('{"id": "huge", "title": "' + "x" * (60 << 20) + '"}\n')
        f.write(json.dumps({"id": "two", "path": "a.jpg"}) + "\n")
    tracemalloc.start()
    items = list(sources.ManifestSource(path).items())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [it.key for it in items] == ["one", "row:2", "two"]
    assert items[1].error and "longer than" in items[1].error and items[1].error_kind in (None, "bad_row")  # recorded as bad_row
    assert peak < 4 * sources.MAX_LINE, f"{peak / 1e6:.0f} MB"
