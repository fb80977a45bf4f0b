"""Exit codes and messages scripts and people rely on, each as a user meets it (the CLI in a subprocess):
Ctrl-C is 130, an add that stored nothing is 2 (and leaves no index when it recorded nothing), a folder added twice under two names is
warned about, a single photo given to add is explained, filter keeps relative paths valid elsewhere, serve
on a busy port says so before serving, --index has help everywhere, HEAD is answered."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, SAMPLE, MatcherServer, catalog_sql, run_matcher

COMMANDS = ("add", "search", "info", "remove", "compact", "serve", "lookup", "duplicates", "check", "repair")


def _start(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "matcher", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd or ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200"),
                            start_new_session=True)


def _ctrl_c(proc):
    """Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group (workers included)."""
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, " ".join(err.split())


@pytest.fixture
def many_photos(tmp_path):
    """240 real photos (the sample's, copied under new names): an add that takes a while."""
    d = tmp_path / "many"
    d.mkdir()
    photos = sorted((SAMPLE / "dataset").iterdir())
    for i in range(240):
        src = photos[i % len(photos)]
        shutil.copy(src, d / f"{i:03d}{src.suffix}")
    return d


def test_ctrl_c_during_add_is_130_and_says_how_to_resume(tmp_path, many_photos):
    index = tmp_path / "idx"
    proc = _start("add", "--index", str(index), "--dataset", "many", "--workers", "1", str(many_photos))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if catalog_sql(index, "SELECT COUNT(*) FROM items")[0][0] >= 5:
                break
        except Exception:  # the catalog is not there yet  # noqa: BLE001
            pass
        time.sleep(0.1)
    code, _, said = _ctrl_c(proc)
    assert code == 130, said
    assert "Aborted" not in said and "Traceback" not in said
    stored = catalog_sql(index, "SELECT COUNT(*) FROM items WHERE status = 'ok'")[0][0]
    assert 0 < stored < 240
    assert "interrupted:" in said and "Run the same command again to resume" in said
    assert f"{stored:,} images stored" in said
    again = run_matcher("add", "--index", str(index), "--dataset", "many", "--workers", "1", str(many_photos))
    assert again.returncode == 0, again.stderr
    assert f"{stored:,} already in the index" in again.stderr
    assert catalog_sql(index, "SELECT COUNT(*) FROM items WHERE status = 'ok'")[0][0] == 240


def test_ctrl_c_during_search_is_130(tmp_path, sample_index, many_photos):
    proc = _start("search", "--index", str(sample_index), "--workers", "1", str(many_photos))
    time.sleep(4)
    code, _, said = _ctrl_c(proc)
    assert code == 130 and "interrupted" in said and "Traceback" not in said


def test_add_that_stores_nothing_is_2_and_leaves_no_index(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    p = run_matcher("add", "--index", str(tmp_path / "a" / "b" / "idx"), str(empty))
    assert p.returncode == 2 and "no images found" in p.stderr
    assert not (tmp_path / "a").exists()  # not even the folders it created above the index
    bad = tmp_path / "bad.csv"
    bad.write_text("id,url\n1,ftp://example.org/a.jpg\n2,not a url\n")
    p = run_matcher("add", "--index", str(tmp_path / "idx"), str(bad))
    said = " ".join(p.stderr.split())
    assert p.returncode == 2 and "nothing was added: every item failed (2)" in said and "bad_url: 2" in said
    # the failures are records (a dead link is evidence; a rerun retries them), so that index is kept
    assert "--failures" in said and catalog_sql(tmp_path / "idx", "SELECT COUNT(*) FROM items")[0][0] == 2


def test_add_into_an_existing_index_keeps_it_when_nothing_is_added(tmp_path, sample):
    index = tmp_path / "idx"
    run_matcher("add", "--index", str(index), "--dataset", "mine", str(sample / "my-photos"), check=True)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,url\n1,ftp://example.org/a.jpg\n")
    p = run_matcher("add", "--index", str(index), str(bad))
    assert p.returncode == 2 and "every item failed" in p.stderr
    assert catalog_sql(index, "SELECT COUNT(*) FROM items WHERE dataset = 'mine'")[0][0] == 10


def test_the_same_folder_under_another_dataset_name_is_warned(tmp_path, sample):
    index = tmp_path / "idx"
    run_matcher("add", "--index", str(index), str(sample / "my-photos"), check=True)  # dataset "my-photos"
    p = run_matcher("add", "--index", str(index), "--dataset", "photos-again", str(sample / "my-photos"))
    said = " ".join(p.stderr.split())
    assert p.returncode == 0
    assert "was added before as dataset 'my-photos' (10 items)" in said and "--dataset my-photos" in said
    quiet = run_matcher("add", "--index", str(index), str(sample / "my-photos"))  # the default name resumes
    assert quiet.returncode == 0 and "warning" not in quiet.stderr and "10 already in the index" in quiet.stderr


def test_a_single_photo_given_to_add_is_explained(tmp_path, sample):
    p = run_matcher("add", "--index", str(tmp_path / "idx"), str(sample / "my-photos" / "IMG_0001.jpg"))
    said = " ".join(p.stderr.split())
    assert p.returncode == 2 and "is a photo" in said and "put it in a folder" in said and "matcher search" in said
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_filter_out_elsewhere_keeps_relative_paths_valid(tmp_path, sample, fmt):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(sample / "dataset", work / "dataset")
    manifest = work / f"manifest.{fmt}"
    if fmt == "csv":
        shutil.copy(sample / "manifest.csv", manifest)
    else:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        pq.write_table(pacsv.read_csv(sample / "manifest.csv"), manifest)
    registry = tmp_path / "optout.json"
    run_matcher("optout", "add", "--registry", str(registry), "--workers", "0",
                str(sample / "my-photos" / "IMG_0005.jpg"), check=True)
    (tmp_path / "clean").mkdir()
    out = tmp_path / "clean" / f"clean.{fmt}"
    run_matcher("filter", str(manifest), "--registry", str(registry), "--workers", "0", "--out", str(out), check=True)
    if fmt == "csv":
        paths = [r["path"] for r in csv.DictReader(open(out))]
    else:
        import pyarrow.parquet as pq

        paths = pq.read_table(out).column("path").to_pylist()
    assert len(paths) == 30 and all(p.startswith("../work/dataset/") for p in paths)
    assert all((out.parent / p).is_file() for p in paths)
    # the clean manifest, added from its own folder, reads the local files (no download: the URLs are not served);
    # they are outside its folder, which add reads only when told so
    p = run_matcher("add", "--index", str(tmp_path / "idx"), "--allow-paths", str(work), out.name, cwd=out.parent)
    assert p.returncode == 0 and "30 added, 0 failed" in p.stderr


def test_serve_on_a_busy_port_is_2_before_serving(sample_index):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = run_matcher("serve", "--index", str(sample_index), "--port", str(port), timeout=60)
    said = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 2 and f"port {port} on 127.0.0.1 is already in use" in said and "--port" in said
    assert "web check on" not in said


def test_serve_stops_on_ctrl_c_with_130_and_answers_head(sample_index):
    server = MatcherServer(sample_index)
    try:
        for path in ("/", "/static/app.js", "/api/v1/health", "/api/v1/recipe"):
            with urllib.request.urlopen(urllib.request.Request(server.url(path), method="HEAD"), timeout=10) as r:
                assert r.status == 200 and r.read() == b""
                assert int(r.headers["Content-Length"]) > 0
    finally:
        said = server.stop()
    assert server.proc.returncode == 130, said


def test_every_index_option_has_help():
    """Every command that takes --index (all of `matcher --help`'s list) says what it is."""
    listed = run_matcher("--help", check=True).stdout.split("Commands:")[1]
    commands = [line.split()[0] for line in listed.splitlines() if line.startswith("  ") and line.split()]
    assert set(COMMANDS) <= set(commands)
    for cmd in commands:
        text = run_matcher(cmd, "--help", check=True).stdout
        if "--index" not in text:
            continue
        line = text[text.index("--index"):].split("--", 2)[1]
        assert len(line.split()) > 3, f"matcher {cmd} --help: --index has no help ({line!r})"
