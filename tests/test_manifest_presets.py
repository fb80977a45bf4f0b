"""Manifest presets end to end: files written in each dataset's published layout, added by the real CLI.

YFCC100M metadata lines (both releases), LAION Parquet and its CSV/TSV exports (LAION-400M, LAION-5B,
img2dataset output), and a faces JSON Lines manifest whose boxes become index entries. Images are real
sample photos, served by an HTTP server on 127.0.0.1 (``--allow-private-urls``) or read as local files;
SQLite, FAISS and the worker processes are real.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import math
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from conftest import ENTRY_KINDS, LoopbackHandler, LoopbackServer, catalog_sql, check_entry_kinds, run_matcher
from matcher.errors import ManifestError
from matcher.imaging.facebox import MAX_FACE_ENTRIES, FaceSpecError, face_region, normalise, parse_face, parse_faces
from matcher.imaging.faces import detect_faces
from matcher.ingest.presets import YFCC_AWS_FIELDS, YFCC_FIELDS, FacesSource, LaionSource, YfccSource, detect_preset
from matcher.ingest.sources import ManifestSource
from matcher.ingest.open_source import open_source

# --------------------------------------------------------------------------- served images


def _encode(src: Path, width: int, fmt: str = "JPEG", **save) -> bytes:
    with Image.open(src) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, fmt, **save)
    return buf.getvalue()


#: served path -> the sample photo it is a re-encoded copy of, and its width
SERVED = {
    "/img/2.jpg": ("IMG_0002.jpg", 640),
    "/img/3.jpg": ("IMG_0003.jpg", 500),
    "/img/5.jpg": ("IMG_0005.jpg", 400),
    "/img/6.jpg": ("IMG_0006.jpg", 480),
    "/img/9.jpg": ("IMG_0009.jpg", 400),
}


class _Handler(LoopbackHandler):
    server: LoopbackServer

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path, _ = self.count_hit()
        status, body = self.server.routes.get(path, (404, b"<html>Not Found</html>"))
        self.reply(status, "image/jpeg" if status == 200 else "text/html", body)


@pytest.fixture(scope="module")
def server(sample):
    routes = {p: (200, _encode(sample / "my-photos" / name, w, quality=85)) for p, (name, w) in SERVED.items()}
    routes["/gone/410.jpg"] = (410, b"<html>Gone</html>")
    with LoopbackServer(_Handler, routes).running() as srv:
        yield srv


def _add(index: Path, *args: str) -> None:
    p = run_matcher("add", "--index", str(index), "--allow-private-urls", "--retries", "0", "--timeout", "10", *args)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr


def _items(index: Path) -> dict[str, dict]:
    rows = catalog_sql(index, "SELECT key, url, page_url, path, owner, license, title, status, error, error_kind, extra"
                              " FROM items")
    cols = ("key", "url", "page_url", "path", "owner", "license", "title", "status", "error", "error_kind", "extra")
    out = {}
    for r in rows:
        d = dict(zip(cols, r))
        d["extra"] = json.loads(d["extra"]) if d["extra"] else {}
        out[d["key"]] = d
    return out


def _info(index: Path) -> dict:
    p = run_matcher("info", "--index", str(index), "--json", check=True)
    return json.loads(p.stdout)


def _search(index: Path, *photos: Path) -> list[dict]:
    p = run_matcher("search", "--index", str(index), "--json", *map(str, photos))
    assert p.returncode in (0, 1), p.stderr
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


# --------------------------------------------------------------------------- YFCC100M

def _yfcc_line(photo_id: str, nsid: str, nickname: str, title: str, download: str, *, marker: str = "0",
               license_name: str = "Attribution-NonCommercial-ShareAlike License", aws: tuple | None = None) -> str:
    """One metadata line in the file's own encoding: text fields URL-encoded with '+' for spaces."""
    fields = {
        "photo_id": photo_id, "user_nsid": nsid, "user_nickname": quote_plus(nickname),
        "date_taken": "2012-02-16 09:56:37.0", "date_uploaded": "1331840483",
        "capture_device": quote_plus("Canon PowerShot ELPH 310 HS"), "title": quote_plus(title),
        "description": quote_plus("My vacation, day 2: the beach & the bridge"),
        "user_tags": "canon,canon+powershot+hs+310", "machine_tags": "", "longitude": "-81.804885",
        "latitude": "24.550558", "accuracy": "12", "page_url": f"http://www.flickr.com/photos/{nsid}/{photo_id}/",
        "download_url": download, "license_name": quote_plus(license_name),
        "license_url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "server_id": "7205", "farm_id": "8",
        "secret": "a1b2c3d4e5", "secret_original": "f6e5d4c3b2", "extension": "jpg", "marker": marker,
    }
    if aws is not None:
        fields["line_number"], fields["photo_hash"] = aws
        return "\t".join(fields[k] for k in YFCC_AWS_FIELDS) + "\n"
    return "\t".join(fields[k] for k in YFCC_FIELDS) + "\n"


