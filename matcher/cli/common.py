"""What every command of the CLI shares: the ``matcher`` click group, exit codes, error printing, the
downloader's options, the output guard and the progress line."""

from __future__ import annotations

import sqlite3
import sys

import click
from rich.console import Console

from matcher import __version__
from matcher.ingest.policy import FetchSettings
from matcher.ingest.run import AddStats
from matcher.ingest.sources import FIELD_ALIASES
from matcher.report.formats import visible as _visible

EXIT_MATCH, EXIT_NO_MATCH, EXIT_ERROR = 0, 1, 2
#: Ctrl-C, as shells report a command SIGINT stopped (128 + 2): never 1, which says "no match"
EXIT_INTERRUPTED = 130


def _err(console: Console, msg: str) -> None:
    """An error line on ``console``: ``msg`` is plain text, printed as it is (no markup, no emoji codes: a
    place name ``:Netherlands:`` or a key ``[ds-1]`` in a message stays as written; control characters are shown
    as escapes)."""
    from rich.text import Text

    console.print(Text.assemble(("error: ", "bold red"), printable(msg)), highlight=False, soft_wrap=True)


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes (a terminal escape sequence planted in a manifest
    is never sent to the terminal), line breaks kept."""
    return "\n".join(_visible(line) for line in str(text).split("\n"))


def _guard_outputs(err: Console, check) -> None:
    """Run an output check of :mod:`matcher.outputs` (a no-argument callable); exit 2 with its reason if it
    refuses. Called before a command does any work, so a refused write leaves nothing written."""
    from matcher.errors import OutputRefused

    try:
        check()
    except OutputRefused as e:
        _err(err, e.reason)
        sys.exit(EXIT_ERROR)


def force_option(fn):
    return click.option("--force", is_flag=True,
                        help="Replace an existing output file matcher did not write (never a photo or an input).")(fn)


def engine_options(fn):
    """``--engine`` and ``--scheduler`` of `search` and `serve` (a sharded index searched on a Dask cluster)."""
    fn = click.option("--scheduler", metavar="ADDRESS",
                      help="Dask scheduler address, e.g. tcp://host:8786 (--engine dask).")(fn)
    return click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                        help="local: the index (every shard of a sharded one) in this process; dask: the shards of "
                             "a sharded index held in the memory of a Dask cluster's workers (--scheduler), "
                             "the photos hashed and verified here (docs/dask.md).")(fn)


def allow_paths_option(fn):
    """``--allow-paths DIR`` (add, filter): a folder besides the manifest's own whose files its paths may name."""
    return click.option("--allow-paths", "allow_paths", multiple=True, metavar="DIR",
                        type=click.Path(exists=True, file_okay=False),
                        help="A manifest's local paths must lie inside its own folder (symlinks resolved); also "
                             "allow files under DIR (repeatable). Other paths are refused, per row.")(fn)


def download_options(fn):
    """The downloader's options, shared by `add` and `filter` (see :func:`fetch_settings`)."""
    options = [
        click.option("--concurrency", type=int, default=64, show_default=True, help="Downloads in flight."),
        click.option("--per-host", type=int, default=8, show_default=True, help="Downloads in flight per host."),
        click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per download attempt."),
        click.option("--retries", type=int, default=3, show_default=True, help="Retries on timeouts, 429 and 5xx."),
        click.option("--max-bytes", type=int, default=50 * 1024 * 1024, show_default=True,
                     help="Largest image accepted."),
        click.option("--allow-private-urls", is_flag=True,
                     help="Allow downloads from loopback/private addresses (testing only)."),
        click.option("--allow-network", "allow_networks", multiple=True, metavar="CIDR",
                     callback=lambda c, p, v: _networks(v),
                     help="Allow downloads from this non-public network all the same (an intranet mirror, e.g. "
                          "10.1.2.0/24); repeatable. Narrower than --allow-private-urls: redirects elsewhere stay "
                          "refused."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def fetch_settings(concurrency, per_host, timeout, retries, max_bytes, allow_private_urls, allow_networks):
    """The FetchSettings of :func:`download_options`' values."""
    return FetchSettings(concurrency=concurrency, per_host=per_host, timeout=timeout, retries=retries,
                         max_bytes=max_bytes, allow_private=allow_private_urls, allow_networks=allow_networks)


def _networks(values) -> tuple[str, ...]:
    """--allow-network values checked as CIDR networks (a clear usage error otherwise)."""
    import ipaddress

    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(v, strict=False)))
        except ValueError:
            raise click.BadParameter(f"{v!r} is not an IP network (e.g. 10.1.2.0/24 or 192.168.1.7)") from None
    return tuple(out)


def _parse_columns(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"expected FIELD=HEADER, got {v!r}", param_hint="--column")
        k, h = v.split("=", 1)
        k = k.strip()
        if k not in FIELD_ALIASES:
            raise click.BadParameter(f"unknown field {k!r}; known: {', '.join(FIELD_ALIASES)}", param_hint="--column")
        out[k] = h
    return out


class _StatusLine:
    """A rich status line on stderr (spinner, counts, elapsed), only when stderr is a terminal.

    Subclasses say what the line shows for a stats object (:meth:`describe`); it is redrawn at most
    every 0.1 s of the run.
    """

    def __init__(self, console: Console):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.enabled = console.is_terminal
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=False,
            disable=not self.enabled,
        )
        self.task = self.progress.add_task("starting")
        self._last = 0.0
        self.stats = None  # the run's stats object as last reported (its counts are live)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def describe(self, s) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, s) -> None:
        self.stats = s
        if not self.enabled or s.elapsed - self._last < 0.1:
            return
        self._last = s.elapsed
        self.progress.update(self.task, description=self.describe(s))


class _AddProgress(_StatusLine):
    def describe(self, s: AddStats) -> str:
        shards = f" shards: {s.shards_done:,} done, {s.shards_in_flight:,} running" if s.shards_done or s.shards_in_flight else ""
        return (f"[green]{s.added:,} added[/] [red]{s.failed:,} failed[/] {s.skipped:,} skipped "
                f"[cyan]{s.rate:,.0f}/s[/]{shards}")


class _Main(click.Group):
    """The command group: a catalog SQLite cannot read (a damaged file) ends any command with a clear
    error and exit 2, never a traceback; Ctrl-C ends any command with exit status 130 and one line on stderr
    (click's default says "Aborted!" and exits 1, the status of "no match")."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except sqlite3.DatabaseError as e:
            _err(Console(stderr=True), f"the index's catalog cannot be read ({e}): it is damaged. "
                                       "`matcher check --index DIR` says more")
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="matcher",
                      message="%(prog)s %(version)s (installed as photo-dataset-check)")
def main() -> None:
    """Are my photos in this AI training dataset? Build a lookup over a dataset, check a folder of photos against it."""

