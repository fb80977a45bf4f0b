"""Removal-request letters (matcher.provenance.letters and ``matcher search --letters``), on the bundled sample.

One real index holds the sample manifest four times, under the datasets ``sample``, ``../x``, ``a/b``
and ``.hidden``; every test reads it (or a search of it) and never changes it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from datetime import date
from pathlib import Path

import pytest

from conftest import run_matcher
from matcher.provenance.letters import METHOD, TEMPLATES, Letter, build_letters, write_letters
from matcher.results import Item, Match

DATASETS = ("sample", "../x", "a/b", ".hidden")
NO_MATCH_PHOTOS = ("IMG_0007.jpg", "IMG_0008.jpg", "IMG_0010.jpg")  # sample/expected.csv: no copies
TO_LINE = re.compile(r'^To: the maintainers of the "(.*)" dataset$', re.M)


def _no_traceback(p) -> None:
    assert "Traceback" not in p.stderr, p.stderr
    assert "Traceback" not in p.stdout


def _tree(path: Path) -> dict[str, bytes | None]:
    """Every file (with its content) and folder under ``path``."""
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def _dataset_of(text: str) -> str:
    (name,) = TO_LINE.findall(text)
    return name


def _url_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if re.match(r"^[a-z]+://", ln)]


def _url_block(text: str) -> list[str]:
    """The lines of the image-URL block: after its heading, up to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(r"The (image's URL|[\d,]+ image URLs) in .*:$", ln))
    assert lines[start + 1] == ""
    block = []
    for ln in lines[start + 2:]:
        if not ln:
            break
        block.append(ln)
    return block


def _matches_from_json(results: list[dict]) -> list[Match]:
    """The CLI's --json matches as the library's records (all the fields Item has)."""
    out = []
    for r in results:
        for m in r["matches"]:
            item = Item(id=m["id"], dataset=m["dataset"], key=m["key"], url=m["url"], page_url=m["page_url"],
                        path=m["path"], owner=m["owner"], license=m["license"], title=m["title"],
                        width=m["width"], height=m["height"], hash=m["hash"], extra=m.get("extra") or {})
            out.append(Match(item=item, distance=m["distance"], evidence=m.get("evidence") or {}))
    return out


@pytest.fixture(scope="module")
def index(tmp_path_factory, sample) -> Path:
    d = tmp_path_factory.mktemp("letters") / "index"
    for ds in DATASETS:
        run_matcher("add", "--index", str(d), "--dataset", ds, str(sample / "manifest.csv"), check=True)
    return d


