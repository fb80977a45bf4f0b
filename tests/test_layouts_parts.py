"""Datasets in many files as published: img2dataset's output folder, Spark/LAION part files (a folder, a
glob, several files), YFCC100M with its side files (--only-ids, --join), and what a layout that is not
understood is answered with. Written here in their released layouts, added by the real CLI, every field
checked in the real catalog, looked up by NSID / photo id / URL."""

from __future__ import annotations

import bz2
import gzip
import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import LoopbackServer, check_entry_kinds, run_matcher
from layoutkit import ImageHandler, add, flickr_rows, info, info_text, items, jpeg, local_copies, lookup, search_keys
from matcher.ingest.formats.sidefiles import IdSet
from matcher.ingest.presets import detect_preset, suggest_formats
from matcher.ingest.sources import dataset_name

def _said(p) -> str:
    return " ".join(p.stderr.split())  # unwrapped


IMG2DATASET_COLUMNS = ["key", "url", "caption", "status", "error_message", "width", "height", "original_width",
                       "original_height", "exif", "sha256"]


@pytest.fixture(scope="module")
def served(sample):
    rows = flickr_rows(sample)
    routes = {"/i/desk.jpg": (200, jpeg(rows["ds-0014"]["path"])), "/i/bridge.jpg": (200, jpeg(rows["ds-0007"]["path"])),
              "/i/oak.jpg": (200, jpeg(rows["ds-0002"]["path"])), "/i/trails.jpg": (200, jpeg(rows["ds-0003"]["path"]))}
    with LoopbackServer(ImageHandler, routes).running() as srv:
        yield srv, rows


# --------------------------------------------------------------------------- img2dataset


def _img2dataset_output(root: Path, srv, rows) -> Path:
    """img2dataset --output_format files: NNNNN.parquet beside NNNNN/ of KEY.jpg, KEY.json, KEY.txt."""
    out = root / "cc-subset"
    shards = {
        "00000": [("000000000", srv.url("/gone/desk.jpg"), "a desk", "success", None, rows["ds-0014"]["path"]),
                  ("000000001", "http://dead.example/x.jpg", "gone", "failed_to_download", "HTTP Error 404", None)],
        "00001": [("000010000", rows["ds-0007"]["url"], "a bridge", "success", None, rows["ds-0007"]["path"]),
                  # success, but its file is not in the folder (deleted since): downloaded
                  ("000010001", srv.url("/i/oak.jpg"), "an oak", "success", None, None)],
    }
    for shard, recs in shards.items():
        (out / shard).mkdir(parents=True)
        table = {c: [] for c in IMG2DATASET_COLUMNS}
        for key, url, caption, status, error, img in recs:
            meta = {"key": key, "url": url, "caption": caption, "status": status, "error_message": error,
                    "width": 256 if img else None, "height": 192 if img else None,
                    "original_width": 1024 if img else None, "original_height": 768 if img else None,
                    "exif": "{}" if img else None, "sha256": "ab" * 32 if img else None}
            for c in IMG2DATASET_COLUMNS:
                table[c].append(meta[c])
            if img:
                (out / shard / f"{key}.jpg").write_bytes(jpeg(img, 256))
                (out / shard / f"{key}.json").write_text(json.dumps(meta))
                (out / shard / f"{key}.txt").write_text(caption)
        pq.write_table(pa.table(table), out / f"{shard}.parquet")
        (out / f"{shard}_stats.json").write_text(json.dumps({"count": len(recs), "successes": 1}))
    return out


def test_img2dataset_output_folder(served, tmp_path, sample):
    srv, rows = served
    out = _img2dataset_output(tmp_path, srv, rows)
    assert detect_preset(out) == detect_preset(out / "00000.parquet") == "img2dataset"
    index = tmp_path / "index"
    gone_hits = srv.hits["/gone/desk.jpg"]
    p = add(index, "--format", "auto", str(out))
    assert "read as img2dataset (dataset cc-subset)" in " ".join(p.stderr.split())
    got = items(index)
    assert set(got) == {"000000000", "000000001", "000010000", "000010001"}
    desk = got["000000000"]
    assert desk["dataset"] == "cc-subset" and desk["status"] == "ok"
    assert desk["path"] == str(out / "00000" / "000000000.jpg") and desk["url"] == srv.url("/gone/desk.jpg")
    assert srv.hits["/gone/desk.jpg"] == gone_hits  # the local file was hashed, the URL never fetched
    assert desk["title"] == "a desk"
    assert desk["extra"] == {"row": 0, "width": 256, "height": 192, "original_width": 1024, "original_height": 768,
                             "sha256": "ab" * 32}
    dead = got["000000001"]
    assert (dead["status"], dead["error_kind"]) == ("failed", "upstream")
    assert dead["error"] == "failed upstream (img2dataset: HTTP Error 404)"
    assert got["000010001"]["status"] == "ok" and got["000010001"]["path"] is None  # downloaded
    d = info(index)["cc-subset"]
    assert d["read"] == {"formats": ["img2dataset"], "rows": 4, "items": 4, "faces": 0, "skipped": {}}
    assert d["failures"] == {"upstream": 1}
    assert lookup(index, "--url", srv.url("/i/oak.jpg")) == [("cc-subset", "000010001")]
    assert lookup(index, "--photo-id", "2368127776") == [("cc-subset", "000010000")]
    assert ("cc-subset", "000000000") in search_keys(index, sample / "my-photos" / "IMG_0001.jpg")
    check_entry_kinds(index)


