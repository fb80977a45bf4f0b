"""Identity joined with content: which dataset items a search found by content, by Flickr identity, or both.

A search by content finds the copies of a person's photos, under any URL; the catalog's identities
(:mod:`matcher.provenance.flickr`, ``Catalog.lookup``) find the photos listed under their Flickr account, even the
ones their folder does not hold and the ones whose link is dead. :class:`IdentityJoin` puts the two
answers together: each content match says ``found_by`` ``"content"`` or ``"both"``, and
:meth:`IdentityJoin.remainder` gives the items found by identity only, as a result whose ``query`` is
None.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from matcher.results import Item, Match, QueryResult

__all__ = ["IdentityJoin", "item_json", "NO_IDENTITIES"]

#: What to tell someone whose index was built before identities were recorded.
NO_IDENTITIES = ("this index records no Flickr identities (its catalog predates them), so nothing can be "
                 "found by identity: rebuild it, or open it writable once to backfill them "
                 "(`matcher compact --index {index}` does)")


def item_json(item: Item, identity: dict[str, Any] | None) -> dict[str, Any]:
    """One listed item for ``matcher lookup --json``: provenance, status (a failed item is a dead or
    unreadable link: still listed) and its Flickr identity."""
    return {
        "dataset": item.dataset, "key": item.key, "url": item.url, "page_url": item.page_url, "path": item.path,
        "owner": item.owner, "license": item.license, "title": item.title, "status": item.status,
        "error": item.error, "id": item.id, "flickr": identity,
    }


class IdentityJoin:
    """The items listed under a Flickr identity (an NSID and/or a user name), joined with a search's results.

    Reads the catalog once, when made (on the thread that owns it). With neither ``nsid`` nor ``name``
    nothing is listed and every match is found by content.
    """

    def __init__(self, catalog, *, nsid: str | None = None, name: str | None = None):
        self.nsid = nsid
        self.name = name
        self.active = bool(nsid or name)
        self.available = catalog.has_identities if self.active else True
        self.listed: list[Item] = catalog.lookup(owner_nsid=nsid, owner_name=name) if self.active else []
        self.identities = catalog.identities_of(it.id for it in self.listed) if self.listed else {}
        self._listed = {it.id for it in self.listed}
        self._found: set[int] = set()

    @property
    def label(self) -> str:
        """Who, in words: ``Flickr user jdoe (12345@N01)``."""
        parts = [p for p in (self.name, self.nsid) if p]
        if len(parts) == 2:
            return f"Flickr user {parts[0]} ({parts[1]})"
        return f"Flickr user {parts[0]}" if parts else "no Flickr user"

    def annotate(self, results: Iterable[QueryResult]) -> Iterator[QueryResult]:
        """Each result as it comes, its matches marked ``found_by`` "both" (listed under the identity too,
        with the identity in the evidence) or "content"."""
        for r in results:
            for m in r.matches:
                if m.item.id in self._listed:
                    m.found_by = "both"
                    m.evidence["identity"] = self.identities.get(m.item.id)
                    self._found.add(m.item.id)
                else:
                    m.found_by = "content"
            yield r

    @property
    def found_by_both(self) -> int:
        """Listed items that some photo also matched (so far)."""
        return len(self._found)

    def remainder(self) -> QueryResult:
        """The listed items no photo matched by content (call it once the results are consumed), as a
        result with ``query`` None: each a match with ``distance`` None, ``found_by`` "identity" and, as
        evidence, the identity and the item's status (a failed item is a dead link, still listed)."""
        matches = []
        for it in self.listed:
            if it.id in self._found:
                continue
            evidence: dict[str, Any] = {"identity": self.identities.get(it.id), "status": it.status}
            if it.error:
                evidence["error"] = it.error
            matches.append(Match(it, None, evidence, found_by="identity"))
        return QueryResult(query=None, matches=matches)