@pytest.fixture(scope="module")
def found(index, sample) -> list[dict]:
    """``matcher search --json`` of sample/my-photos (without letters): the reference."""
    p = run_matcher("search", "--index", str(index), "--json", str(sample / "my-photos"))
    assert p.returncode == 0, p.stderr
    return [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def expected(found) -> dict[str, dict]:
    """Per dataset: its matched image URLs, page URLs, and the smallest distance per key."""
    out: dict[str, dict] = {}
    for r in found:
        for m in r["matches"]:
            d = out.setdefault(m["dataset"], {"urls": set(), "pages": set(), "distance": {}})
            d["urls"].add(m["url"])
            if m["page_url"]:
                d["pages"].add(m["page_url"])
            d["distance"][m["key"]] = min(m["distance"], d["distance"].get(m["key"], 99))
    assert set(out) == set(DATASETS)  # the sample's matches are found in every copy of the dataset
    return out


@pytest.fixture(scope="module")
def letters_run(index, sample, tmp_path_factory):
    """``matcher search --json --letters DIR`` without a requester."""
    out = tmp_path_factory.mktemp("run") / "letters"
    p = run_matcher("search", "--index", str(index), "--json", "--letters", str(out), str(sample / "my-photos"))
    return p, out


@pytest.fixture(scope="module")
def letters(letters_run) -> dict[tuple[str, str], str]:
    """(dataset, template) -> letter text, as written by the CLI."""
    p, out = letters_run
    assert p.returncode == 0, p.stderr
    texts = {}
    for f in sorted(out.iterdir()):
        m = re.fullmatch(r"(.+)-(list|gdpr|bipa)\.txt", f.name)
        assert m, f.name
        text = f.read_text(encoding="utf-8")
        key = (_dataset_of(text), m.group(2))
        assert key not in texts
        texts[key] = text
    return texts


# --------------------------------------------------------------------------- the CLI

def test_one_letter_per_dataset_per_template(letters_run, letters):
    p, out = letters_run
    _no_traceback(p)
    assert set(letters) == {(ds, t) for ds in DATASETS for t in TEMPLATES}
    names = sorted(f.name for f in out.iterdir())
    assert len(names) == len(DATASETS) * len(TEMPLATES)  # no temporary files left behind
    for name in names:  # hostile dataset names give plain, visible names inside DIR
        assert not name.startswith((".", "-")) and "/" not in name and "\\" not in name and ".." not in name
        assert (out / name).resolve().parent == out.resolve()
        assert (out / name).is_file() and not (out / name).is_symlink()
    assert "sample-list.txt" in names and "sample-gdpr.txt" in names and "sample-bipa.txt" in names
    assert not any(p.name != "letters" for p in out.parent.iterdir())  # nothing written beside DIR
    err = " ".join(p.stderr.split())
    assert f"12 removal-request letters (list, gdpr, bipa) for 4 datasets written to {out}" in err
    for name in names:
        assert str(out / name) in p.stderr


def test_letters_keep_the_json_stream_and_exit_code(letters_run, found):
    p, _ = letters_run
    assert p.returncode == 0
    assert [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()] == found  # stdout untouched


def test_list_letter_lists_every_matched_url_alone_on_its_line(letters, expected):
    for ds in DATASETS:
        text = letters[(ds, "list")]
        urls, pages = expected[ds]["urls"], expected[ds]["pages"]
        assert len(urls) == 12  # the sample's 12 copies (README)
        block = _url_block(text)
        assert block == sorted(urls)  # exactly the matched URLs, nothing else on those lines, stable order
        lines = text.splitlines()
        for url in urls | pages:
            assert lines.count(url) == 1, url  # alone on its line, once
            assert text.count(url) == 1, url  # and nowhere else in the letter
        assert sorted(_url_lines(text)) == sorted(urls | pages)
        assert f'"{ds}" dataset' in text
        assert "remove" in text and "every copy" in text and "models" in text


def test_every_template_lists_the_same_urls(letters, expected):
    for ds in DATASETS:
        for t in TEMPLATES:
            text = letters[(ds, t)]
            assert _url_block(text) == sorted(expected[ds]["urls"]), (ds, t)
            assert sorted(_url_lines(text)) == sorted(expected[ds]["urls"] | expected[ds]["pages"])


def test_letters_end_with_count_method_and_evidence(letters, expected):
    for (ds, t), text in letters.items():
        tail = text.rsplit("\n--\n", 1)[1]
        assert tail.startswith(f'This request covers 12 images of the "{ds}" dataset')
        assert METHOD in " ".join(tail.split())
        for key, d in expected[ds]["distance"].items():
            assert re.search(rf"^- image \d+ \(key {re.escape(key)}\): hash distance {d}/64, verification score "
                             rf"[01]\.\d{{3}}$", tail, re.M), (ds, t, key)
        assert len(re.findall(r"^- image \d+ ", tail, re.M)) == 12


def test_evidence_numbers_follow_the_url_list(letters, found):
    text = letters[("sample", "list")]
    block = _url_block(text)
    url_of = {m["key"]: m["url"] for r in found for m in r["matches"] if m["dataset"] == "sample"}
    for n, key in re.findall(r"^- image (\d+) \(key (\S+)\)", text, re.M):
        assert block[int(n) - 1] == url_of[key]


def test_gdpr_letter_cites_the_articles(letters):
    for ds in DATASETS:
        text = letters[(ds, "gdpr")]
        flat = " ".join(text.split())
        assert "Article 17" in text and "right to erasure" in flat
        for cite in ("Article 17(1)(b)", "Article 17(1)(c)", "Article 17(1)(d)", "Article 21(1)", "Article 12(3)",
                     "Article 15", "Article 17(2)", "(EU) 2016/679"):
            assert cite in text, cite
        assert "within one month" in flat
        assert "not legal advice" in flat.lower()


def test_bipa_letter_cites_the_act(letters):
    for ds in DATASETS:
        text = letters[(ds, "bipa")]
        flat = " ".join(text.split())
        assert "740 ILCS 14" in text
        for cite in ("740 ILCS 14/15(a)", "740 ILCS 14/15(b)", "740 ILCS 14/15(c)", "740 ILCS 14/10"):
            assert cite in text, cite
        assert "Biometric Information Privacy Act" in flat
        assert "face geometry" in flat and "destroy" in flat
        assert "not legal advice" in flat.lower()


def test_placeholders_without_requester(letters):
    for text in letters.values():
        assert "[YOUR NAME]" in text and "[YOUR EMAIL ADDRESS]" in text and "[YOUR POSTAL ADDRESS]" in text


def test_requester_name_and_email(index, sample, tmp_path):
    out = tmp_path / "L"
    p = run_matcher("search", "--index", str(index), "--letters", str(out), "--requester-name", "Ada Example",
                    "--requester-email", "ada@example.org", str(sample / "my-photos"))
    assert p.returncode == 0, p.stderr
    files = sorted(out.iterdir())
    assert len(files) == 12
    for f in files:
        text = f.read_text()
        assert "Ada Example" in text and "ada@example.org" in text
        assert "[YOUR NAME]" not in text and "[YOUR EMAIL ADDRESS]" not in text
        assert "[YOUR POSTAL ADDRESS]" in text  # not given: still a placeholder
        assert text.rstrip().splitlines().count("Ada Example") == 2  # the contact block and the signature


def test_requester_options_need_letters(index, sample):
    p = run_matcher("search", "--index", str(index), "--requester-name", "Ada", str(sample / "my-photos"))
    assert p.returncode == 2
    assert "--letters" in p.stderr
    _no_traceback(p)


def test_rerun_replaces_its_own_letters_only(index, sample, tmp_path):
    out = tmp_path / "L"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "sample-list.txt").write_text("[TEMPLATE, NOT LEGAL ADVICE: an old letter matcher wrote]")
    (out / "sample-gdpr.txt").write_text("my own draft")
    p = run_matcher("search", "--index", str(index), "--letters", str(out), str(sample / "my-photos"))
    assert p.returncode == 2 and "--force" in p.stderr  # a draft matcher did not write is kept
    assert (out / "sample-gdpr.txt").read_text() == "my own draft"
    assert len(list(out.iterdir())) == 3  # nothing written: every letter is checked before any is
    p = run_matcher("search", "--index", str(index), "--force", "--letters", str(out), str(sample / "my-photos"))
    assert p.returncode == 0, p.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "sample-list.txt").read_text().startswith("[TEMPLATE, NOT LEGAL ADVICE")
    assert len(list(out.iterdir())) == 13


