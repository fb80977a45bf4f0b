"""`matcher search`: check photos against an index; table, JSON, CSV, the HTML report and removal letters."""

from __future__ import annotations

import os
import sys
from pathlib import Path
import click
from rich.console import Console
from rich.markup import escape
from matcher.cli.common import (EXIT_ERROR, EXIT_MATCH, EXIT_NO_MATCH, _err,
                                _guard_outputs, download_options, engine_options, fetch_settings,
                                force_option, main)
from matcher.errors import MatcherError
from matcher.engine.api import DEFAULT_MAX_MOTION, DEFAULT_MIN_SCORE, DEFAULT_THRESHOLD, search as search_photos
from matcher.engine.cluster import open_searchable
from matcher.report.formats import visible as _visible


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The index to check the photos against (a folder `matcher add` made).")
@click.option("--threshold", type=click.IntRange(0, 64), default=DEFAULT_THRESHOLD, show_default=True,
              help="Largest 64-bit Hamming distance that makes a dataset image a candidate.")
@click.option("--min-score", type=click.FloatRange(-1.0, 1.0), default=DEFAULT_MIN_SCORE, show_default=True,
              help="Verification score a candidate needs (aligned pixels, cell by cell).")
@click.option("--max-motion", type=click.FloatRange(0.0), default=DEFAULT_MAX_MOTION, show_default=True,
              help="Full-detail check, when the dataset image is a local file: largest residual motion "
                   "(1/256 of the picture) a copy may show; another frame of a burst moves more.")
@click.option("--no-detail", is_flag=True, help="Skip the full-detail check (thumbnail verification only).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines on stdout: one object per photo.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout: one row per match.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write a self-contained HTML report.")
@click.option("--workers", type=int, default=None, help="Hashing processes (default: one per core).")
@click.option("--letters", "letters_dir", type=click.Path(), metavar="DIR",
              help="Also write removal-request letters for the matches, one per dataset and template "
                   "(list, gdpr, bipa), into DIR (created).")
@click.option("--requester-name", help="Your name, for the letters (default: a [YOUR NAME] placeholder).")
@click.option("--requester-email", help="Your email address, for the letters (default: a placeholder).")
@click.option("--flickr-user", metavar="NAME",
              help="Also report every item the index lists under this Flickr account (user name, path alias, "
                   "NSID or profile URL), matched by a photo or not; each match says found_by content, "
                   "identity or both.")
@click.option("--nsid", metavar="ID", help="The same, by Flickr NSID (e.g. 12345678@N01).")
@engine_options
@click.option("--show-paths", is_flag=True,
              help="Show local paths (your photos' folders, the dataset's files, the index) in the HTML report; "
                   "by default it names files only, since a report is sent to others.")
@click.option("--fetch-unverified/--no-fetch", "fetch_unverified", default=True, show_default=True,
              help="A candidate of a dataset added with --thumbnails none whose image is not a local file: fetch "
                   "the image from its URL (the download options' guards; nothing stored) and verify it as a "
                   "local file. --no-fetch: report it unverified.")
@download_options
@force_option
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def search(index_dir, threshold, min_score, max_motion, no_detail, as_json, as_csv, html_path, workers,
           letters_dir, requester_name, requester_email, flickr_user, nsid, show_paths, fetch_unverified,
           concurrency, per_host, timeout, retries, max_bytes, allow_private_urls, allow_networks, force, paths,
           engine="local", scheduler=None) -> None:
    """Check photos (files or folders, recursive) against an index.

    With --flickr-user/--nsid, the items listed under that Flickr identity are joined in: matches found
    both ways say so, and the listed items no photo matched are reported after the photos.

    Exit status as grep: 0 if a photo matched (or an item is listed under the identity), 1 if none
    did, 2 if an error occurred.
    """
    # Long on purpose: a click command mapping its many options (outputs, letters, identity join, engines)
    # onto matcher.engine.search with the CLI's exit codes; the work is in the library.
    from matcher import report

    out = Console()
    err = Console(stderr=True)
    if as_json and as_csv:
        _err(err, "choose one of --json and --csv")
        sys.exit(EXIT_ERROR)
    if (requester_name or requester_email) and not letters_dir:
        _err(err, "--requester-name and --requester-email are for --letters DIR")
        sys.exit(EXIT_ERROR)
    _guard_search_outputs(err, html_path, letters_dir, [*paths, index_dir], force)
    if letters_dir:
        problem = _letters_dir_problem(Path(letters_dir))
        if problem:  # said before the search, not after minutes of it
            _err(err, f"cannot write letters to {letters_dir}: {problem}")
            sys.exit(EXIT_ERROR)
    who_nsid, who_name = _flickr_who(flickr_user, nsid, err)
    try:
        fetch = fetch_settings(concurrency, per_host, timeout, retries, max_bytes, allow_private_urls,
                               allow_networks) if fetch_unverified else None
    except ValueError as e:  # FetchSettings' own checks (a negative timeout, ...)
        _err(err, str(e))
        sys.exit(EXIT_ERROR)
    try:
        store = open_searchable(index_dir, engine=engine, scheduler=scheduler)
    except MatcherError as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    from matcher.provenance.identities import NO_IDENTITIES, IdentityJoin

    results = []
    listed = []  # the items found by Flickr identity only: one result whose query is None
    try:
        with store:
            join = IdentityJoin(store.catalog, nsid=who_nsid, name=who_name)
            if join.active and not join.available:
                err.print(f"[yellow]warning:[/] {escape(NO_IDENTITIES.format(index=index_dir))}", highlight=False)
            stream = join.annotate(search_photos(store, paths, threshold=threshold, min_score=min_score,
                                                 max_motion=None if no_detail else max_motion, workers=workers,
                                                 fetch=fetch))

            def tee():
                for r in stream:
                    results.append(r)
                    yield r

            def identity_last():
                yield from tee()
                if join.active:
                    listed.append(join.remainder())
                    yield listed[-1]

            if as_json:
                report.write_jsonl(identity_last(), sys.stdout)
            elif as_csv:
                report.write_csv(identity_last(), sys.stdout)
            else:
                report.print_table(tee(), out, found_by=join.active)
                if join.active:
                    listed.append(join.remainder())
                    report.print_identity(listed[-1], out, join.label)
            summary = report.summarise(results)
            if store.catalog.unreadable:
                err.print(f"[yellow]warning:[/] {store.catalog.unreadable:,} index entries near these photos could not "
                          f"be read from the damaged catalog and were left out: `matcher check --index "
                          f"{escape(str(index_dir))}` says more", highlight=False)
            if html_path:  # the index by its name only unless --show-paths: a report is sent to others
                info = {"index": str(Path(index_dir).resolve()) if show_paths else Path(index_dir).resolve().name,
                        "threshold": threshold, "min_score": min_score}
                if join.active:
                    info["Flickr account"] = join.label
                report.write_html(results + listed, html_path, index_info=info, show_paths=show_paths)
    except MatcherError as e:  # e.g. the cluster lost every worker mid-search (engine/cluster.py)
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)
    err.print(
        f"{report.plural(summary['photos'], 'photo')} checked, {summary['with_matches']:,} found "
        f"({report.plural(summary['matches'], 'copy', 'copies')}), {summary['errors']:,} could not be read"
        + (f"; {report.plural(len(join.listed), 'item')} listed under {escape(_visible(join.label))} ({join.found_by_both:,} "
           f"of them also matched a photo)" if join.active else "")
        + (f"; report written to {html_path}" if html_path else ""),
        highlight=False,
    )
    if letters_dir:
        requester = {k: v for k, v in (("name", requester_name), ("email", requester_email),
                                       ("flickr_user", who_name or who_nsid)) if v}
        if not _write_search_letters(results + listed, letters_dir, requester, err, force):
            sys.exit(EXIT_ERROR)
    if summary["errors"] or summary["photos"] == 0:
        if summary["photos"] == 0:
            _err(err, "no photos found in the given paths")
        sys.exit(EXIT_ERROR)
    sys.exit(EXIT_MATCH if summary["with_matches"] or join.listed else EXIT_NO_MATCH)


