"""Dataset sources: manifests (CSV, TSV, JSONL, Parquet, gzip) and folders, on small real files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matcher.errors import ManifestError
from matcher.ingest.sources import FolderSource, ManifestSource, SourceItem
from matcher.ingest.open_source import open_source


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _items(src) -> list[SourceItem]:
    return list(src.items())


# --------------------------------------------------------------------------- formats

CSV_TEXT = (
    "id,url,path,owner,license,title,page_url\n"
    "a1,https://img.example/1.jpg,,alice,CC BY 2.0,First,https://page.example/1\n"
    "a2,https://img.example/2.jpg,,bob,CC0,Second,https://page.example/2\n"
)


def _check_two_rows(items: list[SourceItem], dataset: str) -> None:
    assert [i.key for i in items] == ["a1", "a2"]
    assert [i.url for i in items] == ["https://img.example/1.jpg", "https://img.example/2.jpg"]
    assert all(i.error is None for i in items)
    assert all(i.dataset == dataset for i in items)
    assert all(i.path is None for i in items)
    a1, a2 = items
    assert a1.fields == {
        "url": "https://img.example/1.jpg", "page_url": "https://page.example/1", "path": None,
        "owner": "alice", "license": "CC BY 2.0", "title": "First",
    }
    assert (a2.fields["owner"], a2.fields["license"], a2.fields["title"]) == ("bob", "CC0", "Second")
    assert a1.extra == {} and a2.extra == {}


def test_csv(tmp_path):
    src = ManifestSource(_write(tmp_path / "crawl.csv", CSV_TEXT))
    assert src.fmt == "csv"
    _check_two_rows(_items(src), "crawl")


def test_csv_with_bom_and_crlf(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + CSV_TEXT.replace("\n", "\r\n").encode())
    _check_two_rows(_items(ManifestSource(p)), "bom")


def test_tsv(tmp_path):
    text = CSV_TEXT.replace(",", "\t").replace("CC BY 2.0", "CC BY 2.0, with comma")
    src = ManifestSource(_write(tmp_path / "crawl.tsv", text))
    assert src.fmt == "tsv"
    items = _items(src)
    assert [i.key for i in items] == ["a1", "a2"]
    assert items[0].fields["license"] == "CC BY 2.0, with comma"  # commas are data in TSV
    assert items[1].fields["title"] == "Second"


def test_jsonl(tmp_path):
    rows = [
        {"id": "a1", "url": "https://img.example/1.jpg", "owner": "alice", "license": "CC BY 2.0", "title": "First",
         "page_url": "https://page.example/1"},
        {"id": "a2", "url": "https://img.example/2.jpg", "owner": "bob", "license": "CC0", "title": "Second",
         "page_url": "https://page.example/2"},
    ]
    p = _write(tmp_path / "crawl.jsonl", "".join(json.dumps(r) + "\n" for r in rows) + "\n\n")
    src = ManifestSource(p)
    assert src.fmt == "jsonl"
    _check_two_rows(_items(src), "crawl")


def test_parquet(tmp_path):
    table = pa.table({
        "id": ["a1", "a2"],
        "url": ["https://img.example/1.jpg", "https://img.example/2.jpg"],
        "owner": ["alice", "bob"],
        "license": ["CC BY 2.0", "CC0"],
        "title": ["First", "Second"],
        "page_url": ["https://page.example/1", "https://page.example/2"],
    })
    p = tmp_path / "crawl.parquet"
    pq.write_table(table, p)
    src = ManifestSource(p)
    assert src.fmt == "parquet"
    _check_two_rows(_items(src), "crawl")


def test_parquet_non_string_values(tmp_path):
    table = pa.table({
        "photo_id": pa.array([101, 102], pa.int64()),
        "image_url": ["https://img.example/1.jpg", None],
        "width": pa.array([640, 800], pa.int32()),
    })
    p = tmp_path / "nums.parquet"
    pq.write_table(table, p)
    items = _items(ManifestSource(p))
    assert [i.key for i in items] == ["101", "102"]
    assert items[0].url == "https://img.example/1.jpg" and items[0].error is None
    assert items[0].extra == {"width": 640}
    assert items[1].url is None and items[1].error and "no image URL or path" in items[1].error


def test_gzip_csv(tmp_path):
    p = tmp_path / "crawl.csv.gz"
    with gzip.open(p, "wt", encoding="utf-8", newline="") as f:
        f.write(CSV_TEXT)
    src = ManifestSource(p)
    assert src.fmt == "csv"
    _check_two_rows(_items(src), "crawl")


def test_gzip_jsonl(tmp_path):
    p = tmp_path / "crawl.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"id": "a1", "url": "https://img.example/1.jpg"}) + "\n")
    items = _items(ManifestSource(p))
    assert [(i.key, i.url, i.error) for i in items] == [("a1", "https://img.example/1.jpg", None)]


def test_gzip_upper_case_suffix(tmp_path):
    """BUG: _base_suffix lower-cases '.GZ' (so the format is csv) but _open_text compares
    ``path.suffix == ".gz"`` case-sensitively, so a .CSV.GZ file is read as raw text and
    UnicodeDecodeError escapes."""
    p = tmp_path / "CRAWL.CSV.GZ"
    with gzip.open(p, "wt", encoding="utf-8", newline="") as f:
        f.write(CSV_TEXT)
    items = _items(ManifestSource(p))
    assert [i.key for i in items] == ["a1", "a2"]


def test_sources_are_reiterable(tmp_path):
    src = ManifestSource(_write(tmp_path / "crawl.csv", CSV_TEXT))
    assert [i.key for i in src.items()] == [i.key for i in src.items()] == ["a1", "a2"]


def test_dataset_name_override(tmp_path):
    src = ManifestSource(_write(tmp_path / "crawl.csv", CSV_TEXT), dataset="LAION-mini")
    assert {i.dataset for i in src.items()} == {"LAION-mini"}


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="unknown manifest format"):
        ManifestSource(_write(tmp_path / "crawl.dat", CSV_TEXT))
    assert ManifestSource(_write(tmp_path / "crawl.txt", CSV_TEXT)).fmt == "sniff"  # .txt: tab or comma, sniffed
    with pytest.raises(ManifestError, match="no such manifest"):
        ManifestSource(tmp_path / "nope.csv")


def test_unreadable_parquet(tmp_path):
    p = _write(tmp_path / "fake.parquet", "this is not parquet\n")
    with pytest.raises(ManifestError, match="Parquet"):
        _items(ManifestSource(p))


# --------------------------------------------------------------------------- column names

@pytest.mark.parametrize(
    "header, field",
    [
        ("url", "url"),
        ("URL", "url"),
        ("image_url", "url"),
        ("Image URL", "url"),
        ("photo_url", "url"),
        ("Photo-URL", "url"),
        ("flickr_url", "url"),
        ("FLICKR_URL", "url"),
        ("src", "url"),
        ("path", "path"),
        ("File Path", "path"),
        ("filename", "path"),
    ],
)
def test_image_column_spellings(tmp_path, header, field):
    value = "https://img.example/x.jpg" if field == "url" else "images/x.jpg"
    p = _write(tmp_path / "m.csv", f"{header},other\n{value},1\n")
    [item] = _items(ManifestSource(p))
    assert item.error is None
    if field == "url":
        assert item.url == value and item.path is None
    else:
        assert item.url is None
        assert item.path == str((tmp_path / "images" / "x.jpg").resolve())
    assert item.extra == {"other": "1"}


@pytest.mark.parametrize(
    "headers, expect",
    [
        (("Photo ID", "Image_URL", "User", "Licence", "Caption"),
         {"key": "K", "owner": "O", "license": "L", "title": "T"}),
        (("key", "flickr_url", "nsid", "License", "Title"),
         {"key": "K", "owner": "O", "license": "L", "title": "T"}),
        (("ID", "photo_url", "owner", "license_name", "description"),
         {"key": "K", "owner": "O", "license": "L", "title": "T"}),
        (("uid", "URL", "USER_NSID", "rights", "name"),
         {"key": "K", "owner": "O", "license": "L", "title": "T"}),
    ],
)
def test_metadata_column_spellings(tmp_path, headers, expect):
    p = _write(tmp_path / "m.csv", ",".join(headers) + "\nK,https://img.example/u.jpg,O,L,T\n")
    [item] = _items(ManifestSource(p))
    assert item.error is None
    assert item.url == "https://img.example/u.jpg"
    assert item.key == expect["key"]
    assert item.fields["owner"] == expect["owner"]
    assert item.fields["license"] == expect["license"]
    assert item.fields["title"] == expect["title"]
    assert item.extra == {}


def test_first_alias_wins_other_goes_to_extra(tmp_path):
    # 'url' precedes 'flickr_url' among the url aliases; the loser is kept as metadata
    p = _write(tmp_path / "m.csv", "flickr_url,url\nhttps://flickr.example/a.jpg,https://img.example/a.jpg\n")
    [item] = _items(ManifestSource(p))
    assert item.url == "https://img.example/a.jpg"
    assert item.extra == {"flickr_url": "https://flickr.example/a.jpg"}


def test_column_override(tmp_path):
    p = _write(tmp_path / "m.csv", "Pic,url,Who\nhttps://img.example/p.jpg,https://other.example/p.jpg,me\n")
    [item] = _items(ManifestSource(p, columns={"url": "Pic", "owner": "Who"}))
    assert item.url == "https://img.example/p.jpg"
    assert item.fields["owner"] == "me"
    assert item.key == "https://img.example/p.jpg"
    assert item.extra == {"url": "https://other.example/p.jpg"}


def test_column_override_via_open_source(tmp_path):
    p = _write(tmp_path / "m.csv", "Pic,x\nhttps://img.example/p.jpg,1\n")
    [item] = _items(open_source(p, columns={"url": "Pic"}))
    assert item.url == "https://img.example/p.jpg" and item.error is None


def test_column_override_missing_column(tmp_path):
    p = _write(tmp_path / "m.csv", "url,title\nhttps://img.example/p.jpg,t\n")
    with pytest.raises(ManifestError) as e:
        _items(ManifestSource(p, columns={"url": "Pic"}))
    assert "Pic" in e.value.reason and "no such column" in e.value.reason


def test_column_override_missing_column_jsonl(tmp_path):
    p = _write(tmp_path / "m.jsonl", '{"url": "https://img.example/p.jpg"}\n')
    with pytest.raises(ManifestError, match="Pic"):
        _items(ManifestSource(p, columns={"url": "Pic"}))


def test_column_override_unknown_field(tmp_path):
    p = _write(tmp_path / "m.csv", "url\nhttps://img.example/p.jpg\n")
    with pytest.raises(ManifestError, match="unknown field"):
        ManifestSource(p, columns={"colour": "url"})


@pytest.mark.parametrize("name, text", [
    ("m.csv", "id,caption,owner\n1,a cat,bob\n"),
    ("m.tsv", "id\tcaption\n1\ta cat\n"),
    ("m.jsonl", '{"id": 1, "caption": "a cat"}\n'),
    ("empty.csv", ""),
])
def test_no_url_or_path_column(tmp_path, name, text):
    p = _write(tmp_path / name, text)
    with pytest.raises(ManifestError) as e:
        _items(ManifestSource(p))
    msg = e.value.reason
    assert "no image URL or path column" in msg
    assert "--column url=" in msg  # tells the user how to fix it
    if text:
        assert "caption" in msg  # and which columns it saw


# --------------------------------------------------------------------------- bad rows

def test_rows_without_url_or_path_are_reported(tmp_path):
    p = _write(
        tmp_path / "m.csv",
        "id,url,path,title\n"
        "1,https://img.example/1.jpg,,ok\n"
        "2,,,no image\n"
        "3,   ,  ,blank image\n"
        ",,,\n"  # an entirely empty row is skipped, not reported
        "4,,pics/4.jpg,local\n",
    )
    items = _items(ManifestSource(p))
    assert [i.key for i in items] == ["1", "2", "3", "4"]
    assert [i.error is None for i in items] == [True, False, False, True]
    assert "no image URL or path" in items[1].error
    assert items[1].fields["title"] == "no image"  # the rest of the row is kept for the report
    assert items[3].path == str((tmp_path / "pics" / "4.jpg").resolve())


def test_invalid_json_lines_do_not_stop_later_rows(tmp_path):
    p = _write(
        tmp_path / "m.jsonl",
        '{"id": "a", "url": "https://img.example/a.jpg"}\n'
        "{not json\n"
        "[1, 2]\n"
        '"just a string"\n'
        '{"id": "b", "url": "https://img.example/b.jpg"}\n'
        '{"id": "c", "url": null}\n'
        '{"id": "d", "url": "https://img.example/d.jpg"}\n',
    )
    items = _items(ManifestSource(p))
    assert len(items) == 7
    ok = [i.key for i in items if i.error is None]
    assert ok == ["a", "b", "d"]
    errs = [i.error for i in items if i.error]
    assert len(errs) == 4
    assert "line 2" in errs[0] and "invalid JSON" in errs[0]
    assert "line 3" in errs[1] and "list" in errs[1]
    assert "line 4" in errs[2] and "str" in errs[2]
    assert "no image URL or path" in errs[3]
    # the bad lines are distinguishable (unique keys) so each is recorded
    assert len({i.key for i in items}) == 7


def test_invalid_first_json_line_then_valid(tmp_path):
    p = _write(tmp_path / "m.jsonl", "garbage\n" + '{"image_url": "https://img.example/a.jpg", "k": 1}\n')
    items = _items(ManifestSource(p))
    assert items[0].error and "line 1" in items[0].error
    assert items[1].error is None and items[1].url == "https://img.example/a.jpg"
    assert items[1].extra == {"k": 1}


def test_invalid_utf8_in_one_json_line_does_not_stop_later_rows(tmp_path):
    """BUG: a line holding a non-UTF-8 byte raises UnicodeDecodeError out of items() (the
    TextIOWrapper decodes in chunks), so one bad byte aborts the whole manifest -- `matcher add`
    dies with a traceback -- instead of a per-row error like invalid JSON gets."""
    p = tmp_path / "m.jsonl"
    p.write_bytes(
        b'{"id": "a", "url": "https://img.example/a.jpg"}\n'
        b'{"id": "b", "url": "https://img.example/\xff.jpg"}\n'
        b'{"id": "c", "url": "https://img.example/c.jpg"}\n'
    )
    items = _items(ManifestSource(p))
    good = [i.key for i in items if i.error is None]
    assert "a" in good and "c" in good
    assert any(i.error for i in items)


def test_non_utf8_csv_is_a_manifest_error_or_per_row(tmp_path):
    """BUG: a Latin-1 CSV (a typical spreadsheet export) raises a raw UnicodeDecodeError from
    items(); it should be a ManifestError (or per-row errors), which the CLI reports cleanly."""
    p = tmp_path / "latin.csv"
    p.write_bytes("url,title\nhttps://img.example/1.jpg,caf\xe9\nhttps://img.example/2.jpg,ok\n".encode("latin-1"))
    try:
        items = _items(ManifestSource(p))
    except ManifestError:
        return
    assert "https://img.example/2.jpg" in [i.url for i in items]


def test_csv_oversized_field_is_a_row_error(tmp_path):
    p = _write(tmp_path / "m.csv", "url,title\nhttps://img.example/1.jpg," + "x" * 200_000 + "\nhttps://img.example/2.jpg,t\n")
    items = _items(ManifestSource(p))
    assert len(items) == 2
    assert items[0].error and "unreadable CSV" in items[0].error
    assert items[1].error is None and items[1].url == "https://img.example/2.jpg"


# --------------------------------------------------------------------------- extra, paths, keys

def test_unrecognised_columns_land_in_extra(tmp_path):
    p = _write(
        tmp_path / "m.csv",
        "url,aesthetic_score,NSFW,similarity,empty_col\nhttps://img.example/1.jpg,6.5,UNLIKELY,0.31,\n",
    )
    [item] = _items(ManifestSource(p))
    assert item.extra == {"aesthetic_score": "6.5", "NSFW": "UNLIKELY", "similarity": "0.31"}
    assert "url" not in item.extra


def test_unrecognised_keys_land_in_extra_jsonl(tmp_path):
    p = _write(tmp_path / "m.jsonl", json.dumps({"url": "https://img.example/1.jpg", "tags": ["a", "b"], "score": 3}) + "\n")
    [item] = _items(ManifestSource(p))
    assert item.extra == {"tags": ["a", "b"], "score": 3}


def test_relative_paths_resolve_against_manifest_folder(tmp_path, monkeypatch):
    sub = tmp_path / "lists"
    sub.mkdir()
    absolute = tmp_path / "elsewhere" / "z.png"
    p = _write(sub / "m.csv", f"path\nimgs/a.jpg\n../b.jpg\n{absolute}\n")
    monkeypatch.chdir(absolute.anchor)  # the current directory must not matter
    refused = _items(ManifestSource(p))  # outside the manifest's folder: refused unless allowed
    assert [i.error_kind for i in refused] == [None, "refused", "refused"]
    assert "outside the manifest's folder" in refused[1].error and refused[1].path is None
    items = _items(ManifestSource(p, allow_paths=[tmp_path]))
    assert [i.path for i in items] == [
        str((sub / "imgs" / "a.jpg").resolve()),
        str((tmp_path / "b.jpg").resolve()),
        str(absolute),
    ]
    assert all(i.fields["path"] == i.path for i in items)
    assert all(i.url is None and i.error is None for i in items)


def test_relative_paths_with_relative_manifest_spec(tmp_path, monkeypatch):
    sub = tmp_path / "data"
    sub.mkdir()
    _write(sub / "m.csv", "path\nx.jpg\n")
    monkeypatch.chdir(tmp_path)
    [item] = _items(open_source("data/m.csv"))
    assert item.path == str((sub / "x.jpg").resolve())


def test_key_falls_back_to_url_then_path(tmp_path):
    p = _write(
        tmp_path / "m.csv",
        "id,url,path\n"
        "given,https://img.example/1.jpg,a.jpg\n"
        ",https://img.example/2.jpg,b.jpg\n"
        ",,c/d.jpg\n",
    )
    items = _items(ManifestSource(p))
    assert items[0].key == "given"
    assert items[1].key == "https://img.example/2.jpg"
    assert items[2].key == "c/d.jpg"  # the path as written: stable wherever the manifest lives
    assert items[2].path == str((tmp_path / "c" / "d.jpg").resolve())


def test_key_fallback_jsonl_and_parquet(tmp_path):
    pj = _write(tmp_path / "m.jsonl", '{"url": "https://img.example/1.jpg"}\n{"path": "p.jpg"}\n')
    items = _items(ManifestSource(pj))
    assert items[0].key == "https://img.example/1.jpg"  # (JSONL maps columns from the first object)
    pp = tmp_path / "m.parquet"
    pq.write_table(pa.table({"url": ["https://img.example/1.jpg", None], "path": [None, "p.jpg"]}), pp)
    items = _items(ManifestSource(pp))
    assert [i.key for i in items] == ["https://img.example/1.jpg", "p.jpg"]


# --------------------------------------------------------------------------- folders

def test_folder_source_keys_are_relative_posix(tmp_path):
    root = tmp_path / "shots"
    (root / "2023" / "summer").mkdir(parents=True)
    for rel in ("b.jpg", "a.PNG", "2023/c.webp", "2023/summer/d.jpeg", "notes.txt", ".hidden.jpg"):
        (root / rel).write_bytes(b"x")
    src = open_source(root)
    assert isinstance(src, FolderSource)
    assert src.dataset == "shots"
    items = _items(src)
    assert sorted(i.key for i in items) == ["2023/c.webp", "2023/summer/d.jpeg", "a.PNG", "b.jpg"]
    for i in items:
        assert "\\" not in i.key and not i.key.startswith("/")
        assert i.path == str(root.resolve() / i.key)
        assert i.fields["path"] == i.path
        assert i.url is None and i.error is None and i.dataset == "shots"
    assert {i.dataset for i in FolderSource(root, dataset="mine").items()} == {"mine"}


def test_folder_source_not_a_folder(tmp_path):
    with pytest.raises(ManifestError):
        FolderSource(tmp_path / "missing")


def test_open_source_dispatch_and_missing(tmp_path):
    assert isinstance(open_source(_write(tmp_path / "m.csv", CSV_TEXT)), ManifestSource)
    assert isinstance(open_source(tmp_path), FolderSource)
    with pytest.raises(ManifestError) as e:
        open_source(tmp_path / "does-not-exist.csv")
    assert "does-not-exist.csv" in e.value.reason


def test_sample_manifest(sample):
    items = _items(open_source(sample / "manifest.csv"))
    assert len(items) == 32  # 27 plain re-hosts and distractors + 5 edited copies
    assert all(i.error is None for i in items)
    assert all(i.key.startswith("ds-") for i in items)
    first = items[0]
    assert first.key == "ds-0001"
    assert first.path == str((sample / "dataset" / "flickr_2005397842_dc4d3a.jpg").resolve())
    assert Path(first.path).is_file()
    assert first.url.startswith("https://")
    assert first.fields["owner"] == "16577737@N01" and first.fields["title"] == "Medusa dish"
