"""The candidate filter (matcher/index/filtercodes.py): 256-bit codes beside FAISS drop chance hits before the catalog.

A real index of the bundled sample; decoy items are recorded with the 64-bit code and the very thumbnail of a
real copy of a sample photo (so verification alone would accept them) but a filter code of another picture.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import catalog_sql
from matcher.index.catalog import ItemRecord
from matcher.index.filtercodes import (CHANCE_PER_PHOTO, FILTER_FILE, MAX_FILTER_THRESHOLD, VARIANTS_PER_PHOTO, FilterCodes,
                                 chance_rate, filter_threshold, hamming_rows)
from matcher.imaging.images import DEFAULT_LIMITS
from matcher.engine.api import _candidates, add, search
from matcher.ingest.open_source import open_source
from matcher.index.store import IndexStore
from matcher.pipeline.photo import HashSpec, query_batch

PHOTO = "IMG_0002.jpg"  # its copies in the sample dataset: ds-0007 and ds-0011
COPY = "ds-0007"


def test_chance_rate_is_the_binomial_tail_and_matches_random_codes():
    assert chance_rate(64, 64) == pytest.approx(1.0)
    assert chance_rate(64, 0) == 2.0 ** -64
    assert chance_rate(64, 10) == pytest.approx(1.0e-8, rel=0.01)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (400_000, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (400_000, 32), dtype=np.uint8)
    d = hamming_rows(a, b)
    assert d.mean() == pytest.approx(128, abs=0.1)
    for r in (104, 108, 112):  # rates ~1e-3..2e-2: measurable with 400k pairs
        assert (d <= r).mean() == pytest.approx(chance_rate(256, r), rel=0.15)


def test_threshold_tightens_as_the_index_grows_and_bounds_chance_survivors():
    sizes = [1e6, 1e7, 1e8, 1e9, 5.85e9]
    radii = [filter_threshold(int(n)) for n in sizes]
    assert radii == sorted(radii, reverse=True) and radii[0] > radii[-1]
    assert all(r <= MAX_FILTER_THRESHOLD for r in radii)
    for n, r in zip(sizes, radii):
        survivors = n * VARIANTS_PER_PHOTO * chance_rate(64, 10) * chance_rate(256, r)
        assert survivors <= CHANCE_PER_PHOTO
        if r < MAX_FILTER_THRESHOLD:  # the largest radius that keeps to the target
            assert n * VARIANTS_PER_PHOTO * chance_rate(64, 10) * chance_rate(256, r + 1) > CHANCE_PER_PHOTO


def test_filter_file_rows_are_aligned_by_entry_id_and_missing_rows_pass(tmp_path):
    f = FilterCodes(tmp_path / FILTER_FILE, writable=True)
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (3, 32), dtype=np.uint8)
    f.put([5, 6, 9], [c.tobytes() for c in codes])
    f.sync()
    r = FilterCodes(tmp_path / FILTER_FILE)
    got, has = r.get(np.array([9, 5, 6, 7, 1000]))
    assert has.tolist() == [True, True, True, False, False]
    assert (got[0] == codes[2]).all() and (got[1] == codes[0]).all()
    keep, d = r.keep(np.array([5, 7]), codes[0], radius=10)
    assert keep.tolist() == [True, True] and d.tolist() == [0, -1]  # 7 has no code: kept, not filtered
    keep, _ = r.keep(np.array([5]), codes[1], radius=10)
    assert keep.tolist() == [False]
    f.close(), r.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample) -> Path:
    d = tmp_path_factory.mktemp("filter") / "D"
    add(d, [open_source(str(sample / "manifest.csv"), "sample")], workers=0)
    return d


def test_add_writes_a_filter_code_per_entry(built):
    ids = [i for (i,) in catalog_sql(built, "SELECT id FROM entries")]
    codes, has = FilterCodes(built / FILTER_FILE).get(np.array(ids))
    assert has.all()
    assert (np.unpackbits(codes, axis=1).sum(axis=1) == 128).all()  # one bit per coefficient above the median


def test_decoy_with_a_far_filter_code_is_dropped_before_verification(built, tmp_path, sample):
    index = tmp_path / "D"
    shutil.copytree(built, index)
    ((code, thumb),) = catalog_sql(index, "SELECT entries.code, entries.thumb FROM entries JOIN items"
                                          " ON items.id = entries.item_id WHERE items.key = ? AND kind = 'full'", COPY)
    other = np.random.default_rng(2).integers(0, 256, 32, dtype=np.uint8).tobytes()
    with IndexStore.open(index, writable=True) as store:
        store.record([ItemRecord("decoys", "far-filter", hash_hex=code.hex(), codes=[("full", code, thumb, other)]),
                      ItemRecord("decoys", "no-filter", hash_hex=code.hex(), codes=[("full", code, thumb)])])
    with IndexStore.open(index) as store:
        (r,) = list(search(store, [sample / "my-photos" / PHOTO], workers=0))
        found = {m.item.key for m in r.matches}
        assert COPY in found and "no-filter" in found  # verification accepts the copy's pixels
        assert "far-filter" not in found
        spec = HashSpec.of(store.hasher, store.regions, DEFAULT_LIMITS)
        ((_, _, q),) = query_batch(spec, [str(sample / "my-photos" / PHOTO)])
        stages: dict = {}
        items, _ = _candidates(store, q, 10, stages)
        keys = {i.key for i in items.values()}
        assert "far-filter" not in keys and {"no-filter", COPY} <= keys
        assert stages["filtered"] < stages["hits"] and stages["unfiltered"] >= 1
        assert stages["filter_radius"] == MAX_FILTER_THRESHOLD  # a tiny index: the loosest filter
