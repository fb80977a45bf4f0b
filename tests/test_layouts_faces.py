"""Face datasets as published: DiF_v1.csv, MegaFace's FlickrFinal2 tree and lists, FaceScrub's lists.

Each file is written here in its released layout (with the variations real copies have: a BOM, CRLF,
quoted fields, floats for integers, blank lines at the end, gzip), added by the real CLI, every field
checked in the real catalog, and looked up by NSID / photo id / URL. Images are the sample's Flickr
photos: local copies named as their URLs (``--images``), files in a MegaFace tree, or served on 127.0.0.1.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

from conftest import LoopbackServer, check_entry_kinds, run_matcher
from layoutkit import (ImageHandler, add, entry_kinds, flickr_rows, info, info_text, items, jpeg, local_copies,
                       lookup, search_keys, upright_size, url_name)
from matcher.ingest.formats.dif import DIF_COLUMNS
from matcher.ingest.presets import detect_preset

# --------------------------------------------------------------------------- DiF


def _dif_row(face_id, url: str, size, box, seed: int) -> list[str]:
    """One DiF_v1.csv row: id, url, width, height, x1, y1, x2, y2, 68 (x, y) landmarks, 47 coding values."""
    x1, y1, x2, y2 = box
    marks = [f"{x1 + (i % 17) * (x2 - x1) / 17:.3f}" if i % 2 == 0 else f"{y1 + (i % 13) * (y2 - y1) / 13:.3f}"
             for i in range(136)]
    coding = [f"{(seed * 31 + i * 7) % 97 / 97:.6f}" for i in range(47)]
    coding[0] = "12.0"  # a whole number written as a float, as pandas exports them
    return [str(face_id), url, f"{size[0]}.0", str(size[1]), *(f"{v}" for v in box), *marks, *coding]


def _yfcc_line(photo_id: str, nsid: str, nickname: str, page: str, download: str) -> str:
    """A 23-field YFCC100M metadata line (the Webscope release) for --join."""
    return "\t".join([photo_id, nsid, nickname, "2009-07-14 18:31:12.0", "1247600000", "Canon+EOS", "A+title", "",
                      "", "", "", "", "", page, download, "Attribution+License",
                      "http://creativecommons.org/licenses/by/2.0/", "7371", "9", "cd273cbdc1", "0a0b0c0d0e", "jpg",
                      "0"]) + "\n"


@pytest.fixture(scope="module")
def dif(sample, tmp_path_factory):
    root = tmp_path_factory.mktemp("dif")
    rows = flickr_rows(sample)
    desk, bridge, oak = rows["ds-0014"], rows["ds-0007"], rows["ds-0002"]
    images = local_copies([desk, bridge, oak], root / "images")
    lines = [
        _dif_row(1, desk["url"], (1024, 768), (100.5, 80.0, 260.25, 270.0), 1),
        _dif_row(2, bridge["url"], (640, 402), (300, 50, 380, 150), 2),
        _dif_row(3, desk["url"], (1024, 768), (600, 300, 700, 420), 3),  # desk's second face, not next to its first
        _dif_row(4, oak["url"], (500, 333), (10, 10, 9, 40), 4),  # an empty box: named, the item still added
        _dif_row(5, bridge["url"], (640, 402), (20, 30, 120, 160), 5)[:-1],  # 190 fields: a bad row
    ]
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n").writerows(lines)  # quoted, CRLF
    path = root / "DiF_v1.csv"
    path.write_text("\ufeff" + buf.getvalue() + "\r\n\r\n", encoding="utf-8")  # a BOM, blank lines at the end
    yfcc = root / "yfcc100m_dataset-0"
    yfcc.write_text(_yfcc_line("3719541668", desk["owner"], "desk+owner", desk["page_url"], desk["url"])
                    + _yfcc_line("2368127776", bridge["owner"], "bridge+owner", bridge["page_url"], bridge["url"]))
    index = root / "index"
    p = add(index, "--format", "dif", "--images", str(images), "--join", str(yfcc), str(path))
    return {"root": root, "index": index, "path": path, "stderr": p.stderr, "desk": desk, "bridge": bridge, "oak": oak,
            "images": images}


def test_dif_rows_become_items_with_faces(dif):
    assert len(_dif_row(1, "u", (1, 1), (0, 0, 1, 1), 0)) == DIF_COLUMNS == 191
    assert detect_preset(dif["path"]) == "dif"
    got = items(dif["index"])
    assert set(got) == {"3719541668", "2368127776", "8599654898", "line:5"}  # key: the URL's photo id
    desk = got["3719541668"]
    assert desk["dataset"] == "DiF_v1" and desk["status"] == "ok"
    assert desk["url"] == dif["desk"]["url"] and desk["path"] == str(dif["images"] / url_name(dif["desk"]["url"]))
    ex = desk["extra"]
    assert ex["photo_id"] == "3719541668" and ex["face_ids"] == [1, 3] and ex["lines"] == [1, 3]
    assert (ex["width"], ex["height"]) == (1024, 768)
    # the boxes, measured on the 1024 x 768 image DiF annotated, as fractions of it
    assert ex["faces"] == [[round(100.5 / 1024, 5), round(80 / 768, 5), round(260.25 / 1024, 5), round(270 / 768, 5)],
                           [round(600 / 1024, 5), round(300 / 768, 5), round(700 / 1024, 5), round(420 / 768, 5)]]
    # the 47 coding values of each face, as numbers ("12.0" is 12)
    assert len(ex["coding"]) == 2 and all(len(c) == 47 for c in ex["coding"])
    assert ex["coding"][0][0] == 12 and ex["coding"][1][1] == round((3 * 31 + 7) % 97 / 97, 6)
    assert "face0" in entry_kinds(dif["index"], desk["id"]) and "face1" in entry_kinds(dif["index"], desk["id"])
    assert ex["flickr"] == {"farm": "9", "server": "7371", "secret": "cd273cbdc1", "extension": "jpg"}
    oak = got["8599654898"]
    assert oak["status"] == "ok" and "faces" not in oak["extra"]
    assert oak["extra"]["face_errors"] == ["face 0 (line 4): empty box (10, 10, 9, 40)"]
    bad = got["line:5"]
    assert bad["error_kind"] == "bad_row" and bad["error"] == "line 5: 190 comma-separated fields; a DiF_v1.csv row has 191"
    check_entry_kinds(dif["index"])


def test_dif_joined_with_yfcc100m_gives_owners(dif):
    got = items(dif["index"])
    desk, oak = got["3719541668"], got["8599654898"]
    assert desk["owner"] == dif["desk"]["owner"] and desk["page_url"] == dif["desk"]["page_url"]
    assert desk["license"] == "Attribution License"
    assert desk["extra"]["yfcc100m"]["owner_name"] == "desk owner"
    assert oak["owner"] is None and "yfcc100m" not in oak["extra"]  # not in the joined file


def test_dif_lookups_and_search(dif, sample):
    index = dif["index"]
    assert lookup(index, "--photo-id", "3719541668") == [("DiF_v1", "3719541668")]
    assert lookup(index, "--url", dif["bridge"]["url"]) == [("DiF_v1", "2368127776")]
    assert lookup(index, "--url", "https://www.flickr.com/photos/someone/8599654898/") == [("DiF_v1", "8599654898")]
    assert lookup(index, "--nsid", dif["desk"]["owner"]) == [("DiF_v1", "3719541668")]
    assert ("DiF_v1", "3719541668") in search_keys(index, sample / "my-photos" / "IMG_0001.jpg")


def test_dif_info_and_gzip_auto(dif, tmp_path):
    d = info(dif["index"])["DiF_v1"]
    assert d["read"] == {"formats": ["dif"], "rows": 5, "items": 4, "faces": 3, "skipped": {}}
    assert (d["items"], d["hashed"], d["failed"]) == (4, 3, 1)
    assert "DiF_v1.csv (dif): 5 rows -> 4 items, 3 faces" in " ".join(dif["stderr"].split())
    text = info_text(dif["index"])
    assert "read as dif: 5 rows -> 4 items (1 failed), 3 faces" in text
    gz = tmp_path / "DiF_v1.csv.gz"
    gz.write_bytes(gzip.compress(dif["path"].read_bytes()))
    assert detect_preset(gz) == "dif"
    index = tmp_path / "index"
    p = add(index, "--format", "auto", "--images", str(dif["images"]), str(gz))
    assert "read as dif (dataset DiF_v1)" in " ".join(p.stderr.split())
    assert set(items(index)) == set(items(dif["index"]))


# --------------------------------------------------------------------------- MegaFace

ANN, BEN = "10000000@N05", "35034351734@N01"


def _megaface_tree(sample: Path, root: Path) -> Path:
    rows = flickr_rows(sample)
    top = root / "megaface" / "FlickrFinal2"
    files = {  # path under FlickrFinal2 -> (image, bounding_box or a sidecar's text)
        f"{ANN[:3]}/{ANN}/3719541668_0.jpg": (rows["ds-0014"]["path"], {"x": 40, "y": 30, "width": 90, "height": 110}),
        f"{ANN[:3]}/{ANN}/3719541668_1.jpg": (rows["ds-0014"]["path"], {"x": 300, "y": 60.0, "width": 80, "height": 80}),
        f"{BEN[:3]}/{BEN}/2368127776_0.jpg": (rows["ds-0007"]["path"], {"x": 10, "y": 20, "width": 64, "height": 72}),
        f"{BEN[:3]}/{BEN}/8599654898_0.jpg": (rows["ds-0002"]["path"], None),  # no sidecar
        f"{BEN[:3]}/{BEN}/8890702910_2.jpg": (rows["ds-0003"]["path"], "{not json"),
    }
    for rel, (img, box) in files.items():
        dest = top / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(img, dest)
        if isinstance(box, dict):
            side = {"bounding_box": box, "landmarks": {"0": {"x": 1, "y": 2}}, "id": rel, "ignored": [1, 2]}
            Path(str(dest) + ".json").write_text(json.dumps(side))
        elif box is not None:
            Path(str(dest) + ".json").write_text(box)
    (top / ANN[:3] / ANN / "5000000001_0.jpg.json").write_text(json.dumps({"bounding_box": {"x": 1, "y": 1,
                                                                                            "width": 5, "height": 5}}))
    (top / BEN[:3] / BEN / "Thumbs.db").write_bytes(b"\0" * 10)
    return top


@pytest.fixture(scope="module")
def megaface(sample, tmp_path_factory):
    root = tmp_path_factory.mktemp("megaface")
    top = _megaface_tree(sample, root)
    index = root / "index"
    p = add(index, "--format", "megaface", str(top.parent))
    return {"root": root, "top": top, "index": index, "stderr": p.stderr, "rows": flickr_rows(sample)}


def test_megaface_tree(megaface):
    assert detect_preset(megaface["top"]) == detect_preset(megaface["top"].parent) == "megaface"
    got = items(megaface["index"])
    assert set(got) == {f"{ANN[:3]}/{ANN}/3719541668_0.jpg", f"{ANN[:3]}/{ANN}/3719541668_1.jpg",
                        f"{BEN[:3]}/{BEN}/2368127776_0.jpg", f"{BEN[:3]}/{BEN}/8599654898_0.jpg",
                        f"{BEN[:3]}/{BEN}/8890702910_2.jpg"}
    one = got[f"{ANN[:3]}/{ANN}/3719541668_1.jpg"]
    assert one["dataset"] == "megaface" and one["status"] == "ok"
    assert one["owner"] == ANN and one["page_url"] == f"https://www.flickr.com/photos/{ANN}/3719541668/"
    assert one["path"] == str(megaface["top"] / ANN[:3] / ANN / "3719541668_1.jpg") and one["url"] is None
    w, h = upright_size(one["path"])
    assert one["extra"]["photo_id"] == "3719541668" and one["extra"]["owner_nsid"] == ANN
    assert one["extra"]["face_index"] == 1
    assert one["extra"]["faces"] == [[round(300 / w, 5), round(60 / h, 5), round(380 / w, 5), round(140 / h, 5)]]
    assert "face0" in entry_kinds(megaface["index"], one["id"])
    assert "faces" not in got[f"{BEN[:3]}/{BEN}/8599654898_0.jpg"]["extra"]  # no sidecar: the image alone
    assert got[f"{BEN[:3]}/{BEN}/8890702910_2.jpg"]["extra"]["face_errors"] == ["8890702910_2.jpg.json: not JSON"]
    d = info(megaface["index"])["megaface"]
    assert d["read"] == {"formats": ["megaface"], "rows": 7, "items": 5, "faces": 3,
                         "skipped": {"sidecar without its image": 1, "not an image": 1}}
    assert "2 skipped (not an image: 1, sidecar without its image: 1)" in " ".join(megaface["stderr"].split())
    check_entry_kinds(megaface["index"])


def test_megaface_lookups(megaface):
    index = megaface["index"]
    assert lookup(index, "--nsid", BEN) == [("megaface", f"{BEN[:3]}/{BEN}/2368127776_0.jpg"),
                                           ("megaface", f"{BEN[:3]}/{BEN}/8599654898_0.jpg"),
                                           ("megaface", f"{BEN[:3]}/{BEN}/8890702910_2.jpg")]
    assert lookup(index, "--photo-id", "3719541668") == [("megaface", f"{ANN[:3]}/{ANN}/3719541668_0.jpg"),
                                                        ("megaface", f"{ANN[:3]}/{ANN}/3719541668_1.jpg")]
    assert lookup(index, "--url", f"https://www.flickr.com/photos/{BEN}/2368127776/") == [
        ("megaface", f"{BEN[:3]}/{BEN}/2368127776_0.jpg")]


def test_megaface_lists(megaface, tmp_path):
    """The devkit's lists: paths relative to FlickrFinal2/, one a line (CRLF, blank lines) or a JSON path list."""
    top = megaface["top"]
    listed = [f"{BEN[:3]}/{BEN}/2368127776_0.jpg", f"FlickrFinal2/{ANN[:3]}/{ANN}/3719541668_0.jpg",
              f"{BEN[:3]}/{BEN}/9999999999_0.jpg"]  # the last is not on disk
    txt = top.parent / "distractors_10.txt"
    txt.write_bytes(("\r\n".join(listed) + "\r\n\r\n").encode())
    js = top.parent / "megaface_features_list.json_10_1"
    js.write_text(json.dumps({"id": [0, 1], "path": listed[:2]}))
    index = tmp_path / "index"
    add(index, "--format", "megaface", "--dataset", "mf-list", str(txt))
    got = items(index)
    assert set(got) == {listed[0], listed[1].removeprefix("FlickrFinal2/"), listed[2]}
    gone = got[listed[2]]
    assert gone["status"] == "failed" and gone["error_kind"] == "missing" and gone["owner"] == BEN
    assert got[listed[0]]["extra"]["faces"]
    assert lookup(index, "--photo-id", "9999999999") == [("mf-list", listed[2])]  # listed: still found
    index2 = tmp_path / "index2"
    add(index2, "--format", "megaface", "--dataset", "mf-json", str(js))
    assert set(items(index2)) == {listed[0], listed[1].removeprefix("FlickrFinal2/")}


