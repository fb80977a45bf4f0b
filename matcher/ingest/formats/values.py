"""Cell values as the published files write them: numbers in text (``123``, ``123.0``, ``1e3``), NaN, blanks."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["number", "integer"]


def number(v: Any) -> Any:
    """Numbers as numbers (CSV exports give text; ``123.0`` is 123); NaN, infinities and empty cells are
    dropped (None); other text is returned as it is."""
    if v is None:
        return None
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return None
        try:
            v = int(s)
        except ValueError:
            try:
                v = float(s)
            except ValueError:
                return s
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        if v.is_integer() and abs(v) < 2**53:
            return int(v)
    return v


def integer(v: Any) -> int | None:
    """A whole number written as ``123`` or ``123.0``, else None."""
    n = number(v)
    return n if isinstance(n, int) and not isinstance(n, bool) else None
