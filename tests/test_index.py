"""The FAISS binary index against a brute-force oracle."""

import numpy as np
import pytest

from matcher.errors import InvalidHash
from matcher.index import BinaryIndex


def flip_bits(code: np.ndarray, k: int, rng) -> np.ndarray:
    bits = np.unpackbits(code)
    idx = rng.choice(bits.size, k, replace=False)
    bits[idx] ^= 1
    return np.packbits(bits)


def brute_force(db_ids, db_codes, q, t):
    d = np.unpackbits(np.bitwise_xor(db_codes, q), axis=1).sum(axis=1)
    keep = d <= t
    return dict(zip(db_ids[keep].tolist(), d[keep].tolist()))


@pytest.mark.parametrize("bits", [64, 256])
def test_range_search_equals_brute_force_at_exact_distances(bits):
    rng = np.random.default_rng(7)
    t = 8 if bits == 64 else 31
    queries = rng.integers(0, 256, (20, bits // 8), dtype=np.uint8)
    codes, ids = [], []
    next_id = 1000
    for q in queries:  # plant neighbours at every distance from 0 to t+2, including exactly t and t+1
        for k in range(0, t + 3):
            codes.append(flip_bits(q, k, rng))
            ids.append(next_id)
            next_id += 7
    codes += list(rng.integers(0, 256, (2000, bits // 8), dtype=np.uint8))
    ids += list(range(next_id, next_id + 2000))
    codes, ids = np.array(codes, dtype=np.uint8), np.array(ids, dtype=np.int64)
    index = BinaryIndex(bits)
    index.add(ids, codes)
    assert len(index) == len(ids)
    results = index.range_search(queries, t)
    for q, (got_ids, got_d) in zip(queries, results):
        want = brute_force(ids, codes, q, t)
        assert dict(zip(got_ids.tolist(), got_d.tolist())) == want
        assert t in want.values() and all(d <= t for d in want.values())
        assert list(got_d) == sorted(got_d)


def test_remove_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (500, 8), dtype=np.uint8)
    ids = np.arange(1, 501, dtype=np.int64) * 3
    index = BinaryIndex(64)
    index.add(ids, codes)
    assert index.remove(ids[:100]) == 100
    index.save(tmp_path / "i.faiss")
    assert [p.name for p in tmp_path.iterdir()] == ["i.faiss"]  # no temp file left
    loaded = BinaryIndex.load(tmp_path / "i.faiss", 64)
    assert sorted(loaded.ids().tolist()) == sorted(ids[100:].tolist())
    (got, d), = loaded.range_search(codes[200:201], 0)
    assert got.tolist() == [ids[200]] and d.tolist() == [0]
    (got, _), = loaded.range_search(codes[5:6], 0)
    assert ids[5] not in got.tolist()


def test_wrong_widths_are_refused(tmp_path):
    index = BinaryIndex(64)
    with pytest.raises(InvalidHash):
        index.add([1], np.zeros((1, 32), np.uint8))
    with pytest.raises(InvalidHash):
        index.range_search(np.zeros((1, 32), np.uint8), 4)
    index.add([1], np.zeros((1, 8), np.uint8))
    index.save(tmp_path / "x.faiss")
    with pytest.raises(Exception, match="64-bit codes, expected 256"):
        BinaryIndex.load(tmp_path / "x.faiss", 256)


def test_trailer_round_trip_and_absence(tmp_path):
    index = BinaryIndex(64)
    index.add([5, 9], np.zeros((2, 8), np.uint8))
    index.save(tmp_path / "a.faiss", {"index_id": "abc", "seq": 7, "count": 2})
    index.save(tmp_path / "b.faiss")
    a, b = BinaryIndex.load(tmp_path / "a.faiss", 64), BinaryIndex.load(tmp_path / "b.faiss", 64)
    assert a.trailer == {"index_id": "abc", "seq": 7, "count": 2} and b.trailer is None
    assert sorted(a.ids().tolist()) == sorted(b.ids().tolist()) == [5, 9]
