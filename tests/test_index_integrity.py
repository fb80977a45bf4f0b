"""A damaged, lost, read-only or full index (issue 19, points 2, 3, 7, 8), on real files, real SQLite, real
mounts: every reader works on read-only media and never writes; a lost or damaged catalog, a damaged FAISS
file, a full disk or a read-only folder is a clear error (exit 2), never an empty index, a traceback or a loss.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLE, MatcherServer, fill_disk, read_only_mount, run_matcher, small_tmpfs

PHOTO = SAMPLE / "my-photos" / "IMG_0002.jpg"  # matches ds-0007 and ds-0011 (sample/expected.csv)


def _files(folder: Path) -> dict[str, str]:
    """The index's files and their digests. A read-only SQLite connection to a WAL catalog in a writable
    folder creates the shared-memory file and an empty WAL (and cannot remove them): not a change."""
    wal = folder / "catalog.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "something was written to the catalog's WAL"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.endswith(("-shm", "-wal"))}


def _matches(index: Path, photo: Path = PHOTO) -> tuple[int, list[dict], str]:
    p = run_matcher("search", "--index", str(index), "--json", "--workers", "0", str(photo))
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return p.returncode, [m for r in rows for m in r["matches"]], p.stderr


@pytest.fixture
def index(sample_index, tmp_path) -> Path:
    out = tmp_path / "src" / "index"
    shutil.copytree(sample_index, out)
    return out


def _no_traceback(p: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in p.stderr + p.stdout, p.stderr[-2000:]


# --- point 2: a lost catalog is an error, never an empty index ------------------------------------------
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_a_lost_catalog_beside_faiss_is_an_error_everywhere(index, state):
    if state == "missing":
        (index / "catalog.sqlite").unlink()
    else:
        (index / "catalog.sqlite").write_bytes(b"")
    faiss_before = (index / "index.faiss").read_bytes()
    rc, matches, err = _matches(index)
    assert rc == 2 and "catalog.sqlite is" in err and "index.faiss" in err, err
    info = run_matcher("info", "--index", str(index), "--json")
    assert info.returncode == 2 and "catalog.sqlite is" in info.stderr, info.stdout
    add = run_matcher("add", "--index", str(index), "--dataset", "sample-dataset", str(SAMPLE / "manifest.csv"))
    assert add.returncode == 2 and "nothing was changed" in add.stderr, add.stderr
    _no_traceback(add)
    assert (index / "index.faiss").read_bytes() == faiss_before  # add did not rewrite FAISS without the entries
    serve = run_matcher("serve", "--index", str(index), "--port", "0", timeout=60, cwd=ROOT)
    assert serve.returncode == 2 and "catalog.sqlite is" in serve.stderr, serve.stderr


# --- point 3: readers on read-only media ----------------------------------------------------------------
def test_readers_work_on_a_read_only_mount_and_write_nothing(index, tmp_path, sample_index):
    before = _files(index)
    with read_only_mount(index, tmp_path / "ro") as ro:
        info = run_matcher("info", "--index", str(ro), "--json")
        assert info.returncode == 0, info.stderr
        assert json.loads(info.stdout)["entries"] == json.loads(
            run_matcher("info", "--index", str(sample_index), "--json").stdout)["entries"]
        rc, matches, err = _matches(ro)
        assert rc == 0 and {m["key"] for m in matches} == {"ds-0007", "ds-0011"}, err
        look = run_matcher("lookup", "--index", str(ro), "--nsid", "16577737@N01")
        assert look.returncode == 0, look.stderr
        dup = run_matcher("duplicates", "--index", str(ro), "--workers", "0", "--no-variants")
        assert dup.returncode in (0, 1), dup.stderr
        with MatcherServer(ro, "--rate-limit", "0") as s:
            import urllib.request

            with urllib.request.urlopen(s.url("/api/v1/datasets"), timeout=30) as r:
                assert r.status == 200 and json.loads(r.read())
            out = s.stop()
        assert "Traceback" not in out and "error" not in out.lower(), out
    assert _files(index) == before


def test_a_server_leaves_the_catalog_as_it_found_it(index):
    """On a writable folder too: the server opens the catalog read-only, no WAL switch, nothing at shutdown."""
    before = _files(index)
    with MatcherServer(index, "--rate-limit", "0") as s:
        import urllib.request

        with urllib.request.urlopen(s.url("/api/v1/datasets"), timeout=30) as r:
            assert r.status == 200
    assert _files(index) == before


# --- point 7: corruption -------------------------------------------------------------------------------
def _entry_thumb_offset(index: Path, key: str) -> tuple[int, bytes]:
    db = sqlite3.connect(index / "catalog.sqlite")
    (thumb,) = db.execute("SELECT thumb FROM entries JOIN items ON items.id = entries.item_id"
                          " WHERE items.key = ? AND entries.kind = 'full'", (key,)).fetchone()
    db.close()
    data = (index / "catalog.sqlite").read_bytes()
    at = data.find(thumb)
    assert at > 0 and data.count(thumb) == 1
    return at, thumb


def test_flipped_bytes_in_faiss_are_caught_then_repaired(index):
    rc, clean, _ = _matches(index)
    assert rc == 0 and len(clean) == 2
    path = index / "index.faiss"
    data = bytearray(path.read_bytes())
    # flip bits in the codes (the file ends with the ids, then the trailer): FAISS still reads the file
    for at in range(len(data) // 3, len(data) // 3 + 6):
        data[at] ^= 0x5A
    path.write_bytes(bytes(data))
    rc, _, err = _matches(index)
    assert rc == 2 and "checksum mismatch" in err and "matcher repair" in err, err
    check = run_matcher("check", "--index", str(index))
    assert check.returncode == 2 and "checksum mismatch" in check.stdout, check.stdout
    repair = run_matcher("repair", "--index", str(index))
    assert repair.returncode == 0, repair.stderr
    check = run_matcher("check", "--index", str(index), "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["ok"], check.stdout
    rc, again, _ = _matches(index)
    assert rc == 0 and [m["key"] for m in again] == [m["key"] for m in clean]


def test_check_finds_faiss_out_of_step_with_the_catalog(index):
    db = sqlite3.connect(index / "catalog.sqlite")
    db.execute("INSERT INTO entries (id, item_id, kind, code) VALUES (999999, 1, 'trim', x'0011223344556677')")
    db.commit()
    db.close()
    check = run_matcher("check", "--index", str(index), "--json")
    assert check.returncode == 2 and "lacks 1 catalog entries" in json.loads(check.stdout)["ids"]


def test_one_damaged_thumbnail_is_reported_unverifiable_and_the_search_goes_on(index):
    at, thumb = _entry_thumb_offset(index, "ds-0011")
    with open(index / "catalog.sqlite", "r+b") as f:  # the PNG's signature and header, overwritten
        f.seek(at)
        f.write(b"\xff" * 40)
    rc, matches, err = _matches(index)
    assert rc == 0, err
    by_key = {m["key"]: m for m in matches}
    assert by_key["ds-0007"]["evidence"]["score"] > 0.5  # the other match is verified as ever
    assert "unverifiable" in by_key["ds-0011"]["evidence"] and by_key["ds-0011"]["evidence"]["verified"] is False


def test_a_damaged_catalog_page(index):
    """One entry's b-tree page damaged: search reports the rest; info and serve say so (exit 2); add refuses to
    write into it (quick_check) and changes nothing."""
    at, _ = _entry_thumb_offset(index, "ds-0011")
    page = at // 4096 * 4096
    with open(index / "catalog.sqlite", "r+b") as f:
        f.seek(page)
        assert f.read(1) == b"\x0d"  # a table leaf page
        f.seek(page)
        f.write(b"\x00\xff\xff\xff\xff\xff\xff\xff")
    before = _files(index)
    rc, matches, err = _matches(index)
    _no_traceback(subprocess.CompletedProcess([], rc, "", err))
    assert rc == 0 and {m["key"] for m in matches} == {"ds-0007"}, err
    assert "could not be read from the damaged catalog" in err
    add = run_matcher("add", "--index", str(index), "--dataset", "more", str(SAMPLE / "dataset"))
    assert add.returncode == 2 and "damaged" in add.stderr and "Traceback" not in add.stderr, add.stderr
    check = run_matcher("check", "--index", str(index))
    assert check.returncode == 2 and "damaged" in check.stdout
    assert _files(index) == before


def test_info_and_serve_on_a_damaged_items_page(index):
    data = (index / "catalog.sqlite").read_bytes()
    pages = [at // 4096 * 4096 for at in range(len(data)) if data.startswith(b"ds-0011", at)]
    page = next(p for p in pages if data[p] == 0x0D)  # the items table's leaf (not its unique index's)
    with open(index / "catalog.sqlite", "r+b") as f:
        f.seek(page)
        f.write(b"\x00\xff\xff\xff\xff\xff\xff\xff")
    info = run_matcher("info", "--index", str(index))
    assert info.returncode == 2 and "damaged" in info.stderr and "matcher check" in info.stderr, info.stderr
    _no_traceback(info)
    serve = run_matcher("serve", "--index", str(index), "--port", "0", timeout=60, cwd=ROOT)
    assert serve.returncode == 2 and "damaged" in serve.stderr, serve.stderr
    _no_traceback(serve)


# --- point 8: full disk, read-only folder ---------------------------------------------------------------
def test_add_on_a_full_disk_loses_nothing(index, tmp_path):
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        target = disk / "index"
        shutil.copytree(index, target)
        filler = fill_disk(disk)
        add = run_matcher("add", "--index", str(target), "--dataset", "more", "--workers", "0", str(SAMPLE / "dataset"))
        assert add.returncode == 2 and "cannot write the index" in add.stderr, add.stderr
        assert "Everything stored before is intact" in add.stderr
        _no_traceback(add)
        filler.unlink()
        assert run_matcher("check", "--index", str(target)).returncode == 0
        rc, matches, _ = _matches(target)
        assert rc == 0 and {m["key"] for m in matches} >= {"ds-0007", "ds-0011"}
        add = run_matcher("add", "--index", str(target), "--dataset", "more", "--workers", "0", str(SAMPLE / "dataset"))
        assert add.returncode == 0, add.stderr
        info = json.loads(run_matcher("info", "--index", str(target), "--json").stdout)
        assert {d["dataset"]: d["hashed"] for d in info["datasets"]} == {"sample-dataset": 32, "more": 32}


def test_remove_compact_and_add_on_a_full_disk(index, tmp_path):
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        target = disk / "index"
        shutil.copytree(index, target)
        assert run_matcher("remove", "--index", str(target), "--key", "ds-0001").returncode == 0
        filler = fill_disk(disk)
        for args in (["remove", "--key", "ds-0002"], ["compact"]):
            p = run_matcher(*args[:1], "--index", str(target), *args[1:])
            assert p.returncode == 2 and "cannot write the index" in p.stderr, (args, p.stderr)
            _no_traceback(p)
        filler.unlink()
        info = json.loads(run_matcher("info", "--index", str(target), "--json").stdout)
        assert info["datasets"][0]["items"] == 31 and info["removed_entries"] >= 1


def test_writers_on_a_read_only_mount(index, tmp_path):
    before = _files(index)
    with read_only_mount(index, tmp_path / "ro") as ro:
        for args in (["add", "--dataset", "more", str(SAMPLE / "dataset")], ["remove", "--key", "ds-0001"], ["compact"]):
            p = run_matcher(args[0], "--index", str(ro), *args[1:])
            assert p.returncode == 2 and "cannot write the index" in p.stderr, (args, p.stderr)
            assert "Read-only file system" in p.stderr or "readonly" in p.stderr, p.stderr
            _no_traceback(p)
    assert _files(index) == before
