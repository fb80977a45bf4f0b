"""Stage 3 of ``matcher bench``: what each match is (correct, false) and recall per transform and threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from matcher.bench.common import DATASET_COPIES, DATASET_DISTRACTORS, DATASET_SAME_SCENE
from matcher.bench.plant import COPY_KINDS, CopyRow



#: What a match between two versions of one photo is (an original and its transparent version's copy).
SAME_PHOTO = "same-photo-other-version"


class Truth:
    """What each index item is, and therefore whether a match is correct."""

    def __init__(self, rows: dict[str, CopyRow], pair_of_b: dict[str, str],
                 lookalikes: set[frozenset[str]] | None = None):
        self.rows = rows
        self.pair_of_b = pair_of_b  # same-scene b key -> its a's path
        self.lookalikes = lookalikes or set()  # pairs of query photos that are themselves near-identical
        # derived queries (a version of an original with transparency) -> that original: the same photo
        self.base = {r.original: r.base for r in rows.values() if r.base}

    def classify(self, query: str, dataset: str, key: str) -> tuple[bool, str]:
        """(correct?, kind): kind is the copy id when correct, else what the wrong item is."""
        if dataset == DATASET_COPIES:
            row = self.rows.get(key)
            if row is None:
                return False, "unknown-copy"
            if row.original == query:
                return True, key
            if self.base.get(row.original, row.original) == self.base.get(query, query):
                return False, SAME_PHOTO
            if frozenset((row.original, query)) in self.lookalikes:
                return False, "copy-of-lookalike-photo"
            return False, "copy-of-other-photo"
        if dataset == DATASET_DISTRACTORS:
            return False, "distractor"
        if dataset == DATASET_SAME_SCENE:
            return False, "same-scene-partner" if self.pair_of_b.get(key) == query else "same-scene-other"
        return False, "other"


@dataclass
class Query:
    path: str
    role: str  # member | non-member | face | same-scene


def score(
    matches: Iterable[tuple[int, str, str, int]],
    queries: Sequence[Query],
    truth: Truth,
    groups: dict[str, dict[str, list[str]]],
    thresholds: Sequence[int],
) -> dict[str, Any]:
    """Recall / false matches / precision at each threshold, per transform, per family and overall.

    ``matches``: (query index, dataset, key, distance), at most one per (query, item).
    ``groups``: {"transform": {name: [copy ids]}, "family": {name: [copy ids]}}.
    A false match to a copy is charged to that copy's transform and family; matches to
    distractors and same-scene items only to the totals.
    """
    best: dict[tuple[int, str, str], int] = {}
    for q, dataset, key, d in matches:
        k = (q, dataset, key)
        if k not in best or d < best[k]:
            best[k] = int(d)
    found: dict[str, int] = {}  # copy id -> distance at which its own photo found it
    false: list[tuple[int, str, str, str, int]] = []  # (query, dataset, key, kind, d)
    for (q, dataset, key), d in best.items():
        ok, kind = truth.classify(queries[q].path, dataset, key)
        if kind == SAME_PHOTO:  # another version of the query's own photo: neither found nor false
            continue
        if ok:
            found[kind] = min(d, found.get(kind, d))
        else:
            false.append((q, dataset, key, kind, d))
    nt = len(thresholds)
    tarr = np.asarray(thresholds)

    def at(ds: Iterable[int]) -> np.ndarray:
        ds = np.fromiter(ds, dtype=np.int64)
        return (ds[None, :] <= tarr[:, None]).sum(axis=1) if len(ds) else np.zeros(nt, np.int64)

    out: dict[str, Any] = {"thresholds": list(thresholds)}
    for level, members in groups.items():
        table = {}
        for name, ids in members.items():
            idset = set(ids)
            f_found = at(found[i] for i in ids if i in found)
            f_false = at(d for _, ds, key, kind, d in false
                         if kind in COPY_KINDS and key in idset)
            table[name] = {
                "planted": len(ids),
                "found": f_found.tolist(),
                "recall": [(x / len(ids)) if ids else None for x in f_found.tolist()],
                "false_matches": f_false.tolist(),
                "precision": [(a / (a + b)) if (a + b) else None for a, b in zip(f_found.tolist(), f_false.tolist())],
            }
        out[level] = table
    planted = sum(len(v) for v in groups.get("transform", {}).values())
    f_found = at(found.values())
    f_false = at(d for *_, d in false)
    kinds = sorted({k for _, _, _, k, _ in false})
    by_role: dict[str, list[int]] = {}
    for role in sorted({q.role for q in queries}):
        idx = {i for i, q in enumerate(queries) if q.role == role}
        hit = {}
        for q, _, _, _, d in false:
            if q in idx:
                hit[q] = min(d, hit.get(q, d))
        by_role[role] = {"queries": len(idx), "with_false_match": at(hit.values()).tolist()}
    partner_hits: dict[int, int] = {}
    for q, _, _, kind, d in false:
        if kind == "same-scene-partner":
            partner_hits[q] = min(d, partner_hits.get(q, d))
    out["overall"] = {
        "planted": planted,
        "found": f_found.tolist(),
        "recall": [(x / planted) if planted else None for x in f_found.tolist()],
        "false_matches": f_false.tolist(),
        "precision": [(a / (a + b)) if (a + b) else None for a, b in zip(f_found.tolist(), f_false.tolist())],
        "false_by_kind": {k: at(d for *_, kk, d in false if kk == k).tolist() for k in kinds},
        "queries_with_false_match_by_role": by_role,
        "same_scene_partner_matched": at(partner_hits.values()).tolist(),
    }
    out["_false"] = false  # for examples; removed before the report is written
    return out


def _hamming_matches(qcodes: list[bytes | None], icodes: list[bytes | None], labels: list[tuple[str, str]],
                     threshold: int) -> Iterator[tuple[int, str, str, int]]:
    """Brute-force range search: every (query, item) pair within ``threshold`` bits."""
    have = [k for k, c in enumerate(icodes) if c is not None]
    if not have:
        return
    nbytes = len(icodes[have[0]])
    items = np.frombuffer(b"".join(icodes[k] for k in have), dtype=np.uint8).reshape(len(have), nbytes)
    items = items.view(np.uint64) if nbytes % 8 == 0 else items
    for q, code in enumerate(qcodes):
        if code is None:
            continue
        qa = np.frombuffer(code, dtype=np.uint8)
        qa = qa.view(np.uint64) if nbytes % 8 == 0 else qa
        d = np.bitwise_count(items ^ qa[None, :]).sum(axis=1)
        for k in np.nonzero(d <= threshold)[0].tolist():
            ds, key = labels[have[k]]
            yield q, ds, key, int(d[k])


# --- the run ---------------------------------------------------------------------------
