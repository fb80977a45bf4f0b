"""The :class:`Hash` value type: a fixed-width bit string with hex round trip and Hamming distance.

Bit order follows imagehash: the hash's bits in row-major order, most significant
first, so ``Hash.from_hex(str(imagehash.phash(img)), 64)`` and ``str(h)`` round trip
with imagehash's hex strings. The width is always given, never guessed from a hex length.
No I/O here.
"""

from __future__ import annotations

import string

import numpy as np

from matcher.errors import InvalidHash

__all__ = ["Hash"]

_HEX = set(string.hexdigits)


class Hash:
    """An immutable perceptual hash of ``bits`` bits (a multiple of 8)."""

    __slots__ = ("_bits", "_data")

    def __init__(self, data: bytes, bits: int):
        if bits <= 0 or bits % 8:
            raise InvalidHash(f"hash width must be a positive multiple of 8 bits, got {bits}")
        data = bytes(data)
        if len(data) * 8 != bits:
            raise InvalidHash(f"{len(data) * 8}-bit value given for a {bits}-bit hash")
        self._bits = bits
        self._data = data

    # constructors -------------------------------------------------------
    @classmethod
    def from_hex(cls, text: str, bits: int) -> "Hash":
        if not isinstance(text, str):
            raise InvalidHash(f"hash must be a hex string, got {type(text).__name__}")
        s = text.strip().lower()
        if s.startswith("0x"):
            s = s[2:]
        if not s or any(c not in _HEX for c in s):
            raise InvalidHash(f"not a hex string: {text!r}")
        if len(s) * 4 != bits:
            raise InvalidHash(f"a {bits}-bit hash has {bits // 4} hex digits, got {len(s)} in {text!r}")
        return cls(bytes.fromhex(s), bits)

    @classmethod
    def from_bits(cls, bools) -> "Hash":
        """From an array of booleans in imagehash's order (any shape, flattened row-major)."""
        arr = np.asarray(bools, dtype=bool).ravel()
        return cls(np.packbits(arr).tobytes(), arr.size)

    @classmethod
    def from_imagehash(cls, ih) -> "Hash":
        return cls.from_bits(ih.hash)

    # accessors ----------------------------------------------------------
    @property
    def bits(self) -> int:
        return self._bits

    @property
    def data(self) -> bytes:
        return self._data

    def hex(self) -> str:
        return self._data.hex()

    def to_numpy(self) -> np.ndarray:
        """The packed bytes as a uint8 array: the FAISS binary code."""
        return np.frombuffer(self._data, dtype=np.uint8).copy()

    def to_bits(self) -> np.ndarray:
        return np.unpackbits(np.frombuffer(self._data, dtype=np.uint8)).astype(bool)

    def distance(self, other: "Hash") -> int:
        if not isinstance(other, Hash):
            raise InvalidHash(f"cannot compare a Hash with {type(other).__name__}")
        if other._bits != self._bits:
            raise InvalidHash(f"cannot compare a {self._bits}-bit hash with a {other._bits}-bit hash")
        return int.bit_count(int.from_bytes(self._data, "big") ^ int.from_bytes(other._data, "big"))

    __sub__ = distance

    # value semantics ----------------------------------------------------
    def __eq__(self, other) -> bool:
        return isinstance(other, Hash) and other._bits == self._bits and other._data == self._data

    def __hash__(self) -> int:
        return hash((self._bits, self._data))

    def __str__(self) -> str:
        return self.hex()

    def __repr__(self) -> str:
        return f"Hash({self.hex()!r}, bits={self._bits})"
