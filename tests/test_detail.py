"""The full-detail check: consecutive video frames are refused, copies at full detail are not.

Real frames (tests/data/frames: OpenCV's rubberwhale and basketball sequences) and real
photos from the sample, a real index, the real search.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from matcher.hashing.detail import DEFAULT_MAX_MOTION, residual_motion
from matcher.engine.api import add, search
from matcher.ingest.sources import FolderSource
from matcher.index.store import IndexStore

FRAMES = Path(__file__).parent / "data" / "frames"
SCENES = ("rubberwhale", "basketball")


def _gray(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p).convert("L"))


def _jpeg(img: Image.Image, q: int) -> Image.Image:
    b = io.BytesIO()
    img.save(b, "JPEG", quality=q)
    return Image.open(io.BytesIO(b.getvalue()))


def _copies(img: Image.Image) -> dict[str, Image.Image]:
    """Edits that keep every pixel where it was (up to a global affine motion)."""
    w, h = img.size
    return {
        "jpeg_q25": _jpeg(img, 25),
        "blur": img.filter(ImageFilter.GaussianBlur(1.2)),
        "contrast": ImageEnhance.Contrast(img).enhance(1.6),
        "resize_80": img.resize((round(w * 0.8), round(h * 0.8)), Image.Resampling.LANCZOS),
        "crop_5": img.crop((round(w * 0.05), round(h * 0.05), w, h)),
        "stretch": img.resize((w, round(h * 1.25)), Image.Resampling.BICUBIC),
    }


@pytest.mark.parametrize("scene", SCENES)
def test_next_frame_shows_motion_a_copy_does_not(scene):
    a, b = _gray(FRAMES / f"{scene}-a.jpg"), _gray(FRAMES / f"{scene}-b.jpg")
    assert residual_motion(a, b) > DEFAULT_MAX_MOTION
    assert residual_motion(b, a) > DEFAULT_MAX_MOTION
    img = Image.open(FRAMES / f"{scene}-b.jpg").convert("L")
    for name, copy in _copies(img).items():
        m = residual_motion(np.asarray(img), np.asarray(copy))
        assert m is not None and m <= DEFAULT_MAX_MOTION / 2, (name, m)


def test_copies_of_real_photos_show_no_motion(sample):
    for p in sorted((sample / "my-photos").iterdir())[:6]:
        img = Image.open(p).convert("L")
        img.thumbnail((640, 640))
        for name, copy in _copies(img).items():
            m = residual_motion(np.asarray(img), np.asarray(copy))
            assert m is None or m <= DEFAULT_MAX_MOTION, (p.name, name, m)


def test_too_small_or_flat_is_no_verdict():
    a = _gray(FRAMES / "rubberwhale-a.jpg")
    small = np.asarray(Image.fromarray(a).resize((200, 133)))
    assert residual_motion(small, small) is None  # 200 px cannot show a pixel of motion
    flat = np.full((400, 600), 128, np.uint8)
    assert residual_motion(flat, flat) is None


@pytest.fixture(scope="module")
def frames_index(tmp_path_factory):
    """An index of the second frame of each scene and a recompressed, mirrored copy of it."""
    root = tmp_path_factory.mktemp("frames")
    ds = root / "dataset"
    ds.mkdir()
    for s in SCENES:
        b = Image.open(FRAMES / f"{s}-b.jpg")
        (ds / f"{s}-b.jpg").write_bytes((FRAMES / f"{s}-b.jpg").read_bytes())
        b.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(ds / f"{s}-b-mirror-q40.jpg", quality=40)
    add(root / "index", [FolderSource(ds, "frames")], workers=0)
    return root


def test_search_refuses_the_next_frame_and_finds_copies(frames_index):
    queries = [FRAMES / f"{s}-a.jpg" for s in SCENES] + [FRAMES / f"{s}-b.jpg" for s in SCENES]
    with IndexStore.open(frames_index / "index") as store:
        results = {Path(r.query).name: r for r in search(store, queries, workers=0, report_rejected=True)}
        checked = {Path(r.query).name: r for r in search(store, queries, workers=0, max_motion=None)}
    for s in SCENES:
        # the thumbnails alone accept the other frame (that is why the check exists) ...
        assert {m.item.key for m in checked[f"{s}-a.jpg"].matches} == {f"{s}-b.jpg", f"{s}-b-mirror-q40.jpg"}
        # ... the full-detail check refuses it, with the motion as evidence
        other = results[f"{s}-a.jpg"].matches
        assert other and all(not m.evidence["verified"] for m in other)
        assert all(m.evidence["score"] >= m.evidence["min_score"] for m in other)
        assert all(m.evidence["motion"] > m.evidence["max_motion"] for m in other)
        # the frame itself and its edited copy are found, having passed the check
        same = results[f"{s}-b.jpg"].matches
        assert {m.item.key for m in same} == {f"{s}-b.jpg", f"{s}-b-mirror-q40.jpg"}
        assert all(m.evidence["verified"] and m.evidence["motion"] <= DEFAULT_MAX_MOTION for m in same)


def test_a_replaced_dataset_file_falls_back_to_the_thumbnails(frames_index, tmp_path):
    """If the file behind an item changed since indexing, it is not evidence: the check says so and does not run."""
    target = frames_index / "dataset" / "rubberwhale-b.jpg"
    saved = target.read_bytes()
    try:
        Image.open(FRAMES / "basketball-a.jpg").save(target, quality=90)
        with IndexStore.open(frames_index / "index") as store:
            (r,) = search(store, [FRAMES / "rubberwhale-b.jpg"], workers=0)
        by_key = {m.item.key: m for m in r.matches}
        assert by_key["rubberwhale-b.jpg"].evidence["detail"] == "dataset image changed since it was indexed"
        assert "motion" in by_key["rubberwhale-b-mirror-q40.jpg"].evidence
    finally:
        target.write_bytes(saved)
