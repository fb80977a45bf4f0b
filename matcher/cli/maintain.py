"""Commands that maintain an index: `matcher remove`, `matcher compact`, `matcher duplicates`."""

from __future__ import annotations

import sys
from pathlib import Path
import click
from rich.console import Console
from rich.markup import escape
from matcher.cli.common import (EXIT_ERROR, EXIT_MATCH, EXIT_NO_MATCH, _err,
                                _guard_outputs, force_option, main)
from matcher.errors import MatcherError
from matcher.engine.api import DEFAULT_MAX_MOTION, DEFAULT_MIN_SCORE, DEFAULT_THRESHOLD
from matcher.index.store import IndexStore
from matcher.report.formats import plural as report_plural
from matcher.report.formats import visible as _visible
from matcher.cli.commands import _out_file_problem


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False),
              help="The index to remove items from (a folder `matcher add` made).")
@click.option("--key", "keys", multiple=True, help="Remove the item with this key (repeatable).")
@click.option("--url", "urls", multiple=True, help="Remove the item(s) with this image URL (repeatable).")
@click.option("--dataset", help="Remove every item of this dataset; with --key/--url, only look in it.")
@click.option("--matching", is_flag=True,
              help="Remove every item that PHOTOS match, searched exactly as `matcher search` does (verified).")
@click.option("--registry", "optout_registry", type=click.Path(exists=True, dir_okay=False),
              help="Remove every item that matches an entry of this opt-out registry (`matcher optout`).")
@click.option("--workers", type=int, default=None, help="With --matching: hashing processes (default: one per core).")
@click.argument("photos", nargs=-1, type=click.Path())
def remove(index_dir, keys, urls, dataset, matching=False, optout_registry=None, workers=None, photos=()) -> None:
    """Remove items from an index without rebuilding it.

    Searches stop returning them at once; `matcher compact` later drops them from the FAISS file.
    A later `add` of a source that still lists an item adds it back. Exit 2, changing nothing,
    when a key, URL or dataset matches no item.

    By content (a person's request): `--matching PHOTOS...` removes every item the photos match
    (searched as `matcher search` does, verified), `--registry FILE` every item that matches an
    entry of an opt-out registry; each removed item is printed. Exit 0 if something was removed,
    1 if nothing matched, 2 on an error (a photo could not be read).
    """
    from matcher.engine.api import remove as remove_items

    if matching or optout_registry or photos:  # by content: exits 0 removed, 1 nothing matched, 2 error
        from matcher.cli.optout import remove_by_content

        remove_by_content(index_dir, keys, urls, dataset, matching, optout_registry, photos, workers)
    err = Console(stderr=True)
    if keys and urls:
        _err(err, "choose one of --key and --url")
        sys.exit(EXIT_ERROR)
    if not (keys or urls or dataset):
        _err(err, "say what to remove: --key, --url or --dataset")
        sys.exit(EXIT_ERROR)
    try:
        stats = remove_items(index_dir, dataset=dataset, keys=keys, urls=urls)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    whole = f"dataset {dataset} (and its version record): " if dataset and not keys and not urls else ""
    err.print(
        f"removed {whole}{report_plural(stats['items'], 'item')} ({report_plural(stats['entries'], 'index entry', 'index entries')}); searches no longer return them. "
        f"{report_plural(stats['tombstones'], 'removed entry', 'removed entries')} "
        f"{'waits' if stats['tombstones'] == 1 else 'wait'} for `matcher compact --index {index_dir}`",
        highlight=False,
    )


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False),
              help="The index to compact (a folder `matcher add` made).")
def compact(index_dir) -> None:
    """Rebuild an index's FAISS file without removed items (and in the layout its size calls for)."""
    from matcher.engine.api import compact as compact_index

    err = Console(stderr=True)
    try:
        stats = compact_index(index_dir)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    err.print(f"FAISS: {stats['before']:,} -> {stats['after']:,} entries ({stats['dropped']:,} removed items' "
              f"entries dropped), layout {stats['layout']}", highlight=False)


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False),
              help="The index whose items are grouped (a folder `matcher add` made).")