def _yfcc_rows(server) -> list[tuple]:
    # (photo id, nsid, nickname, title, download URL, marker)
    return [
        ("2368127776", "11864207@N00", "Jane Doe's camera", "Bridge through the trees!", server.url("/img/2.jpg"), "0"),
        ("8599654898", "71336207@N03", "/Sizemore/", "The old oak (100% real)", server.url("/img/3.jpg"), "0"),
        ("4762621909", "10966541@N02", "bsabarnowl", "Fireworks, July 4", server.url("/img/v.jpg"), "1"),
        ("102500", "44124367255@N01", "Stef Noble", "Pix(2)", server.url("/gone/404.jpg"), "0"),
        ("102509", "44124367255@N01", "Stef Noble", "Pix(3)", server.url("/gone/410.jpg"), "0"),
    ]


def test_yfcc_original_release(tmp_path, server, sample):
    """The 23-field lines of the Webscope files (yfcc100m_dataset-0, no header, no suffix)."""
    rows = _yfcc_rows(server)
    m = tmp_path / "yfcc100m_dataset-0"
    m.write_text("".join(_yfcc_line(*r[:5], marker=r[5]) for r in rows) + "9731335\t35034351734@N01\tniallkennedy\n")
    assert all(len(line.split("\t")) == 23 for line in m.read_text().splitlines()[:-1])
    index = tmp_path / "index"
    _add(index, "--format", "yfcc100m", "--dataset", "yfcc", str(m))
    items = _items(index)
    assert set(items) == {"2368127776", "8599654898", "4762621909", "102500", "102509", "line:6"}
    bridge = items["2368127776"]
    assert bridge["status"] == "ok"
    assert bridge["url"] == server.url("/img/2.jpg")
    assert bridge["page_url"] == "http://www.flickr.com/photos/11864207@N00/2368127776/"
    assert bridge["owner"] == "11864207@N00"
    assert bridge["title"] == "Bridge through the trees!"  # '+' and %21 decoded
    assert bridge["license"] == "Attribution-NonCommercial-ShareAlike License"
    assert bridge["extra"] == {"photo_id": "2368127776", "owner_nsid": "11864207@N00", "owner_name": "Jane Doe's camera",
                               "date_taken": "2012-02-16 09:56:37.0",
                               "license_url": "http://creativecommons.org/licenses/by-nc-sa/2.0/",
                               # farm, server, secrets and extension of the line, for a removal request
                               "flickr": {"farm": "8", "server": "7205", "secret": "a1b2c3d4e5",
                                          "original_secret": "f6e5d4c3b2", "extension": "jpg"}}
    assert items["8599654898"]["title"] == "The old oak (100% real)"
    assert items["8599654898"]["extra"]["owner_name"] == "/Sizemore/"
    video = items["4762621909"]
    assert video["status"] == "failed" and video["error_kind"] == "video" and "video" in video["error"]
    assert server.hits["/img/v.jpg"] == 0  # a video is never downloaded
    assert items["102500"]["error"].startswith("HTTP 404") and items["102509"]["error"].startswith("HTTP 410")
    bad = items["line:6"]
    assert bad["error_kind"] == "bad_row" and "3 tab-separated fields" in bad["error"] and "23 or 25" in bad["error"]
    (ds,) = _info(index)["datasets"]
    assert (ds["items"], ds["hashed"], ds["failed"], ds["dead_links"]) == (6, 2, 4, 2)
    assert ds["failures"] == {"video": 1, "http": 2, "bad_row": 1}
    check_entry_kinds(index)

    # the person's photo is found, with the Flickr provenance
    (res,) = _search(index, sample / "my-photos" / "IMG_0002.jpg")
    (match,) = res["matches"]
    assert (match["dataset"], match["key"], match["owner"]) == ("yfcc", "2368127776", "11864207@N00")
    assert match["extra"]["owner_name"] == "Jane Doe's camera"


