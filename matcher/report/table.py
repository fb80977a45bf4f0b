"""Search results on a terminal: one record per copy found, printed as each photo's result arrives.

A record never breaks what people copy: the URL, the page and the dataset's key are each printed whole (the
terminal may fold a long line on screen, but no line break is written inside them), however narrow the
terminal. Each copy says how it differs from the photo and how sure the match is, in words
(:mod:`matcher.evidence`); distance and score are explained once, at the end. Metadata is printed literally:
rich markup, emoji codes and terminal control characters in it are inert.
"""

from __future__ import annotations

from typing import Iterable

from rich.console import Console
from rich.text import Text

from matcher.evidence import describe
from matcher.report.formats import by_dataset, dataset_counts, plural, visible
from matcher.results import Match, QueryResult

__all__ = ["print_table", "print_identity", "print_items", "SURE_SHORT"]

#: distance and score in one line, said once after the records
SURE_SHORT = ("how sure: distance = bits of the 64-bit fingerprints that differ (0 = the same; a candidate up to 10); "
              "score = how well the aligned pixels agree (1 = perfectly; a match needs 0.95)")


def _line(console: Console, text: str, style: str = "") -> None:
    console.print(Text(text, style=style), soft_wrap=True, highlight=False, emoji=False, markup=False)


def _record(console: Console, n: int, m: Match, found_by: bool) -> None:
    it = m.item
    words = describe({**m.evidence, "found_by": m.found_by})
    tech = ", ".join(t for t in (f"distance {m.distance}" if m.distance is not None else "",
                                 f"score {m.evidence['score']:.3f}" if isinstance(m.evidence.get("score"), float)
                                 else "") if t)
    _line(console, f"  {n}. {words['how']} — {words['sure']}" + (f" ({tech})" if tech else "")
          + (" — found by your photo and your Flickr account" if found_by and m.found_by == "both" else ""), "bold")
    meta = [f"{visible(it.dataset)} {visible(it.key)}"]
    meta += [visible(v) for v in (it.owner and f"owner {it.owner}", it.license) if v]
    if it.status != "ok":
        meta.append(f"not hashed: {visible(it.error or 'failed')}")
    _line(console, "     " + " · ".join(meta))
    for url in dict.fromkeys(u for u in (it.url, it.page_url) if u) or ([it.path] if it.path else []):
        _line(console, f"     {visible(url)}", "cyan")


def print_table(results: Iterable[QueryResult], console: Console, *, show_unmatched: bool = False,
                found_by: bool = False) -> None:
    """Print each photo's copies as records, as soon as its result arrives (grouped by dataset, nearest first).
    Photos that could not be read are printed in red with the reason; photos without copies only with
    ``show_unmatched`` (the CLI prints the counts). After the last photo: the copies per dataset, and what
    distance and score mean."""
    counts: dict[str, dict[str, int]] = {}
    for r in results:
        for ds, d in dataset_counts([r]).items():
            c = counts.setdefault(ds, {"matches": 0, "photos": 0})
            c["matches"] += d["matches"]
            c["photos"] += d["photos"]
        if r.error is not None:
            _line(console, f"✗ {visible(r.query)}: {visible(r.error)}", "red")
        if not r.matches:
            if show_unmatched and r.error is None:
                _line(console, f"{visible(r.query)}: not found", "dim")
            continue
        _line(console, f"{visible(r.query)}: found {plural(len(r.matches), 'time')}", "bold underline")
        for n, m in enumerate((m for _, group in by_dataset(r.matches) for m in group), 1):
            _record(console, n, m, found_by)
    if counts:
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1]["matches"], kv[0]))
        _line(console, "copies by dataset: " + "; ".join(
            f"{visible(ds)} {plural(c['matches'], 'copy', 'copies')} of {plural(c['photos'], 'photo')}"
            for ds, c in ranked), "bold")
        _line(console, SURE_SHORT, "dim")


def print_identity(result: QueryResult, console: Console, who: str) -> None:
    """Print the items listed under ``who`` (a Flickr identity) that no photo matched: ``result`` is
    :meth:`matcher.provenance.identities.IdentityJoin.remainder`. Failed items (dead links: still listed) say why."""
    n = len(result.matches)
    if not n:
        _line(console, f"{visible(who)}: no other item is listed under this account", "dim")
        return
    _line(console, f"Listed under {visible(who)} but not found among your photos ({plural(n, 'item')}):", "bold")
    for i, m in enumerate(result.matches, 1):
        _record(console, i, m, False)


def print_items(items, console: Console) -> None:
    """Dataset items (``matcher lookup``) as records: dataset and key, owner, licence, status; then each URL
    whole on a line of its own."""
    for it in items:
        meta = [f"{visible(it.dataset)} {visible(it.key)}"]
        meta += [visible(v) for v in (it.owner and f"owner {it.owner}", it.license) if v]
        meta.append("in the index" if it.status == "ok" else
                    f"failed: {visible(it.error or 'unknown')} (listed all the same)")
        _line(console, " · ".join(meta), "bold" if it.status == "ok" else "yellow")
        for url in dict.fromkeys(u for u in (it.url or it.path, it.page_url) if u):
            _line(console, f"   {visible(url)}", "cyan")
