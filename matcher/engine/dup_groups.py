"""Duplicate groups: the links found between items, union-find components, and the groups as CSV/JSON rows."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence
from matcher.results import Item


#: Columns of the CSV output, one row per item in a group.
CSV_COLUMNS = ["group", "group_size", "item_id", "dataset", "key", "url", "page_url", "owner", "distance", "score",
               "motion", "kinds", "variant", "verified_by", "linked_to", "hops"]
#: how a file written by ``matcher duplicates --out`` starts (CSV header, or a JSON Lines group)
SIGNATURES = (",".join(CSV_COLUMNS), '{"group": ')


# --- records -----------------------------------------------------------------------------
@dataclass
class Link:
    """A candidate pair of items and what verifying it found."""

    a: int  # item ids, a < b
    b: int
    distance: int  # Hamming distance of the try that decided (the nearest when none verified)
    score: float | None = None  # thumbnail verification score; None: not verified on pixels
    motion: float | None = None  # full-detail residual motion, when measured
    kind_a: str = ""  # entry kinds of a and b in the deciding try
    kind_b: str = ""
    variant: str = "id/full"  # the edit applied to the ``varied`` item's thumbnail
    varied: int = 0  # the item whose thumbnail/code was the query
    verified_by: str = ""  # "thumbnails", "thumbnails+detail", "distance"; "" when rejected
    detail: str | None = None  # why the full-detail check did not run / how it refused

    @property
    def verified(self) -> bool:
        return bool(self.verified_by)

    def kind_of(self, item_id: int) -> str:
        return self.kind_a if item_id == self.a else self.kind_b

    def other(self, item_id: int) -> int:
        return self.b if item_id == self.a else self.a

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"a": self.a, "b": self.b, "distance": self.distance,
                               "kinds": f"{self.kind_a}~{self.kind_b}", "variant": self.variant,
                               "varied": self.varied, "verified_by": self.verified_by}
        if self.score is not None:
            out["score"] = round(self.score, 4)
        if self.motion is not None:
            out["motion"] = round(self.motion, 3)
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class Member:
    """An item of a group, with the verified link that joined it (None for the representative)."""

    item: Item
    distance: int  # to the representative (see group_rows)
    hops: int = 0
    link: Link | None = None

    @property
    def linked_to(self) -> int | None:
        return None if self.link is None else self.link.other(self.item.id)


@dataclass
class Group:
    id: int  # the representative's item id
    members: list[Member]  # sorted by item id: the representative first
    links: list[Link]  # every verified link between members

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class DuplicateStats:
    entries: int = 0  # live entries searched (queries' owners)
    queries: int = 0  # codes range-searched (entries x variants)
    hits: int = 0  # raw hits kept (other items, in scope)
    pairs: int = 0  # candidate item pairs
    verified: int = 0
    distance_only: int = 0  # of them, paired on distance alone (no thumbnails)
    rejected: int = 0
    rejected_motion: int = 0  # of them, refused by the full-detail check
    load_s: float = 0.0
    search_s: float = 0.0
    verify_s: float = 0.0
    verify_cpu_s: float = 0.0  # CPU time of verification, in whichever processes it ran
    elapsed: float = 0.0


@dataclass
class DuplicateReport:
    groups: list[Group]
    stats: DuplicateStats
    settings: dict[str, Any] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)  # every candidate pair, verified or not


# --- grouping ------------------------------------------------------------------------------
class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        p = self.parent.setdefault(x, x)
        while p != x:
            self.parent[x] = self.parent.setdefault(p, p)
            x, p = p, self.parent[p]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the lowest id is the root


def components(links: Sequence[Link]) -> list[tuple[int, dict[int, tuple[int, Link | None]], list[Link]]]:
    """The groups the verified ``links`` make (union-find), by representative (lowest item id):
    ``(representative, {item: (hops, link that reached it)}, the group's verified links)``.

    Each member's link is found breadth-first from the representative (links in order of the other
    end's id, so the result does not depend on the order the search found them): ``hops`` 1 means
    verified against the representative itself, more means reached through other members (chaining).
    """
    uf = _UnionFind()
    verified = [lk for lk in links if lk.verified]
    adj: dict[int, list[Link]] = {}
    for lk in verified:
        uf.union(lk.a, lk.b)
        adj.setdefault(lk.a, []).append(lk)
        adj.setdefault(lk.b, []).append(lk)
    links_of: dict[int, list[Link]] = {}
    for lk in verified:
        links_of.setdefault(uf.find(lk.a), []).append(lk)
    out = []
    for rep in sorted(links_of):
        reached: dict[int, tuple[int, Link | None]] = {rep: (0, None)}
        todo = deque([rep])
        while todo:
            x = todo.popleft()
            for lk in sorted(adj[x], key=lambda lk: lk.other(x)):
                y = lk.other(x)
                if y not in reached:
                    reached[y] = (reached[x][0] + 1, lk)
                    todo.append(y)
        out.append((rep, dict(sorted(reached.items())), sorted(links_of[rep], key=lambda lk: (lk.a, lk.b))))
    return out


# --- output --------------------------------------------------------------------------------
def group_rows(group: Group) -> list[dict[str, Any]]:
    """The CSV rows of a group (:data:`CSV_COLUMNS`), one per item, the representative first.

    ``distance``: Hamming distance to the representative: the search's own (over their entries and the
    edits searched) when the two were paired, else the smallest between their stored entries (then
    possibly above the threshold: a member reached through others). ``score``, ``motion``, ``kinds``
    (this item's entry kind ~ the linked item's), ``variant`` (the edit of one side's thumbnail that
    matched, ``this:`` or ``linked:``) and ``verified_by`` describe the link to ``linked_to``.
    """
    rows = []
    for m in group.members:
        it, lk = m.item, m.link
        row: dict[str, Any] = {
            "group": group.id, "group_size": group.size, "item_id": it.id, "dataset": it.dataset, "key": it.key,
            "url": it.url or "", "page_url": it.page_url or "", "owner": it.owner or "", "distance": m.distance,
            "score": "", "motion": "", "kinds": "", "variant": "", "verified_by": "representative",
            "linked_to": "", "hops": m.hops,
        }
        if lk is not None:
            other = lk.other(it.id)
            row.update(
                score="" if lk.score is None else f"{lk.score:.4f}",
                motion="" if lk.motion is None else f"{lk.motion:.3f}",
                kinds=f"{lk.kind_of(it.id)}~{lk.kind_of(other)}",
                variant=f"{'this' if lk.varied == it.id else 'linked'}:{lk.variant}",
                verified_by=lk.verified_by, linked_to=other,
            )
        rows.append(row)
    return rows


def group_json(group: Group) -> dict[str, Any]:
    """One JSON object per group: its members (CSV fields plus path, licence, title) and every verified link."""
    items = []
    for m, row in zip(group.members, group_rows(group)):
        it = m.item
        d = {k: row[k] for k in CSV_COLUMNS if k not in ("group", "group_size")}
        d.update(path=it.path, license=it.license, title=it.title)
        for k in ("score", "motion"):
            d[k] = None if d[k] == "" else float(d[k])
        for k in ("url", "page_url", "owner", "kinds", "variant", "linked_to"):
            d[k] = d[k] or None
        items.append(d)
    return {"group": group.id, "size": group.size, "datasets": sorted({m.item.dataset for m in group.members}),
            "items": items, "links": [lk.to_json() for lk in group.links]}


def write_csv(groups: Sequence[Group], out) -> int:
    import csv

    w = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    n = 0
    for g in groups:
        for row in group_rows(g):
            w.writerow(row)
            n += 1
    return n


def write_jsonl(groups: Sequence[Group], out) -> int:
    import json

    for g in groups:
        out.write(json.dumps(group_json(g), sort_keys=False) + "\n")
    return len(groups)
