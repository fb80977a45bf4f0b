"""Machine-readable reservations of AI training and data mining, read per dataset item with their source:
embedded in the file (IPTC ``plus:DataMining``, C2PA/CAWG training-and-data-mining), in the HTTP response
(``X-Robots-Tag``, TDMRep headers) and in the site's files (TDMRep ``tdmrep.json``, ``robots.txt``,
``ai.txt``). See docs/reservations.md."""

from .records import EXTRA_KEY, SOURCES, Found, Reservation, from_extra, summary

__all__ = ["EXTRA_KEY", "SOURCES", "Found", "Reservation", "from_extra", "summary"]
