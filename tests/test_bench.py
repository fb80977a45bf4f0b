"""matcher bench on the bundled sample: reports are written, numbers are sane, copies are reproducible."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from matcher.imaging import transforms as T
from matcher.bench import (FACE_TRANSFORM, CopyRow, Query, Truth, plant_copies, same_scene_pairs, score,
                           sniff_ext)
from matcher.cli import main

TRANSFORMS = ["resize_256", "mirror", "crop_center_10", "caption"]  # benign, dihedral, crop, overlay


def _synthetic(path: Path, seed: int, size=(640, 480)) -> None:
    """A smooth random picture with some detail (not uniform), deterministic."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB")
    img = small.resize(size, Image.Resampling.BICUBIC)
    a = np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, (size[1], size[0], 3))
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=92)


def _digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "copies").rglob("*")) if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def extras(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench-extras")
    faces = root / "faces"
    faces.mkdir()
    _synthetic(faces / "person.jpg", 1)
    (faces / "boxes.csv").write_text("file,x,y,w,h\nperson.jpg,260,150,110,130\n")
    same = root / "same"
    same.mkdir()
    _synthetic(same / "kitchen-a.jpg", 2)
    _synthetic(same / "kitchen-b.jpg", 3)
    _synthetic(same / "lonely-a.jpg", 4)  # no b: not a pair
    return {"faces": faces, "same": same}


@pytest.fixture(scope="module")
def runs(sample, extras, tmp_path_factory):
    """The bench through the CLI, then its copy stage again with the same seed into another folder.

    (The second pass stops after the copies: the engine's search, most of a run's time, would
    add nothing to the check that the seeded copies are reproducible.)"""
    out1 = tmp_path_factory.mktemp("bench1")
    out2 = tmp_path_factory.mktemp("bench2")
    result = CliRunner().invoke(main, [
        "bench", str(sample / "my-photos"), "--distractors", str(sample / "dataset"), "--faces", str(extras["faces"]),
        "--same-scene", str(extras["same"]), "--out", str(out1), "--seed", "0", "--transforms", ",".join(TRANSFORMS),
        "--workers", "2", "--latency-sample", "2",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    planting = plant_copies(sample / "my-photos", out2, seed=0, transforms=TRANSFORMS, faces=extras["faces"],
                            workers=2)
    return {"out1": out1, "out2": out2, "planting": planting, "output": result.output}


def test_reports_written(runs):
    out = runs["out1"]
    for name in ("report.json", "report.md", "sweep.png", "manifest.csv"):
        assert (out / name).is_file(), name
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out / "sweep.png") as im:
        im.verify()
    md = (out / "report.md").read_text()
    assert "| transform | family | target | recall" in md and "baseline phash<=10 | baseline PDQ<=31 |" in md
    assert "resize_256" in runs["output"] and "PDQ <= 31" in runs["output"]  # the rich table was printed


def test_report_numbers(runs, sample):
    r = json.loads((runs["out1"] / "report.json").read_text())
    thresholds = r["engine"]["thresholds"]
    assert thresholds == list(range(17))
    assert set(r["engine"]["transform"]) == set(TRANSFORMS) | {FACE_TRANSFORM}
    for name, g in r["engine"]["transform"].items():
        assert len(g["recall"]) == len(thresholds)
        assert all(0.0 <= x <= 1.0 for x in g["recall"]), name
        assert g["recall"] == sorted(g["recall"]), "recall cannot drop as the threshold grows"
        for b in ("phash", "pdq"):
            rec = r["baselines"][b]["scores"]["transform"][name]["recall"][0]
            assert 0.0 <= rec <= 1.0
    for b, thr in (("phash", 10), ("pdq", 31)):
        assert r["baselines"][b]["threshold"] == thr
        assert isinstance(r["baselines"][b]["scores"]["overall"]["false_matches"][0], int)
    s = r["summary"]
    assert set(s["families"]) == {"benign", "dihedral", "crop", "overlay", "face"}
    assert 0.0 <= s["recall"] <= 1.0 and s["false_matches"] >= 0
    c = r["counts"]
    assert c["originals"] == 10 and c["non_members"] == 1 and c["members"] == 9
    assert c["faces"] == 1 and c["same_scene_pairs"] == 1 and c["distractors"] == len(list((sample / "dataset").iterdir()))
    assert c["queries"] == 10 + 1 + 1
    assert r["cost"]["entries_per_image"] >= 1.0 and r["cost"]["index_bytes_per_image"] > 0
    assert r["timing"]["search_per_photo_ms"] > 0 and r["timing"]["single_photo"]["n"] == 2
    assert r["index_recall"]["recall"] == 1.0  # a flat index finds every pair the exact scan finds
    assert r["parameters"]["seed"] == 0 and r["machine"]["cpus"]


def test_manifest_is_members_times_transforms(runs, sample):
    out = runs["out1"]
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "path", "original", "transform", "family"]
    r = json.loads((out / "report.json").read_text())
    originals = sorted(str(p.resolve()) for p in (sample / "my-photos").iterdir())
    copies = [row for row in rows if row["transform"] != FACE_TRANSFORM]
    members = {row["original"] for row in copies}
    assert len(members) == r["counts"]["members"] == len(originals) - 1
    assert len(copies) == len(members) * len(TRANSFORMS)
    assert {(row["original"], row["transform"]) for row in copies} == {(o, t) for o in members for t in TRANSFORMS}
    for row in rows:
        assert row["id"] == f"{row['transform']}/{row['path'].rsplit('/', 1)[1].split('.')[0]}"
        assert (out / row["path"]).is_file()
        data = (out / row["path"]).read_bytes()
        assert row["path"].endswith("." + sniff_ext(data))
        if row["transform"] != FACE_TRANSFORM:
            assert row["family"] == T.TRANSFORMS[row["transform"]].family
            assert row["id"] == f"{row['transform']}/{originals.index(row['original'])}"
    (face,) = [row for row in rows if row["transform"] == FACE_TRANSFORM]
    assert face["family"] == "face" and face["original"].endswith("person.jpg")
    held = set(originals) - members
    assert len(held) == 1
    non_member = [q for q in r["errors"]["query_errors"] if q["query"] in held]
    assert not non_member  # the held-out photo was queried (and readable)


def test_copies_reproducible(runs):
    d1, d2 = _digests(runs["out1"]), _digests(runs["out2"])
    assert len(d1) == 9 * len(TRANSFORMS) + 1
    assert d1 == d2
    assert (runs["out1"] / "manifest.csv").read_bytes() == (runs["out2"] / "manifest.csv").read_bytes()
    assert len(runs["planting"].rows) == len(d1)


def test_copies_depend_on_seed_not_on_subset(runs, sample, tmp_path):
    """Each copy's generator is keyed by (seed, photo, transform): a subset reproduces the same files,
    another seed changes the random edits."""
    p = plant_copies(sample / "my-photos", tmp_path / "a", seed=0, transforms=["caption"], workers=0)
    ref = _digests(runs["out1"])
    got = _digests(tmp_path / "a")
    assert got and all(ref[k] == v for k, v in got.items())
    assert len(p.rows) == 9
    q = plant_copies(sample / "my-photos", tmp_path / "b", seed=1, transforms=["caption"], workers=0, holdout=0)
    assert len(q.rows) == 10
    other = _digests(tmp_path / "b")
    assert any(other.get(k) != v for k, v in got.items())


def test_same_scene_pairs(extras):
    pairs = same_scene_pairs(extras["same"])
    assert [p[0] for p in pairs] == ["kitchen"]
    assert pairs[0][1].endswith("kitchen-a.jpg") and pairs[0][2].endswith("kitchen-b.jpg")


def test_score_counts_false_matches():
    rows = {"mirror/0": CopyRow("mirror/0", "copies/mirror/0.jpg", "/p/a.jpg", "mirror", "dihedral"),
            "mirror/1": CopyRow("mirror/1", "copies/mirror/1.jpg", "/p/b.jpg", "mirror", "dihedral")}
    truth = Truth(rows, {"scene": "/s/scene-a.jpg"})
    queries = [Query("/p/a.jpg", "member"), Query("/p/b.jpg", "member"), Query("/s/scene-a.jpg", "same-scene")]
    matches = [(0, "copies", "mirror/0", 3), (0, "copies", "mirror/1", 8), (0, "distractors", "x.jpg", 12),
               (2, "same-scene", "scene", 5)]
    groups = {"transform": {"mirror": ["mirror/0", "mirror/1"]}, "family": {"dihedral": ["mirror/0", "mirror/1"]}}
    s = score(matches, queries, truth, groups, [2, 5, 10, 16])
    g = s["transform"]["mirror"]
    assert g["recall"] == [0.0, 0.5, 0.5, 0.5]
    assert g["false_matches"] == [0, 0, 1, 1]
    assert s["overall"]["false_matches"] == [0, 1, 2, 3]
    assert s["overall"]["false_by_kind"] == {"copy-of-other-photo": [0, 0, 1, 1], "distractor": [0, 0, 0, 1],
                                             "same-scene-partner": [0, 1, 1, 1]}
    assert s["overall"]["same_scene_partner_matched"] == [0, 1, 1, 1]


def test_sniff_ext():
    img = Image.new("RGB", (8, 8), (10, 20, 30))
    assert sniff_ext(T.encode(img)) == "jpg"
    assert sniff_ext(T.encode(img, "PNG")) == "png"
    assert sniff_ext(T.encode(img, "WEBP", quality=50)) == "webp"
