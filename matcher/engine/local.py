"""Candidates from the local-feature tier of an index, for one query photo (see :mod:`matcher.index.local`)."""

from __future__ import annotations

import numpy as np

from matcher.index.store import IndexStore
from matcher.pipeline.local import LocalCandidate
from matcher.pipeline.photo import QueryHashes
from matcher.results import Item

__all__ = ["local_candidates"]

#: Images the photo's keypoints vote for that are handed to verification (most votes first).
LOOKED_AT = 32


def _distance(a_hex: str, b_hex: str | None) -> int:
    if not b_hex or len(a_hex) != len(b_hex):
        return -1
    return int.bit_count(int(a_hex, 16) ^ int(b_hex, 16))


def local_candidates(store: IndexStore, q: QueryHashes, items: dict[int, Item]) -> list[LocalCandidate]:
    """The dataset images the photo's keypoints vote for, with what verifying them needs; their items are
    added to ``items`` (item id -> Item). Empty when the index has no local-feature tier."""
    if store.local is None or q.local is None or not len(q.local[1]):
        return []
    xy, desc = q.local
    # up to LOOKED_AT images: verify_all tries the first MAX_LOCAL the 64-bit path did not verify (a photo with many
    # plain copies in the dataset would otherwise fill every place with copies already verified)
    hits = store.search_local(desc, limit=LOOKED_AT)
    if not hits:
        return []
    found = store.catalog.items_for_entries([h.entry_id for h in hits])
    full = q.codes[0].tobytes().hex()
    out = []
    for h in hits:
        row = found.get(h.entry_id)
        if row is None:  # removed since (or a writer replaced it)
            continue
        item, kind, thumb = row
        items.setdefault(item.id, item)
        out.append(LocalCandidate(item.id, item.path, item.hash, kind, thumb, _distance(full, item.hash), h.votes,
                                  np.asarray(xy, np.float32)[h.query_idx], h.dataset_xy, item.extra.get("faces"),
                                  h.one_to_one))
    return out
