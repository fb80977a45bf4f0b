"""``matcher check`` and ``matcher repair``: is an index whole, and rebuilding its FAISS file. They sit on
:mod:`matcher.cli`'s group."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.markup import escape

from matcher.cli.common import EXIT_ERROR, _err, main
from matcher.errors import MatcherError


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The index to check (a folder `matcher add` made).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check(index_dir, as_json) -> None:
    """Check an index: the catalog (SQLite quick_check), index.faiss (its checksum) and that FAISS holds
    exactly the catalog's entries. Read-only. Exit 0 if whole, 2 if not (what is wrong is printed)."""
    from matcher.index.integrity import check_index

    out, err = Console(), Console(stderr=True)
    try:
        report = check_index(index_dir)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for part in ("catalog", "faiss", "ids"):
            problem = report[part]
            out.print(f"{part:8} {'ok' if problem is None else escape(problem)}", highlight=False, soft_wrap=True)
        for note in report["notes"]:
            out.print(f"note     {escape(note)}", highlight=False, soft_wrap=True)
    if not report["ok"]:
        if report["catalog"]:
            _err(err, "the catalog is damaged: restore catalog.sqlite from a backup (FAISS is rebuilt from it, "
                      "not the other way round)")
        else:
            _err(err, f"index.faiss does not match the catalog: `matcher repair --index {index_dir}` "
                      "rebuilds it from the catalog")
        sys.exit(EXIT_ERROR)


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The index to repair (a folder `matcher add` made).")
def repair(index_dir) -> None:
    """Rebuild index.faiss from the catalog's codes (atomically: the old file stays until the new one is
    whole). The catalog must pass its check; a damaged catalog is an error (exit 2)."""
    from matcher.index.integrity import repair_index

    err = Console(stderr=True)
    try:
        stats = repair_index(index_dir)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    err.print(f"index.faiss rebuilt from the catalog: {stats['entries']:,} entries, layout {stats['layout']}",
              highlight=False)
