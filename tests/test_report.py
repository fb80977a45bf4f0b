"""Reports: JSON Lines, CSV, terminal records, HTML, summary - with real image files."""

from __future__ import annotations

import base64
import csv
import errno
import html
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw
from rich.console import Console

from matcher import report
from matcher.errors import MatcherError
from matcher.imaging.images import load_image
from matcher.results import Item, Match, QueryResult


# --------------------------------------------------------------------------- fixtures

def _photo(path, size=(640, 480), seed=0, fmt=None):
    """A photo-like image: colour gradient, shapes and sensor-ish noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :]
    y = np.linspace(0, 1, h)[:, None]
    rgb = np.stack([
        200 * x + 40 * y,
        120 + 100 * np.sin(6 * x + 3 * y + seed),
        220 * (1 - y) * (0.5 + 0.5 * x),
    ], axis=-1)
    rgb = rgb + rng.normal(0, 12, size=(h, w, 3))
    im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        d.ellipse([x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 160))], fill=colour)
    d.rectangle([w // 3, h // 3, w // 2, h // 2], outline=(255, 255, 255), width=5)
    im.save(path, fmt)
    return path


@pytest.fixture
def photos(tmp_path):
    src = tmp_path / "my photos"
    src.mkdir()
    ds = tmp_path / "dataset"
    ds.mkdir()
    return {
        "q1": str(_photo(src / "beach.jpg", seed=1)),
        "q2": str(_photo(src / "portrait.png", size=(300, 500), seed=2)),
        "q3": str(_photo(src / "cat.jpg", seed=3)),
        "copy1": str(_photo(ds / "000123.jpg", size=(320, 240), seed=1)),
        "copy2": str(_photo(ds / "xyz.png", size=(150, 250), seed=2)),
        "corrupt": str(_write(src / "broken.jpg", b"\xff\xd8\xff\xe0 definitely not a jpeg")),
        "root": tmp_path,
    }


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _item(i, **kw):
    base = dict(id=i, dataset="laion-sample", key=f"k{i}", hash="c3a5" * 4, width=640, height=480)
    base.update(kw)
    return Item(**base)


@pytest.fixture
def results(photos):
    local = Match(
        _item(1, key="000123", path=photos["copy1"], url="https://img.example.com/a/000123.jpg",
              page_url="https://example.com/photo/123", owner="Jane Doe", license="CC BY-NC 2.0",
              title="Sunset <script>alert(1)</script> & friends"),
        distance=2,
        evidence={"crop": [0, 0, 640, 480], "score": 0.97},
    )
    remote = Match(
        _item(2, dataset="cc-images", key="remote-7", path=str(photos["root"] / "missing.jpg"),
              url="https://cdn.example.org/x/7.jpg?w=1&h=2", owner="=HYPERLINK(\"http://evil/\")",
              license="+cmd", title="-2+3"),
        distance=5,
    )
    js = Match(
        _item(3, key="js-item", url="javascript:alert(document.cookie)", page_url="JaVaScRiPt:alert(2)",
              owner="@evil", title="\ttabbed"),
        distance=9,
    )
    png = Match(_item(4, dataset="cc-images", key="xyz", path=photos["copy2"], url=None), distance=0)
    return [
        QueryResult(photos["q1"], [local, remote, js], hash="c3a5c3a5c3a5c3a5"),
        QueryResult(photos["q3"], [], hash="0f0f0f0f0f0f0f0f"),
        QueryResult(photos["corrupt"], error="not an image, or a format we cannot read"),
        QueryResult(photos["q2"], [png], hash="ffff0000ffff0000"),
    ]


# --------------------------------------------------------------------------- JSON Lines

class _Recorder(io.StringIO):
    def __init__(self):
        super().__init__()
        self.flushed_at: list[int] = []

    def flush(self):
        self.flushed_at.append(self.getvalue().count("\n"))
        super().flush()


def test_jsonl_lines_equal_to_json(results):
    fp = _Recorder()
    report.write_jsonl(results, fp)
    lines = fp.getvalue().splitlines()
    assert len(lines) == len(results)
    for line, r in zip(lines, results):
        obj = json.loads(line)
        assert obj == r.to_json()
        assert tuple(obj) == report.JSONL_FIELDS
    assert fp.flushed_at == [1, 2, 3, 4]  # flushed after every line
    assert "<script>alert(1)</script>" in fp.getvalue()  # JSON is not HTML-escaped


def test_jsonl_non_ascii_and_line_separators():
    r = QueryResult("fotos/café.jpg", [Match(_item(1, title="a\u2028b\u2029c\x85d"), 1)], hash="00")
    fp = io.StringIO()
    report.write_jsonl([r], fp)
    text = fp.getvalue()
    assert "café" in text  # ensure_ascii=False
    assert text.count("\n") == 1 and len(text.splitlines()) == 1
    assert json.loads(text) == r.to_json()


def test_jsonl_streams_lazily():
    fp = io.StringIO()

    def gen():
        yield QueryResult("a.jpg", hash="01")
        assert fp.getvalue().count("\n") == 1  # first line already written
        yield QueryResult("b.jpg", hash="02")

    report.write_jsonl(gen(), fp)
    assert fp.getvalue().count("\n") == 2


# --------------------------------------------------------------------------- CSV

def _csv_rows(results):
    fp = io.StringIO(newline="")
    report.write_csv(results, fp)
    return list(csv.reader(io.StringIO(fp.getvalue(), newline="")))


def test_csv_rows_and_values(results, photos):
    rows = _csv_rows(results)
    assert tuple(rows[0]) == report.CSV_COLUMNS
    assert rows[0][-1] == "error"
    body = [dict(zip(rows[0], row)) for row in rows[1:]]
    # 3 matches + 0 for the photo without matches + 1 error row + 1 match
    assert len(body) == 5
    first = body[0]
    assert first["query"] == photos["q1"]
    assert first["query_hash"] == "c3a5c3a5c3a5c3a5"
    assert first["dataset"] == "laion-sample"
    assert first["key"] == "000123"
    assert first["distance"] == "2"
    assert first["url"] == "https://img.example.com/a/000123.jpg"
    assert first["page_url"] == "https://example.com/photo/123"
    assert first["path"] == photos["copy1"]
    assert first["owner"] == "Jane Doe"
    assert first["license"] == "CC BY-NC 2.0"
    assert first["title"] == "Sunset <script>alert(1)</script> & friends"
    assert (first["width"], first["height"]) == ("640", "480")
    assert (first["how"], first["sure"], first["score"]) == ("the same photo", "sure", "0.97")  # evidence in words
    assert first["item_hash"] == "c3a5" * 4
    assert first["error"] == ""
    assert photos["q3"] not in {b["query"] for b in body}
    err = body[3]
    assert err["query"] == photos["corrupt"]
    assert err["error"] == "not an image, or a format we cannot read"
    assert all(err[c] == "" for c in report.CSV_COLUMNS if c not in ("query", "error"))
    assert body[4]["key"] == "xyz" and body[4]["distance"] == "0"
    assert body[4]["url"] == ""  # None -> empty


def test_csv_formula_injection_guard(results):
    body = [dict(zip(report.CSV_COLUMNS, row)) for row in _csv_rows(results)[1:]]
    remote, js = body[1], body[2]
    assert remote["owner"] == "'=HYPERLINK(\"http://evil/\")"
    assert remote["license"] == "'+cmd"
    assert remote["title"] == "'-2+3"
    assert js["owner"] == "'@evil"
    assert js["title"] == "'\ttabbed"
    # no cell anywhere starts like a formula
    for row in body:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value


# --------------------------------------------------------------------------- terminal

def test_print_table(results, photos):
    console = Console(record=True, width=200)
    report.print_table(results, console)
    text = console.export_text()
    assert "beach.jpg" in text and "portrait.png" in text
    assert "000123" in text and "remote-7" in text and "xyz" in text
    assert re.search(r"the same photo — sure \(distance 2, score 0\.970\)\n +laion-sample 000123", text)
    assert "Jane Doe" in text and "CC BY-NC 2.0" in text
    assert "https://img.example.com/a/000123.jpg" in text
    assert "broken.jpg" in text and "not an image, or a format we cannot read" in text
    assert "cat.jpg" not in text  # no matches: not listed
    assert "copies by dataset: cc-images 2 copies of 2 photos; laion-sample 2 copies of 1 photo" in text
    assert text.count("how sure:") == 1  # distance and score explained once


def test_print_table_never_breaks_a_url_or_key_at_80_columns(tmp_path):
    """What people copy (URL, page, key) stays whole on one line on an 80-column terminal, however long."""
    url = "https://images.example.org/" + "a" * 90 + "/photo_2368127776_6b877559d9_z.jpg"
    page = "https://www.flickr.com/photos/11864207@N00/2368127776/in/album-72157603929491849/"
    key = "laion2B-en/part-00017/000123456789-" + "k" * 40
    r = QueryResult("photos/IMG_0002.jpg", [Match(_item(1, key=key, url=url, page_url=page, owner="someone",
                                                      license="CC BY 2.0"), 0, {"variant": "mirror/c90",
                                                                                "entry": "full", "score": 0.995})])
    console = Console(record=True, width=80)
    report.print_table([r], console)
    lines = console.export_text().splitlines()
    assert f"     {url}" in lines and f"     {page}" in lines
    assert any(key in line for line in lines)
    assert any("mirrored, cropped (about 20% removed) — very sure" in line for line in lines)


def test_print_table_error_red_and_inert_markup():
    console = Console(record=True, width=200, force_terminal=True, color_system="standard")
    rs = [
        QueryResult("x/bad.jpg", error="cannot decode image (boom)"),
        QueryResult("x/ok.jpg", [Match(_item(1, key="[red]k[/red]", owner="evil\x1b[2Jowner",
                                               url="https://e.com/[bold]u"), 3)], hash="00"),
    ]
    report.print_table(rs, console)
    ansi = console.export_text(styles=True)
    plain = Console(record=True, width=200)
    report.print_table(rs, plain)
    text = plain.export_text()
    assert "bad.jpg: cannot decode image (boom)" in text
    assert re.search(r"\x1b\[31m[^\n]*bad\.jpg: cannot decode", ansi)  # in red
    assert "[red]k[/red]" in text  # markup printed literally
    assert "https://e.com/[bold]u" in text
    assert "\x1b[2J" not in ansi and "\\x1b[2J" in text  # escape sequence neutralised


def test_print_table_streams_per_query():
    console = Console(record=True, width=200)
    seen = []

    def gen():
        yield QueryResult("a.jpg", [Match(_item(1, key="first-key"), 1)], hash="00")
        seen.append(console.export_text(clear=False))
        yield QueryResult("b.jpg", [Match(_item(2, key="second-key"), 4)], hash="01")

    report.print_table(gen(), console)
    assert "first-key" in seen[0]
    assert "second-key" not in seen[0]
    assert "second-key" in console.export_text()


# --------------------------------------------------------------------------- summary

def test_summarise(results):
    s = report.summarise(results)
    assert s == {
        "photos": 4,
        "with_matches": 2,
        "matches": 4,
        "errors": 1,
        "by_dataset": {"laion-sample": 2, "cc-images": 2},
    }
    assert report.summarise([]) == {"photos": 0, "with_matches": 0, "matches": 0, "errors": 0, "by_dataset": {}}


# --------------------------------------------------------------------------- HTML

def _write_report(results, tmp_path, **kw):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    path = out / "report.html"
    report.write_html(results, path, **kw)
    return path, path.read_text(encoding="utf-8")


def _data_uris(text):
    return re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', text)


def test_html_local_thumbnails_are_embedded(tmp_path, photos):
    r = QueryResult(photos["q1"], [Match(_item(1, key="000123", path=photos["copy1"]), 2)], hash="00")
    path, text = _write_report([r], tmp_path, thumb_size=120)
    uris = _data_uris(text)
    assert len(uris) == 2  # the photo and the dataset copy
    for b64 in uris:
        im = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert im.format == "JPEG"
        assert max(im.size) == 120  # thumbnailed, aspect kept
    # the two thumbnails are of different images (query 640x480, copy 320x240 -> both 120x90)
    assert uris[0] != uris[1]
    # self-contained: no external resources besides (here: none) remote thumbnails
    assert not re.search(r'<(link|script)\b', text, re.I)
    assert "url(http" not in text


def test_html_full_report(tmp_path, results, photos):
    path, text = _write_report(results, tmp_path, title="Report for <Jane>",
                               index_info={"index": "idx", "threshold": 10, "hasher": "phash<64>"})
    # four embedded thumbnails: q1 + its local copy, q2 + its local (PNG) copy
    assert len(_data_uris(text)) == 4
    # untrusted title escaped
    assert "Sunset &lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in text
    assert "Report for &lt;Jane&gt;" in text
    assert "<script" not in text.lower()
    # remote fallback for a dataset copy whose local file is missing: never lazy (a printed report holds it)
    assert re.search(r'<img class="thumb remote" src="https://cdn\.example\.org/x/7\.jpg\?w=1&amp;h=2" '
                     r'referrerpolicy="no-referrer" alt=', text)
    assert "lazy" not in text
    # javascript: URL: no link, no image, a placeholder instead
    assert "no thumbnail" in text
    assert not re.search(r'(href|src)\s*=\s*"\s*javascript:', text, re.I)
    # http links are links, with rel
    assert '<a href="https://example.com/photo/123" rel="noopener noreferrer" target="_blank">photo page</a>' in text
    # the top: counts in words, per dataset, a list of the photos found linking to each
    assert "<b>2 of 4 photos</b> found (4 copies) in 2 datasets; 1 not found; 1 could not be read." in text
    assert re.search(r"<tr><td>cc-images</td><td class=\"n\">2</td><td class=\"n\">2</td></tr>", text)
    assert re.search(r'<a href="#photo-1">beach\.jpg</a> \(3\)', text) and 'id="photo-1"' in text
    # the evidence in words, and its explanation once
    assert '<span class="how">the same photo</span> · <span class="sure">sure</span>' in text
    assert text.count("How sure:") == 1
    assert "distance 2 · score 0.970" in text
    # photos not found and those that could not be read: listed openly (not folded away)
    assert re.search(r"<h2>Not found \(1\)</h2>.*<li>cat\.jpg</li>", text, re.S)
    assert re.search(r"Could not be read \(1\)</h2>.*broken\.jpg: not an image, or a format we cannot read", text,
                     re.S)
    assert "<details" not in text
    # no local path: files by name only (a report is sent to others)
    assert str(photos["root"]) not in text and "my photos" not in text
    assert "idx" in text and "phash&lt;64&gt;" in text and "UTC" in text
    assert "Jane Doe" in text and "CC BY-NC 2.0" in text
    # no external resources other than the one remote thumbnail
    srcs = re.findall(r'src="([^"]+)"', text)
    assert [s for s in srcs if not s.startswith("data:")] == ["https://cdn.example.org/x/7.jpg?w=1&amp;h=2"]
    # written atomically: only the report remains in the folder
    assert os.listdir(path.parent) == ["report.html"]


def test_html_shows_paths_only_when_asked(tmp_path, results, photos):
    _, text = _write_report(results, tmp_path, show_paths=True)
    assert html.escape(photos["q1"]) in text and f"local copy {html.escape(photos['copy1'])}" in text


def test_html_thumbnail_failures_do_not_break_report(tmp_path, photos):
    rs = [
        # query file is corrupt / gone, dataset copy is corrupt and has no usable URL
        QueryResult(photos["corrupt"], [Match(_item(1, key="c1", path=photos["corrupt"], url="ftp://x/y.jpg"), 1)],
                    hash="00"),
        QueryResult(str(tmp_path / "gone.jpg"), [Match(_item(2, key="c2", path=str(tmp_path)), 3)], hash="01"),
    ]
    _, text = _write_report(rs, tmp_path)
    assert _data_uris(text) == []
    assert text.count("no thumbnail") == 4
    with pytest.raises(MatcherError) as exc:
        load_image(photos["corrupt"])
    assert html.escape(exc.value.reason) in text  # the decoder's reason is shown
    assert "not a regular file" in text or "cannot read file" in text
    assert 'href="ftp:' not in text and "ftp://x/y.jpg" in text  # shown, not linked


def test_html_is_written_atomically(tmp_path, results):
    """A write that fails for real (the file-size limit of the process: EFBIG, as on a full disk) leaves the
    old report as it was and no temporary file."""
    import resource
    import signal

    path, _ = _write_report(results, tmp_path)
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 3, hard))
    try:
        with pytest.raises(OSError) as exc:
            report.write_html(results, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert exc.value.errno == errno.EFBIG
    assert path.read_bytes() == before  # old report untouched
    assert os.listdir(path.parent) == ["report.html"]  # temp file removed


def test_html_empty_results(tmp_path):
    _, text = _write_report([], tmp_path)
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "<b>0 of 0 photos</b> found" in text
