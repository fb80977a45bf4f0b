"""The opt-out commands: ``matcher optout add|list|remove`` and ``matcher filter``, plus what ``matcher remove
--matching/--registry`` does. They sit on the ``matcher`` group of :mod:`matcher.cli.common`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from matcher.cli.common import (EXIT_ERROR, EXIT_MATCH, EXIT_NO_MATCH, _err, _guard_outputs, _parse_columns, _StatusLine, allow_paths_option,
                                download_options, fetch_settings, force_option, main)
from matcher.errors import MatcherError
from matcher.imaging.images import Limits
from matcher.report.formats import visible as _visible


@main.group()
def optout() -> None:
    """An opt-out registry by hash: register your photos (only hashes are stored), curators drop every copy.

    A registry file holds, for each photo, hashes of the ways a dataset may hold it (resized, mirrored,
    cropped, captioned, inside a screenshot): no pixels. Curators screen datasets with `matcher filter`,
    `matcher add --registry` and `matcher remove --registry`.
    """


@optout.command("add")
@click.option("--registry", "registry_path", required=True, type=click.Path(dir_okay=False),
              help="The registry file (JSON; created if missing; a .gz name is compressed).")
@click.option("--note", help="A note stored with each photo's entry, e.g. how curators can contact you.")
@click.option("--no-source-name", is_flag=True, help="Do not store the photo's file name in its entry.")
@click.option("--workers", type=int, default=None, help="Hashing processes (default: one per core; 0 = in-process).")
@click.option("--mark-copies", "mark_dir", type=click.Path(file_okay=False),
              help="Also write a copy of each photo into DIR saying \"no AI training\" in its IPTC Data Mining field "
                   "(XMP; JPEG and PNG, not re-encoded: pixels and EXIF kept). Existing files are never overwritten.")
@click.option("--mark-in-place", is_flag=True, help="Write the IPTC Data Mining field into the photos themselves "
              "(atomically; only the metadata changes).")
@click.option("--data-mining", "dmi", default="DMI-PROHIBITED-AIMLTRAINING", show_default=True,
              type=click.Choice(["DMI-PROHIBITED-AIMLTRAINING", "DMI-PROHIBITED-GENAIMLTRAINING", "DMI-PROHIBITED",
                                 "DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING"]),
              help="The IPTC Data Mining value --mark-copies / --mark-in-place write.")
@click.option("--site-lines", "site_path", metavar="PATH",
              help="Print the TDMRep, robots.txt and header lines that reserve PATH (e.g. /photos/) on your site.")
@click.argument("photos", nargs=-1, required=True, type=click.Path())
def optout_add(registry_path, note, no_source_name, workers, photos, mark_dir=None, mark_in_place=False,
               dmi="DMI-PROHIBITED-AIMLTRAINING", site_path=None) -> None:
    """Register PHOTOS (files or folders, recursive): their hashes are added to the registry.

    A photo already registered (the same pixels, or a re-save of them) is not added twice. A photo
    that cannot be read is reported and the others are still added (exit 2).
    """
    from matcher.optout import Registry, RegistryEntry, locked, register_photos

    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True)
    _guard_registry(err, registry_path, photos)
    added = same = failed = 0
    if mark_dir and mark_in_place:
        _err(err, "--mark-copies DIR or --mark-in-place, not both")
        sys.exit(EXIT_ERROR)
    if mark_dir:
        from matcher.provenance.reservations.mark import check_mark_dir

        try:
            check_mark_dir(mark_dir, photos)
        except MatcherError as e:
            _err(err, e.reason)
            sys.exit(EXIT_ERROR)
    read_ok: list[str] = []
    try:
        with locked(registry_path):
            reg = Registry.load(registry_path, missing_ok=True)
            try:
                for f, codes, error in register_photos(photos, workers=workers):
                    if error is not None:
                        failed += 1
                        _err(err, f"{f}: {error}")
                        continue
                    read_ok.append(f)
                    entry, new = reg.add(RegistryEntry.make(codes, note=note,
                                                            source_name=None if no_source_name else Path(f).name))
                    if new:
                        added += 1
                        out.print(f"added {entry.id}  {escape(f)}  ({len(codes)} code pairs)")
                    else:
                        same += 1
                        out.print(f"already registered as {entry.id}  {escape(f)}")
            finally:  # what was registered is kept, even after Ctrl-C
                if added:
                    reg.save(registry_path)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    if mark_dir or mark_in_place:
        from matcher.provenance.reservations.mark import mark_photos

        failed += mark_photos(read_ok, photos, dmi, mark_dir, mark_in_place, out, err)
    if site_path:
        from matcher.provenance.reservations.mark import site_lines

        click.echo(site_lines(site_path))
    total = added + same + failed
    err.print(f"{_n(added, 'photo')} added, {same:,} already registered, {failed:,} could not be read; "
              f"{_n(len(reg), 'entry', 'entries')} in {escape(registry_path)}", highlight=False, soft_wrap=True)
    if total == 0:
        _err(err, "no photos found in the given paths")
    if failed or total == 0:
        sys.exit(EXIT_ERROR)


@optout.command("list")
@click.option("--registry", "registry_path", required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per entry (without its codes).")
def optout_list(registry_path, as_json) -> None:
    """The photos a registry holds: id, when added, file name, note."""
    from rich.text import Text

    from matcher.optout import Registry
    from matcher.report import plural

    err = Console(stderr=True)
    try:
        reg = Registry.load(registry_path)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    if as_json:
        for e in reg.entries:
            click.echo(json.dumps({"id": e.id, "added_at": e.added_at, "source_name": e.source_name, "note": e.note,
                                   "codes": len(e.codes)}, ensure_ascii=False))
        return
    out = Console(highlight=False, soft_wrap=True)
    for e in reg.entries:  # a record per entry: the id whole (it is what `optout remove --id` needs)
        out.print(Text(" · ".join(v for v in (e.id, f"added {e.added_at}", e.source_name and f"photo {e.source_name}",
                                             plural(len(e.codes), "code pair"), e.note and f"note: {e.note}") if v)),
                  soft_wrap=True)
    err.print(f"{plural(len(reg), 'entry', 'entries')}; threshold {reg.threshold} (64-bit), confirmation {reg.confirm_threshold} "
              f"(256-bit)", highlight=False)


@optout.command("remove")
@click.option("--registry", "registry_path", required=True, type=click.Path(dir_okay=False))
@click.option("--id", "ids", multiple=True, required=True, help="The entry to remove (repeatable; see `optout list`).")
def optout_remove(registry_path, ids) -> None:
    """Take entries out of a registry. An unknown id is an error (exit 2) and nothing is removed."""
    from matcher.optout import Registry, locked

    err = Console(stderr=True)
    _guard_registry(err, registry_path, ())
    try:
        with locked(registry_path):
            reg = Registry.load(registry_path)
            gone = [reg.remove(i) for i in dict.fromkeys(ids)]
            reg.save(registry_path)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    for e in gone:
        err.print(f"removed {e.id} ({escape(e.source_name or 'no file name')})", highlight=False)
    err.print(f"{_n(len(reg), 'entry', 'entries')} left in {escape(registry_path)}", highlight=False)


def _n(n: int, word: str, words: str | None = None) -> str:
    from matcher.report import plural

    return plural(n, word, words)


def _guard_registry(err: Console, registry_path: str, photos) -> None:
    """A registry is updated in place: never a photo, never one of the photos being registered; a file that
    is not a registry is refused by :meth:`Registry.load` itself (with its reason)."""
    from matcher.outputs import Output, check_output

    reg = Output(Path(registry_path), "the opt-out registry", "--registry", ("matcher-optout-registry",))
    _guard_outputs(err, lambda: check_output(reg, inputs=photos, force=True))


class _FilterProgress(_StatusLine):
    def describe(self, s) -> str:
        return (f"[green]{s.kept:,} kept[/] [red]{s.dropped:,} opted out[/] "
                f"{s.unreadable:,} unreadable [cyan]{s.rate:,.0f}/s[/]")


@main.command("filter")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("--registry", "registry_path", type=click.Path(exists=True, dir_okay=False),
              help="The opt-out registry to honour.")
@click.option("--respect", "respect", multiple=True, metavar="all|embedded|headers|site|registry",
              help="Reservations that drop an image (repeatable or comma-separated; default: registry). Every "
                   "reservation found is logged, respected or not; site files are fetched with site or --check-sites.")
@click.option("--check-sites", is_flag=True, help="Fetch each site's tdmrep.json, robots.txt and ai.txt even when "
              "site reservations are not respected (to log them).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The clean manifest: the rows that match no registry entry, in the manifest's format and columns.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False),
              help="CSV of every dropped row (registry entry, variant, distances) and every image that could not be read.")
@click.option("--on-error", type=click.Choice(["drop", "keep"]), default="drop", show_default=True,
              help="Images that could not be read or downloaded: drop them (nothing unscreened passes) or keep them.")
@click.option("--format", "fmt", type=click.Choice(["csv", "tsv", "jsonl", "parquet"]),
              help="The manifest's format, when its file name does not say (.csv, .tsv, .jsonl, .parquet, .gz).")
@click.option("--column", "columns", multiple=True, metavar="FIELD=HEADER",
              help="Manifest column for a field: url, path, key, owner, license, title, page_url.")
@click.option("--workers", type=int, default=None, help="Hashing processes (default: one per core; 0 = in-process).")
@force_option
@download_options
@allow_paths_option
def filter_manifest(manifest, registry_path, respect, check_sites, out_path, log_path, on_error, fmt, columns, workers,
                    force, concurrency, per_host, timeout, retries, max_bytes, allow_private_urls,
                    allow_networks=(), allow_paths=()) -> None:
    """Drop every image of MANIFEST that matches an opt-out registry entry, re-hosted copies included.

    Each image is read (local path) or downloaded (URL), hashed as `matcher add` hashes it and
    screened; the rows that match no entry are written to --out.
    """
    from matcher.optout import LOG_COLUMNS, Registry, filter_manifest as run
    from matcher.outputs import Output, check_output
    from matcher.cli.reservations import filter_checker, filter_summary

    err = Console(stderr=True)
    inputs = [p for p in (manifest, registry_path) if p]
    clean = Output(Path(out_path), "the clean manifest", "--out")
    _guard_outputs(err, lambda: check_output(clean, inputs=inputs, force=force))
    if log_path:
        log = Output(Path(log_path), "the log", "--log", (",".join(LOG_COLUMNS),))
        _guard_outputs(err, lambda: check_output(log, inputs=[*inputs, out_path], force=force))
    checker = None
    try:
        settings = fetch_settings(concurrency, per_host, timeout, retries, max_bytes, allow_private_urls,
                                  allow_networks)
        respected, checker = filter_checker(respect, registry_path, check_sites, settings)
        reg = Registry.load(registry_path) if registry_path else Registry()
        limits = Limits(max_bytes=max(max_bytes, Limits().max_bytes))
        with _FilterProgress(err) as progress:
            stats = run(manifest, reg, out_path, log=log_path, fmt=fmt, columns=_parse_columns(columns),
                        on_error=on_error, fetch=settings, workers=workers, limits=limits, progress=progress,
                        respect=respected, checker=checker, allow_paths=allow_paths)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    except ValueError as e:  # FetchSettings' own checks, --respect
        _err(err, str(e))
        sys.exit(EXIT_ERROR)
    finally:
        if checker is not None:
            checker.close()
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(stats.errors.items()))
    unread = stats.unreadable
    err.print(
        f"{_n(stats.rows, 'row')}: {stats.kept:,} kept, {stats.dropped:,} dropped as opted out"
        f"{' or reserved' if set(respected) - {'registry'} else ''} "
        f"({_n(len(stats.by_entry), 'registry entry', 'registry entries')}), {unread:,} could not be read"
        + (f" ({kinds}; {'kept' if on_error == 'keep' else 'dropped'})" if unread else "")
        + f"; {stats.elapsed:.1f} s. Clean manifest: {escape(out_path)}" + (f"; log: {escape(log_path)}" if log_path else ""),
        highlight=False, soft_wrap=True,
    )
    if stats.reserved or stats.by_source.keys() - {"registry"}:
        err.print(filter_summary(stats, respected), highlight=False, soft_wrap=True)


def remove_by_content(index_dir, keys, urls, dataset, matching: bool, registry_path: str | None, photos,
                      workers: int | None) -> None:
    """``matcher remove --matching PHOTOS`` / ``--registry FILE``: remove what matches; exits."""
    from matcher.optout import Registry, remove_matching, remove_registered

    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True)
    if keys or urls or dataset:
        _err(err, "--matching and --registry remove by content: not with --key, --url or --dataset")
        sys.exit(EXIT_ERROR)
    if matching != bool(photos):
        _err(err, "--matching needs PHOTOS (files or folders)" if matching else
             "PHOTOS are for --matching (remove what they match)")
        sys.exit(EXIT_ERROR)
    removed_total = 0
    errors = 0
    try:
        if matching:
            results, removed = remove_matching(index_dir, photos, workers=workers)
            for r in results:
                if r.error:
                    errors += 1
                    _err(err, f"{r.query}: {r.error}")
            for m, query in removed:
                ev = m.evidence
                out.print(f"removed {escape(_visible(m.item.dataset))}/{escape(_visible(m.item.key))}  {escape(_visible(m.item.url or m.item.path or ''))}"
                          f"  (matches {escape(query)}: {ev.get('variant')}, distance {m.distance}"
                          + (f", score {ev['score']}" if "score" in ev else "") + ")")
            removed_total = len(removed)
            if not results:
                errors += 1
                _err(err, "no photos found in the given paths")
        if registry_path:
            reg = Registry.load(registry_path)
            removed, unconfirmed = remove_registered(index_dir, reg)
            for item, hit in removed:
                out.print(f"removed {escape(_visible(item.dataset))}/{escape(_visible(item.key))}  {escape(_visible(item.url or item.path or ''))}"
                          f"  (registry entry {hit.entry_id}: {hit.variant}, distance {hit.distance}, "
                          f"confirmation {hit.confirm_distance})")
            for item, hit in unconfirmed:
                if hit.confirm_distance is None:
                    err.print(f"not removed: {escape(_visible(item.dataset))}/{escape(_visible(item.key))} is near registry entry "
                              f"{hit.entry_id} but cannot be confirmed (no local file and no thumbnail)", highlight=False)
            removed_total += len(removed)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    err.print(f"removed {_n(removed_total, 'item')}; searches no longer return them. Their entries wait for "
              f"`matcher compact --index {escape(str(index_dir))}`" if removed_total else "no item matched: nothing removed",
              highlight=False, soft_wrap=True)
    sys.exit(EXIT_ERROR if errors else EXIT_MATCH if removed_total else EXIT_NO_MATCH)
