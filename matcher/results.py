"""Plain result records shared by the engine, the reports and the CLI. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matcher.evidence import describe

__all__ = ["Item", "Match", "QueryResult"]

#: Where an item's ``extra`` holds its reservations (matcher.provenance.reservations.records.EXTRA_KEY).
_RESERVATIONS = "_reservations"


@dataclass
class Item:
    """One dataset image as the catalog knows it."""

    id: int
    dataset: str
    key: str
    url: str | None = None
    page_url: str | None = None
    path: str | None = None
    owner: str | None = None
    license: str | None = None
    title: str | None = None
    width: int | None = None
    height: int | None = None
    hash: str | None = None
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None
    added_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Match:
    """A dataset item that matched a query photo (or, with ``found_by="identity"``, an item listed under
    the searcher's Flickr identity that no photo matched: ``distance`` is then None)."""

    item: Item
    distance: int | None
    evidence: dict[str, Any] = field(default_factory=dict)
    found_by: str | None = None  # "content" | "identity" | "both", when the search joined identity with content

    def to_json(self) -> dict[str, Any]:
        it = self.item
        out = {
            "dataset": it.dataset,
            "key": it.key,
            "url": it.url,
            "page_url": it.page_url,
            "path": it.path,
            "owner": it.owner,
            "license": it.license,
            "title": it.title,
            "width": it.width,
            "height": it.height,
            "hash": it.hash,
            "distance": self.distance,
            "id": it.id,
        }
        out.update(describe({**self.evidence, "found_by": self.found_by}))  # "how" and "sure", in words
        if self.found_by is not None:
            out["found_by"] = self.found_by
        extra = it.extra
        reserved = extra.get(_RESERVATIONS) if extra else None
        if reserved is not None:  # reservations are evidence (matcher.provenance.reservations), shown there, not as extra
            extra = {k: v for k, v in extra.items() if k != _RESERVATIONS}
        if extra:
            out["extra"] = extra
        if self.evidence or reserved:
            out["evidence"] = {**self.evidence, **(reserved if isinstance(reserved, dict) else {})}
        return out


@dataclass
class QueryResult:
    """The answer for one query photo: its matches, or the error that stopped it being read.

    ``query`` None: not a photo but the items listed under the searcher's Flickr identity that no
    photo matched (:mod:`matcher.provenance.identities`)."""

    query: str | None
    matches: list[Match] = field(default_factory=list)
    error: str | None = None
    hash: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "hash": self.hash,
            "matches": [m.to_json() for m in self.matches],
            "error": self.error,
        }

