"""Where the time of ``add`` and ``search`` goes, stage by stage (benchmarks/bench_stages.py).

The pipeline calls :func:`lap` after each stage of a photo (``lap("decode")``, ``lap("codes")``, ...):
the CPU time of the process since the previous lap (or :func:`start`) is added to that stage (CPU,
not wall clock: the figures hold on a machine shared with other work). Off unless a benchmark calls
:func:`enable`; off, a lap is one test of a flag. Per process: a profile runs its work in-process.
"""

from __future__ import annotations

import time

__all__ = ["enable", "start", "lap", "spent", "reset"]

_on = False
_last = 0.0
_spent: dict[str, float] = {}
_count: dict[str, int] = {}


def enable(on: bool = True) -> None:
    global _on
    _on = on


def start() -> None:
    """Start timing a stage (what came before it is not counted)."""
    global _last
    if _on:
        _last = time.process_time()


def lap(stage: str) -> None:
    """The CPU time since the last :func:`start` or :func:`lap` went to ``stage``."""
    global _last
    if _on:
        now = time.process_time()
        _spent[stage] = _spent.get(stage, 0.0) + now - _last
        _count[stage] = _count.get(stage, 0) + 1
        _last = now


def spent() -> dict[str, tuple[float, int]]:
    """Stage -> (seconds, laps), in the order the stages were first seen."""
    return {k: (v, _count[k]) for k, v in _spent.items()}


def reset() -> None:
    _spent.clear()
    _count.clear()