def _guard_search_outputs(err: Console, html_path, letters_dir, inputs, force: bool) -> None:
    from matcher.outputs import HTML_GENERATOR, Output, check_output

    if html_path:
        html = Output(Path(html_path), "the HTML report", "--html", (HTML_GENERATOR, "<title>matcher report"))
        _guard_outputs(err, lambda: check_output(html, inputs=inputs, force=force))
        inputs = [*inputs, html_path]


def _flickr_who(flickr_user: str | None, nsid: str | None, err: Console) -> tuple[str | None, str | None]:
    """(NSID, user name) from --flickr-user and --nsid; exit 2 on a value that is neither."""
    from matcher.provenance.flickr import normalize_nsid, parse_owner

    who_nsid = who_name = None
    if flickr_user is not None:
        who_nsid, who_name = parse_owner(flickr_user)
        if who_nsid is None and who_name is None:
            _err(err, f"--flickr-user {repr(flickr_user)}: not a Flickr user name, NSID or profile URL")
            sys.exit(EXIT_ERROR)
    if nsid is not None:
        n = normalize_nsid(nsid)
        if n is None:
            _err(err, f"--nsid {repr(nsid)}: not a Flickr NSID (they look like 12345678@N01)")
            sys.exit(EXIT_ERROR)
        if who_nsid is not None and who_nsid != n:
            _err(err, f"--flickr-user is NSID {who_nsid} but --nsid is {n}: give one account")
            sys.exit(EXIT_ERROR)
        who_nsid = n
    return who_nsid, who_name


def _letters_dir_problem(path: Path) -> str | None:
    """Why letters could not be written into ``path`` (checked before a search), or None."""
    if path.exists():
        if not path.is_dir():
            return "it exists and is not a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else "the folder is not writable"
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable"


def _write_search_letters(results, letters_dir: str, requester: dict, err: Console, force: bool = False) -> bool:
    """The letters of every template for the matches of a search; False after an error (said)."""
    from matcher.errors import OutputRefused
    from matcher.provenance.letters import SIGNATURE, TEMPLATES, build_letters, write_letters
    from matcher.outputs import Output, check_output

    matches = [m for r in results for m in r.matches]
    if not matches:
        err.print(f"no matches: no letters written to {escape(letters_dir)}", highlight=False)
        return True
    letters = sorted((letter for t in TEMPLATES for letter in build_letters(matches, t, requester)),
                     key=lambda letter: (letter.dataset, TEMPLATES.index(letter.template)))
    try:  # every letter's file checked before any is written
        for letter in letters:
            check_output(Output(Path(letters_dir) / letter.filename, "a letter", "--letters", (SIGNATURE,)),
                         force=force)
    except OutputRefused as e:
        _err(err, e.reason)
        return False
    try:
        written = write_letters(letters, letters_dir)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        _err(err, f"cannot write letters to {letters_dir}: {reason}")
        return False
    datasets = sorted({letter.dataset for letter in letters})
    err.print(f"{len(written):,} removal-request letters ({', '.join(TEMPLATES)}) for {len(datasets):,} "
              f"dataset{'' if len(datasets) == 1 else 's'} written to {escape(str(Path(letters_dir)))}:",
              highlight=False, soft_wrap=True)
    for p in written:
        err.print(f"  {escape(str(p))}", highlight=False, soft_wrap=True)
    return True
