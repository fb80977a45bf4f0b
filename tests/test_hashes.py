import imagehash
import numpy as np
import pytest
from PIL import Image

from matcher import Hash, InvalidHash
def test_hex_round_trip_matches_imagehash(sample_photos):
    for p in sample_photos[:8]:
        ih = imagehash.phash(Image.open(p))
        h = Hash.from_imagehash(ih)
        assert str(h) == str(ih)
        assert Hash.from_hex(str(ih), 64) == h
        assert str(imagehash.hex_to_hash(h.hex())) == str(ih)


def test_distance_equals_imagehash_distance(sample_photos):
    ihs = [imagehash.phash(Image.open(p)) for p in sample_photos[:6]]
    hs = [Hash.from_imagehash(i) for i in ihs]
    for a, ha in zip(ihs, hs):
        for b, hb in zip(ihs, hs):
            assert ha.distance(hb) == (a - b) == (ha - hb)


def test_width_is_never_guessed():
    with pytest.raises(InvalidHash, match="64-bit hash has 16 hex digits"):
        Hash.from_hex("ff" * 32, 64)
    with pytest.raises(InvalidHash):
        Hash.from_hex("zz" * 8, 64)
    with pytest.raises(InvalidHash):
        Hash.from_hex("", 64)
    with pytest.raises(InvalidHash):
        Hash(b"\x00" * 8, 256)
    assert Hash.from_hex("0x" + "AB" * 8, 64).hex() == "ab" * 8


def test_different_widths_do_not_compare():
    with pytest.raises(InvalidHash, match="64-bit hash with a 256-bit"):
        Hash(b"\x00" * 8, 64).distance(Hash(b"\x00" * 32, 256))


def test_value_semantics():
    a = Hash.from_hex("00000000000000ff", 64)
    b = Hash.from_hex("0000000000000000", 64)
    assert a.distance(b) == 8
    assert {a, Hash.from_hex("00000000000000FF", 64)} == {a}
    assert a.to_numpy().dtype == np.uint8 and a.to_numpy().tolist() == [0] * 7 + [255]
    assert Hash.from_bits(a.to_bits()) == a
