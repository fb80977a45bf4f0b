"""No user file is ever destroyed: every option that writes a file refuses a photo, an input of the same command
and an existing file matcher did not write (unless --force), with exit 2, nothing written and a message saying
what to do; a report matcher wrote itself is replaced. Each writer is run as a user runs it (a subprocess)."""

import csv
import shutil

import pytest
from conftest import run_matcher


@pytest.fixture
def photos(tmp_path, sample):
    d = tmp_path / "Pictures"
    d.mkdir()
    for name in ("IMG_0002.jpg", "IMG_0003.jpg"):
        shutil.copy(sample / "my-photos" / name, d / name)
    return d


def _refused(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = " ".join(proc.stderr.split())
    for w in words:
        assert w in said, said
    return said


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_search_html_never_overwrites_a_photo(sample_index, photos):
    """The report's name forgotten after --html: the shell's first *.jpg takes its place."""
    first, second = sorted(photos.iterdir())
    before = first.read_bytes()
    proc = run_matcher("search", "--index", str(sample_index), "--html", str(first), str(second))
    _refused(proc, "photo", "--html", "report.html")
    assert first.read_bytes() == before and _files(photos) == ["IMG_0002.jpg", "IMG_0003.jpg"]
    proc = run_matcher("search", "--index", str(sample_index), "--force", "--html", str(first), str(second))
    _refused(proc, "photo")  # --force never replaces a photo
    assert first.read_bytes() == before
    proc = run_matcher("search", "--index", str(sample_index), "--html", str(photos / "new.jpg"), str(photos))
    _refused(proc, "photo")  # nor writes a report under a photo's name
    assert _files(photos) == ["IMG_0002.jpg", "IMG_0003.jpg"]


def test_search_html_replaces_its_own_report_only(sample_index, photos, tmp_path):
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    proc = run_matcher("search", "--index", str(sample_index), "--html", str(notes), str(photos))
    _refused(proc, "exists", "matcher did not write", "--force")
    assert notes.read_text() == "<p>my notes</p>"
    report = tmp_path / "report.html"
    for _ in range(2):  # the second run replaces the report the first wrote, without --force
        proc = run_matcher("search", "--index", str(sample_index), "--html", str(report), str(photos))
        assert proc.returncode == 0, proc.stderr
    assert 'name="generator" content="matcher"' in report.read_text()
    proc = run_matcher("search", "--index", str(sample_index), "--force", "--html", str(notes), str(photos))
    assert proc.returncode == 0 and "my notes" not in notes.read_text()


def test_search_html_refuses_the_index_and_a_folder(sample_index, photos, tmp_path):
    meta = sample_index / "meta.json"
    before = meta.read_bytes()
    _refused(run_matcher("search", "--index", str(sample_index), "--force", "--html", str(meta), str(photos)),
             "inputs")
    assert meta.read_bytes() == before
    _refused(run_matcher("search", "--index", str(sample_index), "--html", str(photos), str(photos)), "directory")


def test_search_letters_keep_a_foreign_letter(sample_index, photos, tmp_path):
    letters = tmp_path / "letters"
    letters.mkdir()
    mine = letters / "sample-dataset-list.txt"
    mine.write_text("my own draft\n")
    proc = run_matcher("search", "--index", str(sample_index), "--letters", str(letters), str(photos))
    _refused(proc, "sample-dataset-list.txt", "--force")
    assert mine.read_text() == "my own draft\n" and _files(letters) == ["sample-dataset-list.txt"]
    mine.unlink()
    for _ in range(2):  # letters matcher wrote are replaced by the next run
        proc = run_matcher("search", "--index", str(sample_index), "--letters", str(letters), str(photos))
        assert proc.returncode == 0, proc.stderr
    assert _files(letters) == ["sample-dataset-bipa.txt", "sample-dataset-gdpr.txt", "sample-dataset-list.txt"]


def test_duplicates_out(sample_index, tmp_path):
    out = tmp_path / "dups.csv"
    out.write_text("my,spreadsheet\n")
    _refused(run_matcher("duplicates", "--index", str(sample_index), "--out", str(out)), "--force")
    assert out.read_text() == "my,spreadsheet\n"
    _refused(run_matcher("duplicates", "--index", str(sample_index), "--force", "--out",
                         str(sample_index / "catalog.sqlite")), "inputs")
    out.unlink()
    for _ in range(2):
        assert run_matcher("duplicates", "--index", str(sample_index), "--out", str(out)).returncode == 0
    assert out.read_text().startswith("group,group_size,item_id")


@pytest.fixture
def registry(tmp_path, sample):
    reg = tmp_path / "optout.json"
    run_matcher("optout", "add", "--registry", str(reg), "--workers", "0", str(sample / "my-photos" / "IMG_0005.jpg"),
                check=True)
    return reg


def test_filter_out_and_log(registry, sample, tmp_path):
    manifest = tmp_path / "manifest.csv"
    shutil.copy(sample / "manifest.csv", manifest)
    rows = manifest.read_bytes()
    base = ("filter", "--registry", str(registry), "--workers", "0", str(manifest))
    _refused(run_matcher(*base, "--force", "--out", str(manifest)), "inputs")
    _refused(run_matcher(*base, "--force", "--out", str(registry)), "inputs")
    assert manifest.read_bytes() == rows
    photo = tmp_path / "IMG_0001.jpg"
    shutil.copy(sample / "my-photos" / "IMG_0001.jpg", photo)
    _refused(run_matcher(*base, "--out", str(tmp_path / "clean.csv"), "--log", str(photo)), "photo")
    assert not (tmp_path / "clean.csv").exists()
    other = tmp_path / "other.csv"
    other.write_text("id,url\n1,https://example.org/a.jpg\n")
    _refused(run_matcher(*base, "--out", str(other)), "--force")
    assert other.read_text().startswith("id,url\n1,")
    log = tmp_path / "dropped.csv"
    for _ in range(2):  # the log is matcher's: replaced; the clean manifest needs --force the second time
        proc = run_matcher(*base, "--force", "--out", str(other), "--log", str(log))
        assert proc.returncode == 0, proc.stderr
    assert next(csv.reader(open(log)))[0] == "row"


def test_optout_registry_never_a_photo(photos, tmp_path):
    photo = photos / "IMG_0002.jpg"
    before = photo.read_bytes()
    _refused(run_matcher("optout", "add", "--registry", str(photo), str(photos / "IMG_0003.jpg")), "photo")
    _refused(run_matcher("optout", "remove", "--registry", str(photo), "--id", "o-0"), "photo")
    assert photo.read_bytes() == before
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    proc = run_matcher("optout", "add", "--registry", str(notes), str(photos))
    assert proc.returncode == 2 and notes.read_text() == '{"mine": true}'


def test_bench_out_never_an_input_or_a_foreign_folder(sample, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(sample / "my-photos", photos)
    _refused(run_matcher("bench", str(photos), "--out", str(photos)), "input")
    _refused(run_matcher("bench", str(photos), "--out", str(photos / "bench")), "input")
    assert _files(photos) == _files(sample / "my-photos")
    foreign = tmp_path / "work"
    foreign.mkdir()
    (foreign / "thesis.md").write_text("draft")
    _refused(run_matcher("bench", str(photos), "--out", str(foreign)), "--force")
    assert _files(foreign) == ["thesis.md"]