def test_yfcc_aws_release_bz2_auto(tmp_path, server, sample):
    """The 25-field lines of the single AWS file (line number and photo hash first), bzip2'd, auto-detected."""
    rows = _yfcc_rows(server)[:2]
    m = tmp_path / "yfcc100m_dataset.bz2"
    m.write_bytes(bz2.compress("".join(
        _yfcc_line(*r[:5], marker=r[5], aws=(str(i), f"{i:x}e2f7a26a1dfbf165a7e30bdabf7e72a"))
        for i, r in enumerate(rows)).encode()))
    assert detect_preset(m) == "yfcc100m"
    index = tmp_path / "index"
    p = run_matcher("add", "--index", str(index), "--allow-private-urls", "--format", "auto", str(m))
    assert p.returncode == 0, p.stderr
    assert "read as yfcc100m" in " ".join(p.stderr.split())
    items = _items(index)
    assert set(items) == {"2368127776", "8599654898"}
    assert all(it["status"] == "ok" for it in items.values())
    assert items["8599654898"]["extra"]["line_number"] == "1"
    assert items["8599654898"]["extra"]["photo_hash"] == "1e2f7a26a1dfbf165a7e30bdabf7e72a"
    assert items["2368127776"]["owner"] == "11864207@N00"
    assert _info(index)["datasets"][0]["dataset"] == "yfcc100m_dataset"
    (res,) = _search(index, sample / "my-photos" / "IMG_0003.jpg")
    assert [m["key"] for m in res["matches"]] == ["8599654898"]


def test_yfcc_items_without_the_cli(tmp_path):
    """Both line lengths in one file, and a marker that is neither 0 nor 1, read by YfccSource itself."""
    m = tmp_path / "mixed.tsv"
    m.write_text(_yfcc_line("1", "1@N01", "a", "T+1", "http://x/1.jpg")
                 + _yfcc_line("2", "2@N02", "b", "T 2", "http://x/2.jpg", aws=("7", "ab"))
                 + _yfcc_line("3", "3@N03", "c", "T3", "http://x/3.jpg", marker="2"))
    assert detect_preset(m) == "yfcc100m"
    src = open_source(m, "y", preset="auto")
    assert isinstance(src, YfccSource)
    a, b, c = src.items()
    assert (a.key, a.fields["title"], a.error) == ("1", "T+1", None)
    assert (b.key, b.fields["title"], b.extra["line_number"], b.extra["photo_hash"]) == ("2", "T 2", "7", "ab")
    assert c.error and "neither 0 (photo) nor 1 (video)" in c.error and c.error_kind is None
    # without --format, the plain reading finds no URL column (the first line is taken as a header) and says
    # which format fits
    with pytest.raises(ManifestError, match="its layout may fit --format yfcc100m"):
        open_source(m, "y")


# --------------------------------------------------------------------------- LAION