# --------------------------------------------------------------------------- multi-part Parquet


def _laion_parts(folder: Path, srv, rows) -> list[Path]:
    """A LAION-5B-style release written by Spark: part-NNNNN-<uuid>-c000.snappy.parquet, _SUCCESS, .crc files."""
    folder.mkdir(parents=True)
    run = uuid.UUID(int=0x5114FD87297E42B09D1150F1DF323DFA)
    parts = [[(srv.url("/i/desk.jpg"), "desk at night"), (rows["ds-0007"]["url"], "bridge")],
             [(srv.url("/i/trails.jpg"), "contrails"), (srv.url("/missing.jpg"), "nothing")]]
    paths = []
    for i, recs in enumerate(parts):
        t = pa.table({"URL": [u for u, _ in recs], "TEXT": [c for _, c in recs], "WIDTH": [640.0] * len(recs),
                      "HEIGHT": [480] * len(recs), "similarity": [0.31] * len(recs), "hash": [7 + i] * len(recs),
                      "punsafe": [0.01] * len(recs), "pwatermark": [0.2] * len(recs)})
        path = folder / f"part-{i:05d}-{run}-c000.snappy.parquet"
        pq.write_table(t, path, compression="snappy")
        (folder / f".{path.name}.crc").write_bytes(b"crc")
        paths.append(path)
    (folder / "_SUCCESS").write_bytes(b"")
    return paths


def test_parts_as_folder_glob_and_files(served, tmp_path):
    srv, rows = served
    folder = tmp_path / "laion2B-en"
    parts = _laion_parts(folder, srv, rows)
    images = local_copies([rows["ds-0007"]], tmp_path / "images")
    assert {dataset_name(p) for p in parts} == {"laion2B-en"}
    runs = {"folder": [str(folder)], "glob": [str(folder / "part-*.parquet")], "files": [str(p) for p in parts]}
    keys = {}
    for how, args in runs.items():
        index = tmp_path / how
        p = add(index, "--format", "laion", "--images", str(images), *args)
        got = items(index)
        assert {g["dataset"] for g in got.values()} == {"laion2B-en"}, how  # one dataset, not one per part
        keys[how] = set(got)
        desk = got[f"{parts[0].name}#0"]
        assert desk["title"] == "desk at night" and desk["extra"] == {
            "row": 0, "width": 640, "height": 480, "similarity": 0.31, "hash": 7, "punsafe": 0.01, "pwatermark": 0.2}
        assert got[f"{parts[1].name}#1"]["error"].startswith("HTTP 404")
        d = info(index)["laion2B-en"]
        assert d["read"]["rows"] == 4 and d["read"]["items"] == 4 and d["read"]["formats"] == ["laion"], how
        assert len(d["source"].split("; ")) == 2
        assert p.stderr.count("(laion): 2 rows -> 2 items") == 2
    assert keys["folder"] == keys["glob"] == keys["files"]
    index = tmp_path / "folder"
    assert lookup(index, "--photo-id", "2368127776") == [("laion2B-en", f"{parts[0].name}#1")]
    assert lookup(index, "--url", srv.url("/i/trails.jpg")) == [("laion2B-en", f"{parts[1].name}#0")]


