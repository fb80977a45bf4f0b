"""The local-feature tier (issue 17): partial and geometric copies found by ORB keypoints, verified by pixels.

Real photos of the sample, real FAISS, real SQLite. Copies the 64-bit codes cannot find (a corner
crop, a photo framed on a blurred fill, a rotation by an arbitrary angle, a perspective tilt, a photo
pasted on a background) are found through ``matcher add --local-features``, while different shots of
one scene (a stereo pair, two cabinets photographed alike) stay refused. Photos with transparency
are matched whichever way the dataset flattened them.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matcher.engine.api import add, search
from matcher.hashing.local_features import INDEX_FEATURES, extract, fit_homography, to_pixels, warp_score
from matcher.hashing.verify import thumb_array
from matcher.imaging import transforms as T
from matcher.imaging.images import load_image
from matcher.index.local import DESC, META, LocalIndex
from matcher.index.store import IndexStore
from matcher.ingest.sources import FolderSource

GEOMETRIC = ["crop_corner", "fill_blur_square", "rotate_any", "perspective"]
PHOTOS = ["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0005.jpg"]


def _rgb(path: Path) -> Image.Image:
    img = load_image(path).image.convert("RGB")
    img.thumbnail((1000, 1000))
    return img


@pytest.fixture(scope="module")
def geometric(tmp_path_factory, sample):
    """Seeded geometric copies of three sample photos + the sample dataset (its stereo right view and twin
    cabinets among them), indexed with and without the local-feature tier, searched with the originals
    and the stereo left view."""
    root = tmp_path_factory.mktemp("local")
    copies = root / "copies"
    copies.mkdir()
    for i, name in enumerate(PHOTOS):
        img = _rgb(sample / "my-photos" / name)
        for t in GEOMETRIC:
            (copies / f"{t}--{name}.jpg").write_bytes(T.apply(t, img, np.random.default_rng([17, i, len(t)])))
    queries = [sample / "my-photos" / n for n in PHOTOS] + [sample / "my-photos" / "IMG_0007.jpg"]
    out = {}
    for tier in (True, False):
        index = root / f"index-{tier}"
        add(index, [FolderSource(copies, "copies"), FolderSource(sample / "dataset", "sample")], workers=0,
            local_features=tier)
        with IndexStore.open(index) as store:
            out[tier] = {Path(r.query).name: r for r in search(store, queries, workers=0)}
    return out


def test_geometric_copies_are_found_through_local_features(geometric):
    found = {(q, m.item.key) for q, r in geometric[True].items() for m in r.matches if m.item.dataset == "copies"}
    want = {(n, f"{t}--{n}.jpg") for n in PHOTOS for t in GEOMETRIC}
    assert len(found & want) >= 0.9 * len(want), sorted(want - found)
    # every match is a copy of the query, verified by pixels (never by keypoint counts alone)
    for q, r in geometric[True].items():
        for m in r.matches:
            if m.item.dataset == "copies":
                assert m.item.key.startswith(tuple(f"{t}--{q}" for t in GEOMETRIC)), (q, m.item.key)
            assert m.evidence["score"] >= m.evidence["min_score"]
            if m.evidence.get("via") == "local features":
                assert m.evidence["inliers"] >= 8 and "threshold" not in m.evidence
    # the 64-bit codes alone find far fewer of them: the tier is what finds them
    plain = {(q, m.item.key) for q, r in geometric[False].items() for m in r.matches if m.item.dataset == "copies"}
    assert len(plain & want) < len(found & want)
    assert any(m.evidence.get("via") == "local features" for r in geometric[True].values() for m in r.matches)


def test_the_stereo_view_still_matches_nothing(geometric):
    assert geometric[True]["IMG_0007.jpg"].matches == []


def test_keypoints_match_a_burst_frame_but_the_pixels_do_not_match_a_stereo_pair(sample):
    """Keypoints line up on a different shot of one scene as well as on a copy: only the pixel gate tells."""
    left = np.asarray(load_image(sample / "my-photos" / "IMG_0007.jpg").image.convert("L"))
    right = np.asarray(load_image(sample / "dataset" / "flickr_2389748543_4cc5e0.jpg").image.convert("L"))
    import cv2

    qxy, qd = extract(left, 500)
    dxy, dd = extract(right, INDEX_FEATURES)
    ms = [m for m in cv2.BFMatcher(cv2.NORM_HAMMING).match(qd, dd) if m.distance <= 64]
    fit = fit_homography(to_pixels(qxy[[m.queryIdx for m in ms]], left.shape[1], left.shape[0]),
                         dxy[[m.trainIdx for m in ms]])
    if fit is not None:
        score, _ = warp_score(left, fit[0], thumb_array(Image.fromarray(right)))
        assert score < 0.95


def test_the_tier_is_kept_committed_and_reopened(tmp_path, sample):
    """local.json commits what the data files hold; bytes beyond it (a killed append) are ignored and replaced."""
    ds = tmp_path / "ds"
    ds.mkdir()
    for n in PHOTOS:
        (ds / n).write_bytes((sample / "my-photos" / n).read_bytes())
    add(tmp_path / "index", [FolderSource(ds, "d")], workers=0, local_features=True)
    meta = json.loads((tmp_path / "index" / META).read_text())
    assert meta["images"] == 3 and 0 < meta["descriptors"] <= 3 * INDEX_FEATURES
    with open(tmp_path / "index" / DESC, "ab") as f:  # an append killed before its commit record
        f.write(b"\x01" * 100)
    tier = LocalIndex.open(tmp_path / "index")
    assert tier.index.ntotal == meta["descriptors"] and len(tier.images) == 3
    # a later add (the tier is kept without the flag) appends after the committed rows
    (ds / "more.jpg").write_bytes((sample / "my-photos" / "IMG_0008.jpg").read_bytes())
    add(tmp_path / "index", [FolderSource(ds, "d")], workers=0)
    meta2 = json.loads((tmp_path / "index" / META).read_text())
    assert meta2["images"] == 4
    assert (tmp_path / "index" / DESC).stat().st_size == meta2["descriptors"] * 32
    with IndexStore.open(tmp_path / "index") as store:
        (r,) = search(store, [sample / "my-photos" / "IMG_0008.jpg"], workers=0)
    assert [m.item.key for m in r.matches] == ["more.jpg"]


def test_a_transparent_photo_matches_copies_flattened_either_way(tmp_path, sample):
    """A logo-like PNG with transparency: the dataset flattened it onto black (convert("RGB")) or white;
    the person's PNG is found in both, and a black-flattened query finds the transparent dataset PNG."""
    img = _rgb(sample / "my-photos" / "IMG_0002.jpg")
    rgba = T.with_alpha(img, np.random.default_rng(3))
    mine = tmp_path / "mine.png"
    rgba.save(mine)
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "black.jpg").write_bytes(T.alpha_black(rgba, np.random.default_rng(0)))
    (ds / "white.jpg").write_bytes(T.alpha_white(rgba, np.random.default_rng(0)))
    add(tmp_path / "index", [FolderSource(ds, "d")], workers=0)
    with IndexStore.open(tmp_path / "index") as store:
        (r,) = search(store, [mine], workers=0)
    assert sorted(m.item.key for m in r.matches) == ["black.jpg", "white.jpg"]
    # the other way round: the dataset holds the transparent PNG, the person a copy flattened on black
    ds2 = tmp_path / "ds2"
    ds2.mkdir()
    (ds2 / "logo.png").write_bytes(mine.read_bytes())
    add(tmp_path / "index2", [FolderSource(ds2, "d")], workers=0)
    with IndexStore.open(tmp_path / "index2") as store:
        kinds = [k for (k,) in store.catalog.db.execute("SELECT kind FROM entries")]
        (r,) = search(store, [ds / "black.jpg"], workers=0)
    assert "black" in kinds
    assert [m.item.key for m in r.matches] == ["logo.png"]


