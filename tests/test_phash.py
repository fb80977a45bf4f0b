"""The default hasher is imagehash.phash, bit for bit, on the same decoded pixels."""

import imagehash
import numpy as np

from matcher import Hash
from matcher.hashing.hashers import PHash, get_hasher
from matcher.imaging.images import load_image


def test_bits_equal_imagehash_phash_on_real_photos(sample_photos):
    h = PHash(draft=None)
    assert len(sample_photos) >= 30
    for p in sample_photos:
        img = load_image(p).image
        assert h.hash_image(img) == Hash.from_imagehash(imagehash.phash(img)), p


def test_batch_equals_single(sample_photos):
    h = PHash()
    imgs = [load_image(p).image for p in sample_photos[:12]]
    batch = np.stack([h.pixels(i) for i in imgs])
    assert h.hash_pixels_batch(batch) == [h.hash_image(i) for i in imgs]


def test_draft_decoding_stays_within_a_few_bits(sample_photos):
    full, fast = PHash(draft=None), PHash(draft=128)
    diffs = [fast.hash_file(p).hash - full.hash_file(p).hash for p in sample_photos]
    # measured on the sample: most 0, max 4 (benchmarks/bench_hash_speed.py reports the distribution)
    assert max(diffs) <= 6
    assert sum(d == 0 for d in diffs) >= len(diffs) // 2


def test_hasher_identity_is_stable():
    h = get_hasher("phash")
    assert h.identity() == {"name": "phash", "bits": 64, "version": 1,
                            "params": {"hash_size": 8, "highfreq_factor": 4}}
