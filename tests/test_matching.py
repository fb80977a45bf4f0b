"""Match quality on real photos: every family of copies is found, different shots never match.

A fixed set: the sample's originals (real photos), one seeded copy per transform each,
indexed with the sample's unrelated photos and its hard negatives (a stereo pair, two
cabinets photographed alike). Each family's recall must stay at or above its target
(matcher.imaging.transforms.TARGETS); any match between different photos fails.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from matcher.imaging.faces import detect_faces
from matcher.imaging.images import load_image
from matcher.engine.api import add, search
from matcher.ingest.sources import FolderSource, ManifestSource
from matcher.index.store import IndexStore
from matcher.imaging.transforms import TARGETS, TRANSFORMS, apply, face_crop

#: The families this fixed set checks (the second-round classes, which need the local-feature tier, are
#: checked by tests/test_local_features.py).
FAMILIES = ("benign", "dihedral", "geometric", "crop", "overlay", "face")
ORIGINALS = ["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg", "IMG_0004.png", "IMG_0005.jpg", "IMG_0006.jpg",
             "IMG_0008.jpg", "IMG_0009.jpg"]
FACE_PHOTO = "IMG_0009.jpg"  # the astronaut portrait (NASA, public domain)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, sample):
    """An index of seeded copies of the originals + the sample dataset (distractors and hard negatives)."""
    root = tmp_path_factory.mktemp("quality")
    copies = root / "copies"
    copies.mkdir()
    rows = []
    for i, name in enumerate(ORIGINALS):
        img = load_image(sample / "my-photos" / name).image.convert("RGB")
        for j, t in enumerate(TRANSFORMS):
            if TRANSFORMS[t].family not in FAMILIES:
                continue
            data = apply(t, img, np.random.default_rng([7, i, j]))
            ext = {b"\xff\xd8": "jpg", b"\x89P": "png", b"RI": "webp"}[data[:2]]
            f = copies / f"{t}-{i}.{ext}"
            f.write_bytes(data)
            rows.append({"id": f"{t}/{name}", "path": str(f), "family": TRANSFORMS[t].family, "original": name})
    # face crops: another detector's box, another margin: seeded jitter around our detection
    img = load_image(sample / "my-photos" / FACE_PHOTO).image.convert("RGB")
    small = img.copy()
    small.thumbnail((512, 512))
    (x, y, w, h), *_ = detect_faces(np.asarray(small.convert("L")))
    k = img.width / small.width
    box = (round(x * k), round(y * k), round(w * k), round(h * k))
    for s in range(5):
        f = copies / f"face-{s}.jpg"
        f.write_bytes(face_crop(img, box, np.random.default_rng([11, s])))
        rows.append({"id": f"face/{s}", "path": str(f), "family": "face", "original": FACE_PHOTO})
    manifest = root / "copies.csv"
    with open(manifest, "w", newline="") as fp:
        wr = csv.DictWriter(fp, ["id", "path", "family", "original"])
        wr.writeheader()
        wr.writerows(rows)
    index = root / "index"
    add(index, [ManifestSource(manifest, "copies"), FolderSource(sample / "dataset", "sample")], workers=2)
    queries = [sample / "my-photos" / n for n in ORIGINALS] + [sample / "my-photos" / "IMG_0007.jpg"]
    with IndexStore.open(index) as store:
        results = {Path(r.query).name: r for r in search(store, queries, workers=2)}
    return rows, results


def _expected_sample(sample) -> dict[str, set[str]]:
    with open(sample / "expected.csv", newline="") as f:
        return {r["query"]: {k for k in r["expected_keys"].split(";") if k} for r in csv.DictReader(f)}


def _manifest_keys(sample) -> dict[str, str]:
    with open(sample / "manifest.csv", newline="") as f:
        return {Path(r["path"]).as_posix().split("/", 1)[1]: r["id"] for r in csv.DictReader(f)}


@pytest.mark.parametrize("family", sorted(f for f in TARGETS if f in FAMILIES))
def test_recall_per_family_meets_its_target(planted, family):
    rows, results = planted
    found = defaultdict(list)
    for row in rows:
        if row["family"] != family:
            continue
        r = results[row["original"]]
        assert r.error is None, r.error
        found[row["id"].split("/")[0]].append(any(m.item.dataset == "copies" and m.item.key == row["id"]
                                                  for m in r.matches))
    hits = [x for v in found.values() for x in v]
    assert hits, family
    recall = sum(hits) / len(hits)
    missed = sorted(t for t, v in found.items() for x in v if not x)
    assert recall >= TARGETS[family], f"{family}: recall {recall:.2f} < {TARGETS[family]} (missed: {missed})"


def test_no_match_is_ever_a_different_photo(planted, sample):
    """Every match is a copy of the query: planted copies of it, or its re-hosts in the sample dataset.
    IMG_0007 (left view of a stereo pair whose right view is in the dataset) matches nothing."""
    _, results = planted
    expected = _expected_sample(sample)
    keys = _manifest_keys(sample)
    for name, r in results.items():
        for m in r.matches:
            if m.item.dataset == "copies":
                assert m.item.key.endswith("/" + name) or (m.item.key.startswith("face/") and name == FACE_PHOTO), \
                    (name, m.item.key, m.evidence)
            else:
                assert keys[m.item.key] in expected[name], (name, m.item.key, m.evidence)
            assert m.evidence["score"] >= m.evidence["min_score"]
    assert results["IMG_0007.jpg"].matches == []


def test_different_shots_of_one_scene_never_match(sample, tmp_path):
    """The stereo pair and the twin cabinets, each way round, at the default settings and with a
    permissive hash threshold: the candidates are found by the hash and refused by verification."""
    pairs = [("IMG_0007.jpg", "flickr_2389748543_4cc5e0.jpg")]  # motorcycle left (my-photos) / right (dataset)
    keys = _manifest_keys(sample)
    cab = [p for p, k in keys.items() if k in ("ds-0019", "ds-0023")]
    assert len(cab) == 2
    pairs.append((cab[0], cab[1]))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for n, (a, b) in enumerate(pairs):
        src_a = sample / "my-photos" / a if (sample / "my-photos" / a).exists() else sample / "dataset" / a
        for side, src in (("a", src_a), ("b", sample / "dataset" / b)):
            (tmp_path / side / f"{n}{src.suffix}").write_bytes(src.read_bytes())
    add(tmp_path / "ia", [FolderSource(tmp_path / "a", "a")], workers=0)
    add(tmp_path / "ib", [FolderSource(tmp_path / "b", "b")], workers=0)
    for index, queries in ((tmp_path / "ib", tmp_path / "a"), (tmp_path / "ia", tmp_path / "b")):
        with IndexStore.open(index) as store:
            for threshold in (10, 16):
                loose = list(search(store, [queries], threshold=threshold, workers=0, report_rejected=True))
                assert all(r.error is None for r in loose)
                # the hash alone would call them the same photo ...
                assert sum(len(r.matches) for r in loose) >= 2
                # ... pixel verification does not
                assert all(not m.evidence["verified"] for r in loose for m in r.matches)
                assert all(m.evidence["score"] < m.evidence["min_score"] for r in loose for m in r.matches)


def test_a_byte_identical_copy_is_at_distance_zero_with_the_same_hash(sample, tmp_path):
    """The query's whole-photo code is computed exactly as the dataset side's, whatever the format."""
    ds = tmp_path / "ds"
    ds.mkdir()
    names = ["IMG_0001.jpg", "IMG_0004.png", "IMG_0009.jpg"]
    for n in names:
        (ds / n).write_bytes((sample / "my-photos" / n).read_bytes())
    add(tmp_path / "index", [FolderSource(ds, "copies")], workers=0)
    with IndexStore.open(tmp_path / "index") as store:
        results = list(search(store, [sample / "my-photos" / n for n in names], workers=0))
    for n, r in zip(names, results):
        (m,) = [m for m in r.matches if m.item.key == n]
        assert m.distance == 0 and m.evidence["variant"] == "id/full", (n, m.evidence)
        assert r.hash == m.item.hash, n


def test_query_orientations_in_numpy_are_the_regions_orientations():
    """The query side orients numpy arrays (workers._oriented); verification orients PIL images
    (regions.dihedral): both must give the same pixels for all 8 orientations."""
    from PIL import Image

    from matcher.imaging.regions import DIHEDRAL, dihedral
    from matcher.pipeline.photo import _oriented

    a = np.random.default_rng(0).integers(0, 256, (5, 7), dtype=np.uint8)
    for name in DIHEDRAL:
        assert np.array_equal(_oriented(a, name), np.asarray(dihedral(Image.fromarray(a), name))), name
