"""The command-line side of reservations: the checkers ``add`` and ``filter`` run with, what ``filter``
and ``info`` print about them."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

from matcher.errors import MatcherError
from matcher.ingest.policy import FetchSettings
from matcher.ingest.reservations import Checker, parse_respect
from matcher.provenance.reservations.records import EXTRA_KEY, SOURCES

__all__ = ["add_checker", "filter_checker", "filter_summary", "reservation_counts", "info_lines"]


@contextmanager
def add_checker(enabled: bool, check_sites: bool, settings: FetchSettings) -> Iterator[Checker | None]:
    """``matcher add``'s checker: embedded and header reservations unless disabled; site files on request."""
    if not enabled:
        if check_sites:
            raise MatcherError("--check-sites reads reservations: not with --no-reservations")
        yield None
        return
    checker = Checker(sites=_site_cache(settings) if check_sites else None)
    try:
        yield checker
    finally:
        checker.close()


def filter_checker(respect: tuple[str, ...], registry_path: str | None, check_sites: bool,
                   settings: FetchSettings) -> tuple[tuple[str, ...], Checker]:
    """``matcher filter``'s respected sources and checker. Raises ValueError / MatcherError on bad options."""
    said = parse_respect(respect)
    named_registry = any("registry" in str(v).lower() for v in respect)
    if not said:
        if not registry_path:
            raise MatcherError("nothing to respect: give --registry FILE and/or --respect all|embedded|headers|site")
        said = ("registry",)
    if "registry" in said and not registry_path:
        if named_registry:
            raise MatcherError("--respect registry needs --registry FILE")
        said = tuple(s for s in said if s != "registry")  # "all" without a registry: the other three
    sites = _site_cache(settings) if "site" in said or check_sites else None
    return said, Checker(sites=sites)


def filter_summary(stats, respected: tuple[str, ...]) -> str:
    """The lines ``matcher filter`` adds about reservations."""
    found = ", ".join(f"{s} {stats.reserved[s]:,}" for s in SOURCES if stats.reserved.get(s))
    dropped = ", ".join(f"{s} {stats.by_source[s]:,}" for s in SOURCES if stats.by_source.get(s))
    return (f"reservations found (images): {found or 'none'}; dropped for: {dropped or 'nothing'} "
            f"(respected: {', '.join(respected) or 'nothing'})")


def reservation_counts(catalog, out: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Per dataset: items with a reservation, per source and per rule, and items with a note (a sharded
    index's catalogs summed)."""
    out = {} if out is None else out
    if hasattr(catalog, "shards"):  # matcher.index.sharded.ShardedCatalog
        for shard in catalog.shards.values():
            reservation_counts(shard, out)
        return out
    rows = catalog.db.execute(
        "SELECT dataset, json_extract(extra, ?) FROM items WHERE extra IS NOT NULL AND instr(extra, ?) > 0",
        (f"$.{EXTRA_KEY}", f'"{EXTRA_KEY}"'))
    for dataset, raw in rows:
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            continue
        d = out.setdefault(dataset, {"items": 0, "by_source": {}, "by_rule": {}, "with_notes": 0})
        res = data.get("reservations") or []
        if res:
            d["items"] += 1
        for source in {r.get("source") for r in res}:
            d["by_source"][source] = d["by_source"].get(source, 0) + 1
        for rule in {f"{r.get('rule')}={r.get('value')}" for r in res}:
            d["by_rule"][rule] = d["by_rule"].get(rule, 0) + 1
        if data.get("notes"):
            d["with_notes"] += 1
    return out


def info_lines(counts: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for ds in sorted(counts):
        d = counts[ds]
        src = ", ".join(f"{s} {d['by_source'][s]:,}" for s in SOURCES if d["by_source"].get(s))
        rules = ", ".join(f"{k} {v:,}" for k, v in sorted(d["by_rule"].items(), key=lambda kv: (-kv[1], kv[0]))[:6])
        notes = f"; {d['with_notes']:,} with a note (unreadable metadata or site file)" if d["with_notes"] else ""
        lines.append(f"reservations in {ds}: {d['items']:,} items ({src or 'none'}){notes}"
                     + (f"\n  {rules}" if rules else ""))
    return lines


def _site_cache(settings: FetchSettings):
    """A :class:`matcher.ingest.sites.SiteCache` (imported here: it brings the downloader, aiohttp, which a run
    that checks no site does not need)."""
    from matcher.ingest.sites import SiteCache

    return SiteCache(settings)