def test_cli_add_local_features(tmp_path, sample):
    ds = tmp_path / "ds"
    ds.mkdir()
    img = _rgb(sample / "my-photos" / "IMG_0005.jpg")
    (ds / "corner.jpg").write_bytes(T.apply("crop_corner", img, np.random.default_rng(5)))
    (ds / "tilted.jpg").write_bytes(T.apply("rotate_any", img, np.random.default_rng(5)))
    index = tmp_path / "index"
    run = [sys.executable, "-m", "matcher"]
    p = subprocess.run(run + ["add", "--index", str(index), "--dataset", "d", "--local-features", "--workers", "0",
                              str(ds)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(run + ["search", "--index", str(index), "--json", "--workers", "0",
                              str(sample / "my-photos" / "IMG_0005.jpg")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    keys = {m["key"]: m["evidence"] for r in rows for m in r["matches"]}
    assert set(keys) == {"corner.jpg", "tilted.jpg"}, keys
    assert keys["tilted.jpg"]["via"] == "local features"
    p = subprocess.run(run + ["add", "--index", str(tmp_path / "i2"), "--dataset", "d", "--local-features",
                              "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1", str(ds)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--local-features" in p.stderr


def test_extract_spreads_keypoints_and_is_bounded():
    a = np.asarray(Image.open(io.BytesIO(T.encode(Image.effect_noise((400, 300), 60).convert("RGB")))).convert("L"))
    xy, desc = extract(a, 96)
    assert len(xy) == len(desc) <= 96 and desc.dtype == np.uint8 and desc.shape[1] == 32
    assert (xy >= 0).all() and (xy <= 1).all()
    cells = {(int(x * 4), int(y * 4)) for x, y in xy}
    assert len(cells) >= 12  # spread over the 4x4 grid, not piled in one textured corner