def test_megaface_tree_of_sidecars_only_says_so(tmp_path):
    top = tmp_path / "FlickrFinal2" / ANN[:3] / ANN
    top.mkdir(parents=True)
    for i in range(3):
        (top / f"100{i}_0.jpg.json").write_text(json.dumps({"bounding_box": {"x": 1, "y": 1, "width": 9, "height": 9}}))
    p = add(tmp_path / "index", "--format", "megaface", str(tmp_path / "FlickrFinal2"), ok=False)
    text = " ".join(p.stderr.split())
    assert p.returncode == 2 and "nothing was added" in text
    assert "3 rows -> 0 items; 3 skipped (sidecar without its image: 3)" in text
    assert "nothing in it became an item" in text
    # added as a plain folder: nothing either, said so, with the format that reads such a tree
    p = add(tmp_path / "plain", str(tmp_path / "FlickrFinal2"), ok=False)
    text = " ".join(p.stderr.split())
    assert p.returncode == 2
    assert "(folder): 0 rows -> 0 items - nothing in it became an item; its layout may fit --format megaface" in text


# --------------------------------------------------------------------------- FaceScrub


@pytest.fixture(scope="module")
def facescrub(sample, tmp_path_factory):
    root = tmp_path_factory.mktemp("facescrub")
    rows = flickr_rows(sample)
    bodies = {"/img/aaron/1.jpg": jpeg(rows["ds-0014"]["path"], 500), "/img/aaron/2.jpg": jpeg(rows["ds-0007"]["path"]),
              "/img/abigail/1.jpg": jpeg(rows["ds-0002"]["path"])}
    with LoopbackServer(ImageHandler, {k: (200, v) for k, v in bodies.items()}).running() as srv:
        sha = {k: hashlib.sha256(v).hexdigest() for k, v in bodies.items()}
        header = "name\timage_id\tface_id\turl\tbbox\tsha256"
        actors = [
            f"Aaron Eckhart\t1\t1\t{srv.url('/img/aaron/1.jpg')}\t100,50,220,190\t{sha['/img/aaron/1.jpg']}",
            # the list's bytes differ from what the URL serves now: not hashed
            f"Aaron Eckhart\t2\t2\t{srv.url('/img/aaron/2.jpg')}\t10,20,110,140\t{'0' * 64}",
            # a Flickr URL (its image a local copy), a bbox written with floats
            f"Adam Brody\t1\t3\t{rows['ds-0003']['url']}\t12.0,30.0,92.0,130.0\t",
            f"Adam Brody\t2\t4\t{srv.url('/img/missing.jpg')}\tnot,a,box\t",
        ]
        (root / "facescrub_actors.txt").write_bytes(("\r\n".join([header] + actors) + "\r\n\r\n").encode())
        actresses = [f"Abigail Breslin\t1\t1\t{srv.url('/img/abigail/1.jpg')}\t5,5,105,125\t{sha['/img/abigail/1.jpg']}"]
        (root / "facescrub_actresses.txt").write_text("\n".join([header] + actresses) + "\n")
        images = local_copies([rows["ds-0003"]], root / "images")
        index = root / "index"
        p = add(index, "--format", "facescrub", "--images", str(images), str(root / "facescrub_actors.txt"),
                str(root / "facescrub_actresses.txt"))
        index_plain = root / "plain"
        p2 = add(index_plain, "--images", str(images), "--column", "key=face_id", str(root / "facescrub_actors.txt"))
    return {"root": root, "index": index, "plain": index_plain, "srv": srv, "sha": sha, "rows": rows,
            "stderr": p.stderr, "plain_stderr": p2.stderr}


