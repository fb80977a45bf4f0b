"""Thumbnail tiers (``matcher add --thumbnails full|none``): an index of codes only, ~90 bytes an entry.

Without thumbnails a candidate is verified against the dataset image when it is a local file (or fetched from its
URL: tests/test_fetch_verify.py); when it is not, the match is reported unverified, saying why and what found it (never silently accepted). Real sample photos,
the real CLI in subprocesses.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import catalog_sql, run_matcher
from matcher.index.filtercodes import FILTER_FILE

PHOTO = "IMG_0002.jpg"  # its copies in the sample dataset: ds-0007 and ds-0011
COPIES = {"ds-0007", "ds-0011"}


def _search(index: Path, photo: Path, *flags: str) -> list[dict]:
    p = run_matcher("search", "--index", str(index), "--json", *flags, str(photo))
    assert p.returncode in (0, 1), p.stderr
    (r,) = [json.loads(line) for line in p.stdout.splitlines()]
    return r["matches"]


@pytest.fixture(scope="module")
def codes_only(tmp_path_factory, sample) -> tuple[Path, Path]:
    """An index of a copy of the sample dataset added with --thumbnails none (the copy can be taken away)."""
    root = tmp_path_factory.mktemp("tiers")
    shutil.copytree(sample / "dataset", root / "dataset")
    shutil.copy(sample / "manifest.csv", root / "manifest.csv")
    index = root / "index"
    run_matcher("add", "--index", str(index), "--thumbnails", "none", "--workers", "0", str(root / "manifest.csv"),
                check=True)
    return index, root / "dataset"


def test_codes_only_index_keeps_no_thumbnail_and_fits_in_120_bytes_an_entry(codes_only):
    index, _ = codes_only
    assert catalog_sql(index, "SELECT COUNT(*) FROM entries WHERE thumb IS NOT NULL") == [(0,)]
    (n,) = catalog_sql(index, "SELECT COUNT(*) FROM entries")[0]
    try:  # the entries table's pages (SQLite's dbstat), metadata (items) excluded
        (table,) = catalog_sql(index, "SELECT SUM(pgsize) FROM dbstat WHERE name IN ('entries', 'entries_item')")[0]
    except Exception as e:  # noqa: BLE001 - dbstat is a compile-time option of SQLite
        pytest.skip(f"SQLite without dbstat: {e}")
    per_entry = (table + (index / "index.faiss").stat().st_size + (index / FILTER_FILE).stat().st_size) / n
    assert per_entry <= 120 + 4096 * 2 / n  # a table's last pages are partly empty on a tiny index


def test_codes_only_match_is_verified_against_the_local_dataset_image(codes_only, sample):
    index, _ = codes_only
    matches = _search(index, sample / "my-photos" / PHOTO)
    assert {m["key"] for m in matches} == COPIES
    for m in matches:
        assert m["evidence"]["score"] >= m["evidence"]["min_score"] and "unverifiable" not in m["evidence"]


def test_codes_only_match_without_the_image_is_reported_unverified_with_the_filter_evidence(codes_only, sample,
                                                                                          tmp_path):
    index, dataset = codes_only
    moved = tmp_path / "gone"
    shutil.move(dataset, moved)
    try:
        # --no-fetch: the sample's URLs are on the internet (tests/test_fetch_verify.py fetches from a loopback server)
        matches = _search(index, sample / "my-photos" / PHOTO, "--no-fetch")
    finally:
        shutil.move(moved, dataset)
    assert COPIES <= {m["key"] for m in matches}
    for m in matches:
        ev = m["evidence"]
        assert ev["verified"] is False and "score" not in ev
        assert "--thumbnails none" in ev["unverifiable"] and "filter code" in ev["unverifiable"]
        assert "fetching is off" in ev["unverifiable"]


def test_full_tier_is_the_default_and_an_unknown_tier_is_refused(tmp_path, sample):
    p = run_matcher("add", "--index", str(tmp_path / "i"), "--thumbnails", "small", str(sample / "manifest.csv"))
    assert p.returncode == 2 and "small" in p.stderr
    assert not (tmp_path / "i").exists()


def test_sharded_add_keeps_the_tier_in_every_shard(tmp_path, sample):
    index = tmp_path / "sharded"
    run_matcher("add", "--index", str(index), "--sharded", "--shard-size", "12", "--workers", "1", "--thumbnails",
                "none", str(sample / "manifest.csv"), check=True)
    shards = [json.loads((index / "shards.json").read_text())["shards"]][0]
    assert len(shards) >= 2
    for s in shards:
        assert catalog_sql(index / s["path"], "SELECT COUNT(*) FROM entries WHERE thumb IS NOT NULL") == [(0,)]
        assert catalog_sql(index / s["path"], "SELECT COUNT(*) FROM entries")[0][0] > 0
    matches = _search(index, sample / "my-photos" / PHOTO)
    assert {m["key"] for m in matches} == COPIES