def test_laion5b_parquet(tmp_path, server, sample):
    """LAION-5B metadata (laion2B-en part file): URL, TEXT, WIDTH, HEIGHT, similarity, hash, punsafe, pwatermark."""
    table = pa.table({
        "URL": [server.url("/img/2.jpg"), server.url("/img/5.jpg"), server.url("/gone/404.jpg"), None],
        "TEXT": ["A bridge in the woods", "Cup of coffee on a saucer", "gone", "no url"],
        "WIDTH": pa.array([640, 400, float("nan"), 10], pa.float64()),
        "HEIGHT": pa.array([402, 300, 100.0, 10], pa.float64()),
        "similarity": [0.3312, 0.2981, 0.31, 0.3],
        "hash": pa.array([-4527268237438491000, 6295651997640470000, 1, 2], pa.int64()),
        "punsafe": pa.array([0.0012, 0.0003, 0.5, 0.1], pa.float32()),
        "pwatermark": pa.array([0.08, 0.51, 0.1, 0.1], pa.float32()),
    })
    m = tmp_path / "part-00000-5114fd87-297e-42b0-9d11-50f1df323dfa-c000.snappy.parquet"
    pq.write_table(table, m)
    assert detect_preset(m) == "laion"
    index = tmp_path / "index"
    _add(index, "--format", "auto", "--dataset", "laion2B-en", str(m))
    items = _items(index)
    name = m.name
    assert set(items) == {f"{name}#0", f"{name}#1", f"{name}#2", f"{name}#3"}
    coffee = items[f"{name}#1"]
    assert coffee["status"] == "ok" and coffee["title"] == "Cup of coffee on a saucer"
    assert coffee["url"] == server.url("/img/5.jpg") and coffee["license"] is None
    x = coffee["extra"]
    assert (x["row"], x["width"], x["height"], x["hash"]) == (1, 400, 300, 6295651997640470000)
    assert math.isclose(x["similarity"], 0.2981) and math.isclose(x["punsafe"], 0.0003, rel_tol=1e-5)
    assert math.isclose(x["pwatermark"], 0.51, rel_tol=1e-5)
    assert "width" not in items[f"{name}#2"]["extra"]  # NaN is not kept
    assert items[f"{name}#2"]["error"].startswith("HTTP 404")
    assert items[f"{name}#3"]["error_kind"] == "bad_row"
    (ds,) = _info(index)["datasets"]
    assert (ds["hashed"], ds["failed"], ds["dead_links"]) == (2, 2, 1)
    (res,) = _search(index, sample / "my-photos" / "IMG_0005.jpg")
    assert [(m["dataset"], m["key"], m["title"]) for m in res["matches"]] == [
        ("laion2B-en", f"{name}#1", "Cup of coffee on a saucer")]


def test_laion400m_csv_export(tmp_path, server):
    """LAION-400M columns as a CSV export: SAMPLE_ID is the key, LICENSE '?' means unknown."""
    m = tmp_path / "laion400m-part-00001.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["SAMPLE_ID", "URL", "TEXT", "HEIGHT", "WIDTH", "LICENSE", "NSFW", "similarity"])
        w.writerow(["2844000061006", server.url("/img/3.jpg"), "cat, sleeping", "375", "500", "?", "UNLIKELY", "0.3121"])
        w.writerow(["1580002047810", server.url("/img/6.jpg"), "Pagoda", "360.0", "480.0",
                    "https://creativecommons.org/licenses/by/4.0/", "UNSURE", "0.29"])
    assert detect_preset(m) == "laion"
    index = tmp_path / "index"
    _add(index, "--format", "laion", "--dataset", "laion400m", str(m))
    items = _items(index)
    assert set(items) == {"2844000061006", "1580002047810"}
    cat, pagoda = items["2844000061006"], items["1580002047810"]
    assert cat["status"] == pagoda["status"] == "ok"
    assert cat["license"] is None and pagoda["license"] == "https://creativecommons.org/licenses/by/4.0/"
    assert cat["title"] == "cat, sleeping"
    assert cat["extra"] == {"row": 0, "sample_id": 2844000061006, "height": 375, "width": 500, "nsfw": "UNLIKELY",
                            "similarity": 0.3121}
    assert pagoda["extra"]["width"] == 480 and pagoda["extra"]["row"] == 1