@click.option("--across-datasets", is_flag=True, help="Also group items of different datasets (default: within each dataset).")
@click.option("--dataset", help="Only items of this dataset (with --across-datasets: and the items that duplicate them).")
@click.option("--threshold", type=click.IntRange(0, 64), default=DEFAULT_THRESHOLD, show_default=True,
              help="Largest 64-bit Hamming distance between two entries that makes a candidate pair.")
@click.option("--min-score", type=click.FloatRange(-1.0, 1.0), default=DEFAULT_MIN_SCORE, show_default=True,
              help="Verification score a pair needs (the two thumbnails aligned, cell by cell).")
@click.option("--max-motion", type=click.FloatRange(0.0), default=DEFAULT_MAX_MOTION, show_default=True,
              help="Full-detail check when both images are local files: largest residual motion of a copy.")
@click.option("--no-detail", is_flag=True, help="Skip the full-detail check (thumbnail verification only).")
@click.option("--no-variants", is_flag=True,
              help="Search each entry's stored code only, not the mirrored and cropped edits of its thumbnail "
                   "(9x fewer searches; mirrored and cropped copies are then missed).")
@click.option("--workers", type=click.IntRange(0), default=None, help="Verification processes (default: one per core).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per group (with every verified link).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write the CSV (or JSON Lines) here, not to stdout.")
@force_option
def duplicates(index_dir, across_datasets, dataset, threshold, min_score, max_motion, no_detail, no_variants, workers,
               as_json, out_path, force) -> None:
    """Group near-duplicate items of an index: the same photo re-hosted, resized, recompressed, cropped.

    CSV on stdout (or --out): one row per item in a group. Exit 0 if duplicates were found, 1 if none, 2 on error.
    """
    from matcher.engine.duplicates import SIGNATURES, find_duplicates, write_csv, write_jsonl
    from matcher.outputs import Output, check_output

    err = Console(stderr=True)
    if out_path:
        dups = Output(Path(out_path), "the duplicates list", "--out", SIGNATURES)
        _guard_outputs(err, lambda: check_output(dups, inputs=[index_dir], force=force))
        problem = _out_file_problem(Path(out_path))
        if problem:  # said before the search, not after it
            _err(err, f"cannot write {out_path}: {problem}")
            sys.exit(EXIT_ERROR)
    try:
        store = IndexStore.open(index_dir)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    try:
        with store, _PhaseProgress(err) as progress:
            report = find_duplicates(store, threshold=threshold, min_score=min_score,
                                     max_motion=None if no_detail else max_motion, across_datasets=across_datasets,
                                     dataset=dataset, variants=not no_variants, workers=workers, progress=progress)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    write = write_jsonl if as_json else write_csv
    try:
        if out_path:
            with open(out_path, "w", newline="", encoding="utf-8") as f:
                write(report.groups, f)
        else:
            write(report.groups, sys.stdout)
            sys.stdout.flush()
    except OSError as e:
        _err(err, f"cannot write {out_path or 'stdout'}: {e.strerror or str(e)}")
        sys.exit(EXIT_ERROR)
    s, groups = report.stats, report.groups
    largest = max(groups, key=lambda g: (g.size, -g.id)) if groups else None
    scope = "across datasets" if across_datasets else "within datasets"
    err.print(
        f"{report_plural(len(groups), 'group')} of near-duplicates {scope}, {report_plural(sum(g.size for g in groups), 'item')} in them"
        + (f"; largest: {largest.size:,} items (group {largest.id}, {escape(_visible(largest.members[0].item.dataset))}:"
           f"{escape(_visible(largest.members[0].item.key))})" if largest else "")
        + f". {s.entries:,} entries searched ({s.queries:,} codes), {s.pairs:,} candidate pairs: {s.verified:,} verified"
        + (f" ({s.distance_only:,} by distance only: no thumbnails)" if s.distance_only else "")
        + f", {s.rejected:,} rejected"
        + (f" ({s.rejected_motion:,} by the full-detail check)" if s.rejected_motion else "")
        + f"; {s.elapsed:.1f} s" + (f"; written to {escape(out_path)}" if out_path else ""),
        highlight=False, soft_wrap=True,
    )
    sys.exit(EXIT_MATCH if groups else EXIT_NO_MATCH)


class _PhaseProgress:
    """A rich progress bar per phase on stderr, only when stderr is a terminal."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True,
                                 disable=not console.is_terminal)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(phase, total=total)
        self.progress.update(self.tasks[phase], completed=done, total=total)