@pytest.mark.parametrize("name, dataset", [
    ("part-00007-5114fd87-297e-42b0-9d11-50f1df323dfa-c000.snappy.parquet", "release"),
    ("00012.parquet", "release"),
    ("yfcc100m_dataset-3.bz2", "yfcc100m_dataset"),
    ("laion400m-part-00001.parquet", "laion400m"),
    ("DiF_v1.csv", "DiF_v1"),
    ("facescrub_actors.txt", "facescrub_actors"),
    ("manifest.csv", "manifest"),
])
def test_dataset_names_do_not_differ_per_part(tmp_path, name, dataset):
    (tmp_path / "release").mkdir()
    assert dataset_name(tmp_path / "release" / name) == dataset


# --------------------------------------------------------------------------- YFCC100M side files

YFCC = [  # photo id, NSID, nickname, served image
    ("3719541668", "90018885@N03", "alice", "/i/desk.jpg"),
    ("2368127776", "11864207@N00", "bob", "/i/bridge.jpg"),
    ("8599654898", "71336207@N03", "carol", "/i/oak.jpg"),
    ("8890702910", "51673541@N00", "dave", "/i/trails.jpg"),
]


def _yfcc_aws_line(n: int, pid: str, nsid: str, nick: str, url: str) -> str:
    """A 25-field line of the AWS release: line number, photo id, photo hash, then the 22 other fields."""
    fields = [str(n), pid, f"{int(pid):032x}"[-32:], nsid, nick, "2010-05-01 10:00:00.0", "1272700000", "", "Title",
              "", "", "", "", "", "", f"http://www.flickr.com/photos/{nsid}/{pid}/", url, "Attribution+License",
              "http://creativecommons.org/licenses/by/2.0/", "4087", "5", "0123456789", "9876543210", "jpg", "0"]
    return "\t".join(fields) + "\n"


def test_yfcc_subset_and_joins(served, tmp_path):
    srv, _ = served
    meta = tmp_path / "yfcc100m_dataset.bz2"
    meta.write_bytes(bz2.compress("".join(_yfcc_aws_line(i, pid, nsid, nick, srv.url(path))
                                          for i, (pid, nsid, nick, path) in enumerate(YFCC)).encode()))
    # OpenAI's CLIP subset: (line number, photo id, photo hash), no header, bzip2
    subset = tmp_path / "yfcc100m_subset_data.tsv.bz2"
    subset.write_bytes(bz2.compress("".join(f"{i}\t{YFCC[i][0]}\t{int(YFCC[i][0]):032x}\n" for i in (0, 2, 3)).encode()))
    autotags = tmp_path / "yfcc100m_autotags"
    autotags.write_text(f"{YFCC[0][0]}\tindoor:0.981,desk:0.902\n{YFCC[2][0]}\toutdoor:0.993,tree:0.95\r\n\n")
    hashes = tmp_path / "yfcc100m_hash.gz"
    hashes.write_bytes(gzip.compress("".join(f"{pid}\t{int(pid):032x}\n" for pid, *_ in YFCC).encode()))
    places = tmp_path / "places.csv"
    places.write_text("\ufeffphotoid,town,country\r\n" f"{YFCC[3][0]}.0,\"Kirkwall, Orkney\",UK\r\n")
    index = tmp_path / "index"
    p = add(index, "--format", "yfcc100m", "--dataset", "yfcc15m", "--only-ids", str(subset), "--join", str(autotags),
            "--join", str(hashes), "--join", str(places), str(meta))
    assert "4 rows -> 3 items; 1 skipped (not in --only-ids: 1)" in " ".join(p.stderr.split())
    got = items(index)
    assert set(got) == {YFCC[0][0], YFCC[2][0], YFCC[3][0]}
    desk, oak, trails = got[YFCC[0][0]], got[YFCC[2][0]], got[YFCC[3][0]]
    assert desk["extra"]["autotags"] == "indoor:0.981,desk:0.902" and oak["extra"]["autotags"] == "outdoor:0.993,tree:0.95"
    assert desk["extra"]["hash"] == f"{int(YFCC[0][0]):032x}"
    assert "autotags" not in trails["extra"]
    assert trails["extra"]["places"] == {"town": "Kirkwall, Orkney", "country": "UK"}
    assert desk["extra"]["flickr"] == {"farm": "5", "server": "4087", "secret": "0123456789",
                                       "original_secret": "9876543210", "extension": "jpg"}
    d = info(index)["yfcc15m"]
    assert d["read"] == {"formats": ["yfcc100m"], "rows": 4, "items": 3, "faces": 0, "skipped": {"not in --only-ids": 1}}
    assert "read as yfcc100m: 4 rows -> 3 items; 1 skipped (not in --only-ids: 1)" in info_text(index)
    assert lookup(index, "--nsid", "71336207@N03") == [("yfcc15m", YFCC[2][0])]
    assert lookup(index, "--photo-id", YFCC[3][0]) == [("yfcc15m", YFCC[3][0])]
    assert lookup(index, "--url", f"https://www.flickr.com/photos/alice/{YFCC[0][0]}/in/album-72157/") == [
        ("yfcc15m", YFCC[0][0])]
    assert lookup(index, "--photo-id", YFCC[1][0]) == []  # not in the subset: not added