def test_no_matches_no_letters(index, sample, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in NO_MATCH_PHOTOS:
        shutil.copy(sample / "my-photos" / name, photos / name)
    out = tmp_path / "L"
    p = run_matcher("search", "--index", str(index), "--letters", str(out), str(photos))
    assert p.returncode == 1, p.stderr  # as without --letters: no match
    assert "no matches: no letters written" in p.stderr
    assert not out.exists()
    _no_traceback(p)


def test_letters_dir_is_a_file(index, sample, tmp_path):
    target = tmp_path / "letters"
    target.write_text("not a folder")
    html = tmp_path / "report.html"
    before = _tree(tmp_path)
    p = run_matcher("search", "--index", str(index), "--letters", str(target), "--html", str(html),
                    str(sample / "my-photos"))
    assert p.returncode == 2
    assert "cannot write letters to" in p.stderr and "not a folder" in p.stderr
    _no_traceback(p)
    assert _tree(tmp_path) == before  # nothing written, the file untouched
    assert p.stdout == ""  # refused before the search


def test_letters_dir_under_a_file(index, sample, tmp_path):
    (tmp_path / "f").write_text("x")
    before = _tree(tmp_path)
    p = run_matcher("search", "--index", str(index), "--letters", str(tmp_path / "f" / "sub" / "L"),
                    str(sample / "my-photos"))
    assert p.returncode == 2
    assert "cannot write letters to" in p.stderr and "is not a folder" in p.stderr
    assert _tree(tmp_path) == before


# --------------------------------------------------------------------------- the library

@pytest.fixture(scope="module")
def matches(found) -> list[Match]:
    return _matches_from_json(found)


def test_build_letters_per_dataset_sorted_and_deduplicated(matches):
    assert len(matches) == 48  # 12 copies x 4 datasets
    doubled = matches + matches + [m.item for m in matches]  # the same items again, as Matches and as Items
    for t in TEMPLATES:
        once = build_letters(matches, t, today=date(2025, 1, 2))
        assert [x.dataset for x in once] == sorted(DATASETS)
        assert all(isinstance(x, Letter) and x.template == t for x in once)
        assert [x.text for x in build_letters(doubled, t, today=date(2025, 1, 2))] == [x.text for x in once]
        shuffled = list(doubled)
        random.Random(1).shuffle(shuffled)
        assert [x.text for x in build_letters(shuffled, t, today="2025-01-02")] == [x.text for x in once]
        assert all("2025-01-02" in x.text for x in once)


def test_build_letters_keeps_the_smallest_distance(matches):
    m = next(m for m in matches if m.item.dataset == "sample" and m.item.key == "ds-0029")
    worse = Match(item=m.item, distance=m.distance + 5, evidence={"score": 0.96})
    for order in ([m, worse], [worse, m]):
        (letter,) = build_letters(order)
        assert f"(key ds-0029): hash distance {m.distance}/64" in letter.text
        assert f"hash distance {m.distance + 5}/64" not in letter.text


def test_build_letters_from_items(matches):
    items = [m.item for m in matches if m.item.dataset == "sample"]
    (letter,) = build_letters(items, "list")
    assert _url_block(letter.text) == sorted({i.url for i in items})
    assert "This request covers 12 images" in letter.text and METHOD in " ".join(letter.text.split())
    assert "hash distance" not in letter.text  # no evidence for bare items


def test_items_without_url_listed_by_key(matches):
    m = matches[0]
    bare = Item(id=1000, dataset="my-scrape", key="folder/photo 1.jpg", path="/data/folder/photo 1.jpg")
    with_url = Item(id=1001, dataset="my-scrape", key="k2", url=m.item.url)
    (letter,) = build_letters([Match(bare, 3, {"score": 0.99}), with_url])
    text = letter.text
    assert "no URL" in text
    assert "folder/photo 1.jpg" in text.splitlines()
    assert "/data/folder" not in text  # the indexer's local path is not the maintainer's business
    assert "- key folder/photo 1.jpg: hash distance 3/64" in text
    assert _url_block(text) == [m.item.url]
    assert "covers 2 images" in text


def test_urls_that_would_break_their_line(matches):
    item = Item(id=1, dataset="d", key="k", url="https://example.org/a b\nc.jpg", page_url=" https://example.org/p ")
    (letter,) = build_letters([item])
    assert _url_block(letter.text) == ["https://example.org/a%20b%0Ac.jpg"]
    assert "https://example.org/p" in letter.text.splitlines()


def test_requester_fields(matches):
    sample_only = [m for m in matches if m.item.dataset == "sample"]
    full = {"name": "Ada Example", "email": "ada@example.org", "address": "1 Main St\nSpringfield, IL 62701",
            "country": "United States", "flickr_user": "ada_pics"}
    (letter,) = build_letters(sample_only, "bipa", full)
    lines = letter.text.splitlines()
    for line in ("Ada Example", "ada@example.org", "1 Main St", "Springfield, IL 62701", "United States",
                 "Flickr account: ada_pics"):
        assert line in lines
    assert not re.search(r"\[YOUR ", letter.text)
    (letter,) = build_letters(sample_only, "gdpr", {"name": "  ", "email": None})
    assert "[YOUR NAME]" in letter.text and "[YOUR EMAIL ADDRESS]" in letter.text and "[YOUR FLICKR USERNAME" in letter.text


@pytest.mark.parametrize("requester", [{"phone": "123"}, {"name": "Ada", "Name": "Ada"}, {"flickr": "x"}])
def test_unknown_requester_key(matches, requester):
    with pytest.raises(ValueError, match="unknown requester field"):
        build_letters(matches, "list", requester)


def test_bad_requester_value_and_template(matches):
    with pytest.raises(ValueError, match="must be a string"):
        build_letters(matches, "list", {"name": 42})
    with pytest.raises(ValueError, match="unknown letter template"):
        build_letters(matches, "dmca")
    with pytest.raises(TypeError):
        build_letters(["https://example.org/a.jpg"])


def test_no_results_no_letters_from_the_library():
    assert build_letters([]) == []
    assert write_letters([], "/nonexistent/never/created") == []


HOSTILE = ["../x", "a/b", ".hidden", "..", ".", "/", "", "a\\b", "\x00evil", "-rf", "CON", "Sample", "sample",
           "x" * 300, "données", "名前", "a\nb", "con.txt", "../../etc/passwd"]


def test_hostile_dataset_names_give_safe_distinct_filenames(matches, tmp_path):
    m = matches[0]
    items = [Item(id=i, dataset=ds, key=m.item.key, url=m.item.url) for i, ds in enumerate(HOSTILE)]
    letters = build_letters(items, "gdpr")
    assert sorted(x.dataset for x in letters) == sorted(HOSTILE)
    names = [x.filename for x in letters]
    assert len({n.lower() for n in names}) == len(HOSTILE)  # distinct even on case-insensitive file systems
    for n in names:
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*-gdpr\.txt", n), n
        assert len(n) <= 100
    out = tmp_path / "out"
    paths = write_letters(letters, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert all(p.parent == out for p in paths)
    assert list(tmp_path.iterdir()) == [out]
    assert build_letters(items, "gdpr")[0].filename == letters[0].filename  # stable across runs
    for x in letters:  # the name reaches the letter without its control characters
        assert "\x00" not in x.text
        assert len(TO_LINE.findall(x.text)) == 1


def test_write_letters_refuses_unsafe_names(tmp_path):
    for bad in ("../a.txt", "a/b.txt", ".hidden.txt", "", "..", "-x.txt"):
        with pytest.raises(ValueError):
            write_letters([Letter("d", "list", bad, "text")], tmp_path / "out")
    with pytest.raises(ValueError, match="two letters"):
        write_letters([Letter("d", "list", "a.txt", "1"), Letter("e", "list", "A.txt", "2")], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_write_letters_atomic_and_all_or_nothing(matches, tmp_path):
    letters = [x for t in TEMPLATES for x in build_letters(matches, t)]
    out = tmp_path / "deep" / "L"
    paths = write_letters(letters, out)
    assert [p.read_text(encoding="utf-8") for p in paths] == [x.text for x in letters]
    mask = os.umask(0o022)
    os.umask(mask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~mask for p in paths)  # as open() makes it, not mkstemp's 0600
    # a letter's name taken by a folder: nothing is written, nothing is left behind
    other = tmp_path / "other"
    other.mkdir()
    (other / letters[-1].filename).mkdir()
    (other / letters[0].filename).write_text("old")
    before = _tree(other)
    with pytest.raises(IsADirectoryError):
        write_letters(letters, other)
    assert _tree(other) == before


def test_write_letters_into_a_file_fails_cleanly(matches, tmp_path):
    f = tmp_path / "file"
    f.write_text("keep")
    letters = build_letters(matches)
    with pytest.raises(OSError):
        write_letters(letters, f)
    with pytest.raises(OSError):
        write_letters(letters, f / "sub")
    assert f.read_text() == "keep" and list(tmp_path.iterdir()) == [f]
