"""Taking opted-out images out of an index: by a person's photos (`remove --matching`) or a registry\n(`remove --registry`)."""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence
import numpy as np
from matcher.hashing.detail import DEFAULT_MAX_MOTION
from matcher.imaging.images import DEFAULT_LIMITS, Limits
from matcher.hashing.verify import DEFAULT_MIN_SCORE
from matcher.optout.confirm import _confirm_tries
from matcher.optout.registry import MAX_TRIES, Registry


# --- honouring requests against an existing index ------------------------------------------------
def remove_matching(index_dir: str | os.PathLike, photos: Sequence[str | os.PathLike], *, threshold: int | None = None,
                    min_score: float = DEFAULT_MIN_SCORE, max_motion: float | None = DEFAULT_MAX_MOTION,
                    workers: int | None = None, limits: Limits = DEFAULT_LIMITS) -> tuple[list, list]:
    """Search ``photos`` in the index exactly as ``matcher search`` does (verification included; ``threshold``
    None is search's default) and remove every item that matched (tombstones, as
    :meth:`IndexStore.remove_items`). Returns ``(search results, removed)``: ``removed`` is
    ``[(Match, query photo)]``, one per item.
    """
    from matcher.engine.api import DEFAULT_THRESHOLD as SEARCH_THRESHOLD
    from matcher.engine.api import search
    from matcher.index.store import IndexStore

    with IndexStore.open(index_dir, writable=True) as store:
        results = list(search(store, photos, threshold=SEARCH_THRESHOLD if threshold is None else threshold,
                              min_score=min_score, max_motion=max_motion, workers=workers, limits=limits))
        removed = _remove(store, ((m.item, (m, r.query)) for r in results for m in r.matches))
    return results, removed


def remove_registered(index_dir: str | os.PathLike, registry: Registry, *, limits: Limits = DEFAULT_LIMITS,
                      local_files: bool = True) -> tuple[list, list]:
    """Remove every item of the index that matches an entry of ``registry`` (tombstones).

    Each registry entry's codes are searched in the index (within ``registry.threshold``); a candidate
    is confirmed as :func:`screen_entries` confirms a dataset image, on the dataset image itself when it
    is a local file that still hashes as indexed (and ``local_files``), else on the entry's 64x64
    verification thumbnail. Returns ``(removed, unconfirmed)``: ``[(Item, Hit)]`` each; an item with
    neither file nor thumbnail cannot be confirmed and is not removed.
    """
    from matcher.errors import IndexMismatch
    from matcher.index.store import IndexStore
    from matcher.hashing.verify import decode_thumb
    from matcher.pipeline.photo import dataset_region

    with IndexStore.open(index_dir, writable=True) as store:
        if store.hasher.identity() != registry.hasher:
            raise IndexMismatch(f"index {index_dir} was built with hasher {store.hasher.identity()}; the registry's "
                                f"codes are {registry.hasher}")
        matched: dict[int, tuple] = {}
        unconfirmed: dict[int, tuple] = {}
        for e in registry.entries:
            codes = np.frombuffer(b"".join(c.hash for c in e.codes), np.uint8).reshape(len(e.codes), 8)
            tries: dict[int, list] = {}
            items = {}
            for c, row in zip(e.codes, store.search_codes(codes, registry.threshold)):
                for item, kind, d, thumb in row:
                    if item.id in matched:
                        continue
                    items[item.id] = item
                    tries.setdefault(item.id, []).append((d, c, kind, thumb))
            for item_id, ts in tries.items():
                ts.sort(key=lambda t: (t[0], "/rot" in t[1].kind, t[1].kind, t[2]))
                item = items[item_id]
                thumbs = {kind: thumb for _, _, kind, thumb in ts}

                def region(kind: str, item=item, thumbs=thumbs) -> np.ndarray | str:
                    why = "dataset image not available locally"
                    if local_files and item.path and os.path.isfile(item.path):
                        px = dataset_region(store.hasher, item.path, kind, item.hash, limits)
                        if not isinstance(px, str):
                            return px
                        why = px
                    if thumbs.get(kind) is not None:
                        return decode_thumb(thumbs[kind])
                    return why

                refs = [(d, c.kind, np.unpackbits(np.frombuffer(c.confirm, np.uint8)).astype(bool), kind)
                        for d, c, kind, _ in ts[:MAX_TRIES]]
                hit = _confirm_tries(refs, region, registry.confirm_threshold, e.id, {})
                if hit.confirmed:
                    matched[item_id] = (item, hit)
                    unconfirmed.pop(item_id, None)
                elif item_id not in unconfirmed:
                    unconfirmed[item_id] = (item, hit)
        removed = _remove(store, ((item, (item, hit)) for item, hit in matched.values()))
    return removed, list(unconfirmed.values())


def _remove(store, pairs: Iterable[tuple[Any, Any]]) -> list:
    """Remove each item of ``(item, payload)`` once (grouped by dataset); the payloads of those removed."""
    by_dataset: dict[str, dict[str, Any]] = {}
    for item, payload in pairs:
        by_dataset.setdefault(item.dataset, {}).setdefault(item.key, payload)
    out = []
    for dataset in sorted(by_dataset):
        keys = by_dataset[dataset]
        store.remove_items(dataset=dataset, keys=sorted(keys))
        out += [keys[k] for k in sorted(keys)]
    return out