def test_facescrub_lists(facescrub):
    assert detect_preset(facescrub["root"] / "facescrub_actors.txt") == "facescrub"
    actors, actresses = items(facescrub["index"], "facescrub_actors"), items(facescrub["index"], "facescrub_actresses")
    assert set(actors) == {"1", "2", "3", "4"} and set(actresses) == {"1"}
    aaron = actors["1"]
    assert aaron["status"] == "ok" and aaron["url"] == facescrub["srv"].url("/img/aaron/1.jpg")
    assert aaron["title"] is None  # the name is the person shown, not the photo's title
    assert aaron["extra"]["person"] == "Aaron Eckhart"
    assert (aaron["extra"]["image_id"], aaron["extra"]["face_id"]) == (1, 1)
    assert aaron["extra"]["sha256"] == facescrub["sha"]["/img/aaron/1.jpg"]
    w, h = 500, round(upright_size(facescrub["rows"]["ds-0014"]["path"])[1] * 500 / upright_size(
        facescrub["rows"]["ds-0014"]["path"])[0])
    assert aaron["extra"]["faces"] == [[round(100 / w, 5), round(50 / h, 5), round(220 / w, 5), round(190 / h, 5)]]
    changed = actors["2"]
    assert changed["status"] == "failed" and changed["error_kind"] == "sha256"
    assert "not the one the dataset lists" in changed["error"]
    flickr = actors["3"]
    assert flickr["status"] == "ok" and flickr["extra"]["person"] == "Adam Brody" and flickr["extra"]["faces"]
    assert actors["4"]["extra"]["face_errors"] == ["face 0: bbox 'not,a,box' is not x1,y1,x2,y2"]
    assert actors["4"]["error"].startswith("HTTP 404")
    assert actresses["1"]["extra"]["person"] == "Abigail Breslin" and actresses["1"]["status"] == "ok"
    d = info(facescrub["index"])
    assert d["facescrub_actors"]["read"] == {"formats": ["facescrub"], "rows": 4, "items": 4, "faces": 3, "skipped": {}}
    assert d["facescrub_actors"]["failures"] == {"sha256": 1, "http": 1}
    check_entry_kinds(facescrub["index"])


