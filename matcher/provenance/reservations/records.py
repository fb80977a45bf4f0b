"""What a reservation is, as matcher records it per dataset item: where it was read and what it says.

A *reservation* is a machine-readable statement that an image must not be used for text and data mining
or AI training (EU DSM Directive art. 4(3): a reservation "in an appropriate manner, such as
machine-readable means"). Each one found is recorded with its **source**:

* ``embedded``: in the file (IPTC Photo Metadata "Data Mining" ``plus:DataMining`` in XMP; a C2PA/CAWG
  training-and-data-mining assertion);
* ``headers``: in the HTTP response that served the file (``X-Robots-Tag``; TDMRep ``tdm-reservation``);
* ``site``: in a file of the site that served it (TDMRep ``/.well-known/tdmrep.json``, ``robots.txt``
  rules for AI crawlers, ``ai.txt``);
* ``registry``: a content match in an opt-out registry (:mod:`matcher.optout`).

A *note* is what could not be read (malformed XMP, a damaged C2PA store, a robots.txt that timed out):
recorded per item, never a crash. Both travel in an item's ``extra`` under :data:`EXTRA_KEY`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

__all__ = ["SOURCES", "EXTRA_KEY", "Reservation", "Found", "from_extra", "summary"]

#: Where a reservation can come from, in the order a curator is shown them.
SOURCES = ("embedded", "headers", "site", "registry")
#: The key of an item's ``extra`` that holds ``{"reservations": [...], "notes": [...]}``.
EXTRA_KEY = "_reservations"


@dataclass(frozen=True)
class Reservation:
    """One reservation: ``source`` (:data:`SOURCES`), ``rule`` (which mechanism: ``iptc:DataMining``,
    ``c2pa:cawg.ai_training``, ``x-robots-tag``, ``tdm-reservation``, ``tdmrep.json``, ``robots.txt``,
    ``ai.txt``, ``registry``), ``value`` (what it says, as written: ``DMI-PROHIBITED-AIMLTRAINING``,
    ``notAllowed``, ``noai``, ``Disallow: /photos/ (GPTBot)``) and ``detail`` (where, or how far it was
    checked: a URL, a policy, "signature valid; signer not in a trust list", "present, not verified")."""

    source: str
    rule: str
    value: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"source": self.source, "rule": self.rule, "value": self.value}
        if self.detail:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Reservation":
        return cls(str(d.get("source", "")), str(d.get("rule", "")), str(d.get("value", "")), str(d.get("detail") or ""))

    def says(self) -> str:
        """One line for a person: ``the file says DMI-PROHIBITED-AIMLTRAINING (iptc:DataMining)``."""
        where = {"embedded": "the file says", "headers": "the server's response says",
                 "site": "the site says", "registry": "an opt-out registry holds it:"}.get(self.source, self.source)
        text = f"{where} {self.value} ({self.rule}"
        return text + (f"; {self.detail})" if self.detail else ")")


@dataclass
class Found:
    """Every reservation and note found for one item."""

    reservations: list[Reservation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reservations or self.notes)

    def extend(self, other: "Found") -> "Found":
        for r in other.reservations:
            if r not in self.reservations:
                self.reservations.append(r)
        self.notes += [n for n in other.notes if n not in self.notes]
        return self

    def by_source(self, sources: Iterable[str]) -> list[Reservation]:
        wanted = set(sources)
        return [r for r in self.reservations if r.source in wanted]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.reservations:
            out["reservations"] = [r.to_json() for r in self.reservations]
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def from_extra(extra: dict[str, Any] | None) -> Found:
    """The reservations stored in an item's ``extra`` (empty when there are none or they are unreadable)."""
    data = (extra or {}).get(EXTRA_KEY)
    if not isinstance(data, dict):
        return Found()
    res = [Reservation.from_json(d) for d in data.get("reservations") or () if isinstance(d, dict)]
    notes = [str(n) for n in data.get("notes") or ()]
    return Found(res, notes)


def summary(reservations: Iterable[Reservation]) -> str:
    """``source:rule=value; ...``: one cell of a log."""
    return "; ".join(f"{r.source}:{r.rule}={r.value}" for r in reservations)
