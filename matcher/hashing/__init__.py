"""Hashes and what compares them: the 64-bit hash value type, the hashers, verification of a candidate on
aligned pixels (thumbnails) and the full-detail check against the dataset file."""