def test_img2dataset_tsv(tmp_path, server):
    """img2dataset's output layout (lower-case url/caption/key, sizes, sha256, exif) as TSV: key is the key."""
    m = tmp_path / "00000.tsv"
    header = ["url", "caption", "key", "status", "error_message", "width", "height", "original_width",
              "original_height", "exif", "sha256"]
    rows = [
        [server.url("/img/2.jpg"), "bridge", "000000007", "success", "", "256", "161", "640", "402",
         '{"Image Make": "Canon"}', "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
        [server.url("/gone/410.jpg"), "gone", "000000008", "failed_to_download", "HTTP Error 410", "", "", "", "", "",
         ""],
    ]
    m.write_text("".join("\t".join(r) + "\n" for r in [header] + rows))
    assert detect_preset(m) == "img2dataset"
    assert isinstance(open_source(m, "x", preset="auto"), LaionSource)
    index = tmp_path / "index"
    gone_hits = server.hits["/gone/410.jpg"]
    _add(index, "--format", "laion", "--dataset", "cc", str(m))
    items = _items(index)
    assert set(items) == {"000000007", "000000008"}
    assert items["000000007"]["extra"] == {
        "row": 0, "width": 256, "height": 161, "original_width": 640, "original_height": 402,
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
    # img2dataset could not download it: recorded as such, not fetched again
    assert items["000000008"]["error"] == "failed upstream (img2dataset: HTTP Error 410)"
    assert items["000000008"]["error_kind"] == "upstream" and server.hits["/gone/410.jpg"] == gone_hits
    assert _info(index)["datasets"][0]["failures"] == {"upstream": 1}


def test_auto_keeps_plain_manifests_plain(tmp_path, sample):
    """A manifest of no preset's layout is read as before, with or without --format auto."""
    assert detect_preset(sample / "manifest.csv") is None
    assert type(open_source(sample / "manifest.csv", "s", preset="auto")) is ManifestSource
    j = tmp_path / "plain.jsonl"
    j.write_text(json.dumps({"id": "a", "url": "http://x/a.jpg", "caption": "no faces here"}) + "\n")
    assert detect_preset(j) is None
    assert detect_preset(sample / "dataset") is None
    with pytest.raises(ManifestError, match="not a folder"):
        open_source(sample / "dataset", "s", preset="yfcc100m")
    with pytest.raises(ManifestError, match="reads JSON Lines"):
        open_source(sample / "manifest.csv", "s", preset="faces-jsonl")
    with pytest.raises(ManifestError, match="not JSON Lines"):
        open_source(j, "s", preset="laion")
    p = run_matcher("add", "--index", str(tmp_path / "i"), "--format", "yfcc100m", "--column", "url=x",
                    str(tmp_path / "plain.jsonl"))
    assert p.returncode == 2 and "--column does not apply" in p.stderr


# --------------------------------------------------------------------------- faces

def test_parse_face_shapes():
    """Each documented shape of one face gives the same (l, t, r, b) box; units are said or inferred."""
    px = (40.0, 30.0, 140.0, 150.0, True)
    for face in ([40, 30, 100, 120], {"box": [40, 30, 100, 120]}, {"bbox": [40, 30, 100, 120]},
                 {"xyxy": [40, 30, 140, 150]}, {"face_rectangle": {"left": 40, "top": 30, "width": 100, "height": 120}},
                 {"faceRectangle": {"top": 30, "left": 40, "width": 100, "height": 120}},
                 {"facial_area": {"x": 40, "y": 30, "w": 100, "h": 120}},
                 {"x1": 40, "y1": 30, "x2": 140, "y2": 150}, {"left": 40, "top": 30, "right": 140, "bottom": 150},
                 {"x": 40, "y": 30, "width": 100, "height": 120, "confidence": 0.99}):
        assert parse_face(face) == px, face
    assert parse_face([40, 30, 140, 150], xyxy=True) == px
    assert parse_face([0.25, 0.1, 0.5, 0.4]) == (0.25, 0.1, 0.75, 0.5, False)  # fractions, inferred
    assert parse_face([0.6, 0.5, 0.5, 0.6]) == (0.6, 0.5, 1.1, 1.1, False)  # reaches past the edge: still fractions
    assert parse_face([0, 0, 1, 1]) == (0, 0, 1, 1, True)  # whole numbers: pixels unless said
    assert parse_face({"box": [0, 0, 1, 1], "units": "fractions"})[4] is False
    assert parse_face([0.5, 0.5, 0.25, 0.25], units=True)[4] is True
    for bad in ([1, 2, 3], {"box": [1, 2, "x", 4]}, {"score": 1}, [5, 5, 0, 10], {"box": [1, 2, 3, 4], "units": "cm"}):
        with pytest.raises(FaceSpecError):
            parse_face(bad)
    raw, errors = parse_faces({"faces": [[10, 10, 20, 20], {"bbox": None}], "box_units": "pixels",
                               "image_width": 200, "image_height": 100})
    assert raw == (((10.0, 10.0, 30.0, 30.0, True),), (200, 100)) and errors == ["face 1: bbox must be 4 numbers, got None"]
    assert normalise(raw, (999, 999)) == [[0.05, 0.1, 0.15, 0.3]]  # the manifest's reference size wins
    assert normalise(((( 10.0, 10.0, 30.0, 30.0, True),), None), None) is None  # pixels of an unknown size
    assert normalise((((-5.0, 90.0, 50.0, 130.0, True),), None), (100, 100)) == [[0.0, 0.9, 0.5, 1.0]]  # clipped
    assert np.allclose(face_region([0.4, 0.4, 0.6, 0.5], 100, 100), (30.0, 25.0, 70.0, 65.0))
    assert np.allclose(face_region([0.0, 0.0, 0.2, 0.2], 100, 100), (0.0, 0.0, 30.0, 30.0))  # clipped to the image
    assert {f"face{i}" for i in range(MAX_FACE_ENTRIES)} <= ENTRY_KINDS


@pytest.fixture(scope="module")
def face_scene(tmp_path_factory, sample) -> dict:
    """The person's photo (a portrait, IMG_0009 cropped around the face) and a dataset picture that shows it
    inside a larger scene, with the face box a face dataset would publish (found by a detector)."""
    d = tmp_path_factory.mktemp("faces")
    me = Image.open(sample / "my-photos" / "IMG_0009.jpg").convert("RGB")
    portrait = me.crop((100, 0, 350, 250)).resize((600, 600), Image.Resampling.LANCZOS)
    portrait.save(d / "portrait.png")
    scene = Image.open(sample / "my-photos" / "IMG_0001.jpg").convert("RGB").resize((1600, 1200))
    scene.paste(portrait, (650, 150))
    scene.save(d / "scene.png")
    (x, y, w, h), *_ = detect_faces(np.asarray(portrait.convert("L")))
    return {"dir": d, "portrait": d / "portrait.png", "scene": d / "scene.png", "box": [650 + x, 150 + y, w, h],
            "size": scene.size}


def test_faces_local_file_matched_by_its_face_entry(tmp_path, face_scene):
    """A portrait is not found in a scene that shows it small; with the scene's published face box, the face
    entry finds it, verified on the thumbnail and at full detail (the box is re-derived from the catalog)."""
    d = face_scene["dir"]
    x, y, w, h = face_scene["box"]
    W, H = face_scene["size"]
    rows = [
        {"id": "scene-1", "path": "scene.png", "title": "Group at the lake", "faces": [{"box": [x, y, w, h]}]},
        # the same picture and face, as fractions and as x1/y1/x2/y2, under other keys
        {"id": "scene-2", "path": "scene.png", "bboxes": [[x / W, y / H, w / W, h / H]]},
        {"id": "scene-3", "path": "scene.png", "box_format": "xyxy", "faces": [[x, y, x + w, y + h], [5, 5, 6, 6]]},
    ]
    m = d / "faces.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = d / "plain.jsonl"  # the same rows read as a plain manifest: no face entries
    plain.write_text(m.read_text())

    index = tmp_path / "index"
    _add(index, "--format", "faces-jsonl", "--dataset", "faces", str(m))
    items = _items(index)
    expected = [round(v, 5) for v in (x / W, y / H, (x + w) / W, (y + h) / H)]
    for key in ("scene-1", "scene-2"):
        assert items[key]["extra"]["faces"] == [expected], key
    assert items["scene-3"]["extra"]["faces"][0] == expected
    kinds = sorted(catalog_sql(index, "SELECT items.key, entries.kind FROM entries JOIN items ON items.id = entries.item_id"))
    # a 1-pixel face makes a region too small to index: scene-3 has one face entry, as the others
    assert kinds == [("scene-1", "face0"), ("scene-1", "full"), ("scene-2", "face0"), ("scene-2", "full"),
                     ("scene-3", "face0"), ("scene-3", "full")]
    check_entry_kinds(index)

    (res,) = _search(index, face_scene["portrait"])
    assert sorted(m["key"] for m in res["matches"]) == ["scene-1", "scene-2", "scene-3"]
    for match in res["matches"]:
        ev = match["evidence"]
        assert ev["entry"] == "face0" and ev["variant"].startswith("face0/")
        assert ev["score"] >= 0.95
        assert ev["motion"] <= ev["max_motion"], ev  # the full-detail check ran on the face region

    plain_index = tmp_path / "plain-index"
    _add(plain_index, "--dataset", "faces", str(plain))
    assert catalog_sql(plain_index, "SELECT DISTINCT kind FROM entries") == [("full",)]
    (res,) = _search(plain_index, face_scene["portrait"])
    assert res["matches"] == []  # without the face entries, the scene does not match the portrait


def test_faces_served_and_normalised_by_the_downloaded_size(tmp_path, server, sample):
    """Pixel boxes without a size are measured on the downloaded image; with width/height, on that size."""
    body_w, body_h = Image.open(io.BytesIO(server.routes["/img/9.jpg"][1])).size  # IMG_0009 at 400 px
    s = body_w / 512  # the face detected in the 512 px original, scaled to the served copy
    fx, fy, fw = 174 * s, 62 * s, 101 * s
    rows = [
        {"image_url": server.url("/img/9.jpg"), "id": 1, "faces": [{"bbox": [fx, fy, fw, fw], "score": 0.98}]},
        # annotated on the 512 px original; served smaller: the boxes are fractions of the original
        {"image_url": server.url("/img/9.jpg"), "id": 2, "width": 512, "height": 512,
         "faces": [{"face_rectangle": {"left": 174, "top": 62, "width": 101, "height": 101}}, {"box": "oops"}]},
        {"image_url": server.url("/gone/404.jpg"), "id": 3, "faces": [[10, 10, 50, 50]]},
        {"image_url": server.url("/img/2.jpg"), "id": 4, "faces": []},
    ]
    m = tmp_path / "served.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert detect_preset(m) == "faces-jsonl"
    index = tmp_path / "index"
    _add(index, "--format", "auto", "--dataset", "served-faces", str(m))
    items = _items(index)
    f1, f2 = items["1"]["extra"]["faces"], items["2"]["extra"]["faces"]
    assert np.allclose(f1, f2, atol=2e-5)
    assert np.allclose(f1, [[174 / 512, 62 / 512, 275 / 512, 163 / 512]], atol=2e-3)
    assert items["2"]["extra"]["face_errors"] == ["face 1: box must be 4 numbers, got 'oops'"]
    assert items["2"]["extra"]["width"] == 512  # the row's other fields stay extra metadata
    assert "faces" not in items["3"]["extra"] and items["3"]["extra"]["faces_px"] == [[10, 10, 60, 60]]
    assert items["3"]["error"].startswith("HTTP 404")
    assert items["4"]["extra"]["faces"] == []
    kinds = dict(catalog_sql(index, "SELECT items.key, group_concat(entries.kind) FROM entries"
                                    " JOIN items ON items.id = entries.item_id GROUP BY items.key"))
    assert set(kinds["1"].split(",")) == {"full", "face0"} and set(kinds["2"].split(",")) == {"full", "face0"}
    assert kinds["4"] == "full"
    check_entry_kinds(index)
    (res,) = _search(index, sample / "my-photos" / "IMG_0009.jpg")
    assert {m["key"] for m in res["matches"]} == {"1", "2"}


def test_faces_through_shards_as_the_local_engine(tmp_path, face_scene):
    """The sharded engine (a local pool here, Dask in production) stores the same face entries."""
    from matcher.imaging.images import DEFAULT_LIMITS
    from matcher.engine.api import add
    from matcher.ingest.shards import PoolEngine, add_sharded
    from matcher.index.store import IndexStore

    x, y, w, h = face_scene["box"]
    m = face_scene["dir"] / "shards.jsonl"
    m.write_text(json.dumps({"id": "s", "path": "scene.png", "faces": [[x, y, w, h]]}) + "\n")
    with PoolEngine(1) as engine:
        add_sharded(tmp_path / "sharded", [FacesSource(m, "f")], engine, limits=DEFAULT_LIMITS, shard_size=1)
    add(tmp_path / "local", [FacesSource(m, "f")], workers=0)

    def entries(index):
        with IndexStore.open(index) as store:
            item = store.catalog.get_item("f", "s")
            rows = store.catalog.db.execute("SELECT kind, code, thumb FROM entries ORDER BY kind").fetchall()
            return item.extra, rows

    assert entries(tmp_path / "sharded") == entries(tmp_path / "local")
    assert [k for k, *_ in entries(tmp_path / "local")[1]] == ["face0", "full"]