def test_facescrub_lookups(facescrub):
    index = facescrub["index"]
    assert lookup(index, "--url", facescrub["srv"].url("/img/aaron/1.jpg")) == [("facescrub_actors", "1")]
    assert lookup(index, "--photo-id", "8890702910") == [("facescrub_actors", "3")]
    assert lookup(index, "--url", facescrub["rows"]["ds-0003"]["url"]) == [("facescrub_actors", "3")]


def test_txt_manifest_read_without_format(facescrub):
    """A .txt manifest is sniffed (tab-separated, with a header) instead of refused; read plainly, its
    columns are taken by their usual names (name -> title: why FaceScrub has a format of its own)."""
    got = items(facescrub["plain"])
    assert set(got) == {"1", "2", "3", "4"}
    assert got["3"]["url"] == facescrub["rows"]["ds-0003"]["url"] and got["3"]["title"] == "Adam Brody"


def test_headerless_txt_is_sniffed(tmp_path, sample):
    rows = flickr_rows(sample)
    m = tmp_path / "urls.txt"
    m.write_text(f"{rows['ds-0001']['url']},first\n{rows['ds-0002']['url']},second\n")
    images = local_copies([rows["ds-0001"], rows["ds-0002"]], tmp_path / "images")
    add(tmp_path / "index", "--images", str(images), str(m))
    got = items(tmp_path / "index")
    assert {g["url"] for g in got.values()} == {rows["ds-0001"]["url"], rows["ds-0002"]["url"]}
    assert all(g["status"] == "ok" for g in got.values())
    assert lookup(tmp_path / "index", "--photo-id", "2005397842")


def test_megaface_sidecar_named_without_the_image_suffix(sample, tmp_path):
    """Copies that name the sidecar 3719541668_0.json (not .jpg.json) are read the same."""
    d = tmp_path / "FlickrFinal2" / ANN[:3] / ANN
    d.mkdir(parents=True)
    shutil.copy(flickr_rows(sample)["ds-0014"]["path"], d / "3719541668_0.jpg")
    (d / "3719541668_0.json").write_text(json.dumps({"bounding_box": {"x": 40, "y": 30, "width": 90, "height": 110}}))
    add(tmp_path / "index", "--format", "megaface", str(tmp_path / "FlickrFinal2"))
    (one,) = items(tmp_path / "index").values()
    assert one["extra"]["faces"] and one["extra"]["face_index"] == 0
    assert info(tmp_path / "index")["megaface"]["read"]["skipped"] == {}
