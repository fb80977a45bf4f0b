"""The command line, `matcher` and its subcommands: a thin layer over the library (:mod:`matcher.engine`).

``main`` is the click group (the console script's entry point); importing this package registers every
command group on it.
"""

from matcher.cli.common import main
from matcher.cli import add as _add  # noqa: F401  (registers `add` on main)
from matcher.cli import search as _search  # noqa: F401  (registers `search` on main)
from matcher.cli import commands as _commands  # noqa: F401  (registers lookup, info, bench, serve on main)
from matcher.cli import maintain as _maintain  # noqa: F401  (registers remove, compact, duplicates on main)
from matcher.cli import optout as _optout  # noqa: F401  (registers `optout` and `filter` on main)
from matcher.cli import integrity as _integrity  # noqa: F401  (registers `check` and `repair` on main)

__all__ = ["main"]