def test_id_lists_in_their_variations(tmp_path, sample):
    plain = tmp_path / "ids.txt"
    plain.write_text("\ufeff102\r\n101\r\n\r\n101\r\n")
    assert len(IdSet(plain)) == 2 and 101 in IdSet(plain) and 103 not in IdSet(plain)
    headed = tmp_path / "ids.csv.gz"
    headed.write_bytes(gzip.compress(b'"line","photo_id"\n"7","55.0"\n"8","66"\n'))
    assert sorted(int(i) for i in IdSet(headed).ids) == [55, 66]
    bad = tmp_path / "names.csv"
    bad.write_text("name,town\nx,y\n")
    p = run_matcher("add", "--index", str(tmp_path / "i"), "--only-ids", str(bad), str(sample / "manifest.csv"))
    assert p.returncode == 2 and "no photo id column" in _said(p)


# --------------------------------------------------------------------------- layouts not understood


def test_not_understood_names_the_formats_that_might_fit(tmp_path):
    # a DiF-like file whose URLs were stripped: 191 fields, no URL column
    dif = tmp_path / "faces.csv"
    dif.write_text(",".join(["1", "x"] + ["0"] * 189) + "\n")
    p = run_matcher("add", "--index", str(tmp_path / "a"), str(dif))
    assert p.returncode == 2 and "--format dif" in _said(p)
    assert suggest_formats(dif) == ["dif"]
    # YFCC-like lines with a broken photo id
    y = tmp_path / "meta.tsv"
    y.write_text("\t".join(["id?"] + ["x"] * 22) + "\n")
    p = run_matcher("add", "--index", str(tmp_path / "b"), str(y))
    assert p.returncode == 2 and "--format yfcc100m" in _said(p)
    # a face list with its URLs under another name
    f = tmp_path / "faces.tsv"
    f.write_text("name\tface_id\tlink\tbbox\nA\t1\thttp://x/a.jpg\t1,2,3,4\n")
    p = run_matcher("add", "--index", str(tmp_path / "c"), str(f))
    assert p.returncode == 2 and "--format facescrub" in _said(p)
    # an unknown suffix
    odd = tmp_path / "list.dat"
    odd.write_text("\t".join(["1", "x"] * 12) + "\tz\n")
    p = run_matcher("add", "--index", str(tmp_path / "d"), str(odd))
    assert p.returncode == 2 and "unknown manifest format" in _said(p) and "--format yfcc100m" in _said(p)


def test_img2dataset_numeric_keys_find_their_files(tmp_path, sample):
    """A key column written as numbers (7) still finds img2dataset's zero-padded file (000000007.jpg)."""
    from matcher.ingest.open_source import open_source

    out = tmp_path / "out"
    (out / "00000").mkdir(parents=True)
    (out / "00000" / "000000007.jpg").write_bytes(jpeg(flickr_rows(sample)["ds-0001"]["path"], 200))
    pq.write_table(pa.table({"key": [7, 8], "url": ["http://x.example/7.jpg", "http://x.example/8.jpg"],
                             "caption": ["seven", "eight"], "status": ["success", "success"],
                             "error_message": [None, None]}), out / "00000.parquet")
    seven, eight = open_source(out / "00000.parquet", None, None, "img2dataset").items()
    assert (seven.key, seven.path, seven.dataset) == ("7", str(out / "00000" / "000000007.jpg"), "out")
    assert (eight.key, eight.path) == ("8", None)  # no file: downloaded


def test_flickr_video_files_are_not_downloaded(tmp_path):
    m = tmp_path / "media.csv"
    m.write_text("id,url\nv1,https://live.staticflickr.com/video/52184725340/0a1b2c3d4e/720p.mp4\n")
    index = tmp_path / "index"
    p = add(index, str(m), ok=False)
    assert p.returncode == 2 and "every item failed" in p.stderr  # recorded all the same
    (v,) = items(index).values()
    assert (v["status"], v["error_kind"]) == ("failed", "video") and "not downloaded" in v["error"]
    assert lookup(index, "--photo-id", "52184725340") == [("media", "v1")]
