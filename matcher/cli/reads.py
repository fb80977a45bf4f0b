"""How `add` read each source, and how `info` says it per dataset (format, rows, items, faces, skips)."""

from __future__ import annotations

from rich.markup import escape

from matcher.ingest.presets import suggest_formats
from matcher.report.formats import visible

__all__ = ["describe_read", "read_line"]


def describe_read(source) -> str:
    """One line on how a source was read: ``DiF_v1.csv (dif): 6 rows -> 3 items, 6 faces; 1 skipped (...)``."""
    c = source.counts
    skipped = ", ".join(f"{why}: {n:,}" for why, n in sorted(c.skipped.items()))
    line = (f"{escape(visible(source.location))} ({source.format}): {c.rows:,} rows -> {c.items:,} items"
            + (f", {c.faces:,} faces" if c.faces else "")
            + (f"; {sum(c.skipped.values()):,} skipped ({skipped})" if skipped else ""))
    if c.items == 0:
        line += " [yellow]- nothing in it became an item[/]"
        fits = [f for f in suggest_formats(source.location) if f != source.preset] if source.format == "folder" else []
        if fits:
            line += f"; its layout may fit --format {' or --format '.join(fits)}"
    return line


def read_line(read: dict, failed: int) -> str:
    """A dataset's ``read`` record (``info``) in words: ``read as dif: 5 rows -> 4 items (1 failed), 3 faces;
    1 skipped (not in --only-ids: 1)``."""
    skipped = read.get("skipped") or {}
    return (f"read as {', '.join(read.get('formats') or ['?'])}: {read['rows']:,} rows -> {read['items']:,} items"
            + (f" ({failed:,} failed)" if failed else "")
            + (f", {read['faces']:,} faces" if read.get("faces") else "")
            + (f"; {sum(skipped.values()):,} skipped ("
               + ", ".join(f"{why}: {n:,}" for why, n in sorted(skipped.items())) + ")" if skipped else ""))
