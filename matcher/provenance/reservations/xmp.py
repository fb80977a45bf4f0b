"""The IPTC Photo Metadata "Data Mining" property, read from an image's XMP.

IPTC (Photo Metadata Standard 2023.1) carries the PLUS property ``plus:DataMining``
(namespace ``http://ns.useplus.org/ldf/xmp/1.0/``) with one value of a controlled vocabulary,
``http://ns.useplus.org/ldf/vocab/DMI-...``:

* ``DMI-UNSPECIFIED``, ``DMI-ALLOWED``: no reservation;
* ``DMI-PROHIBITED-AIMLTRAINING``, ``DMI-PROHIBITED-GENAIMLTRAINING``,
  ``DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING``, ``DMI-PROHIBITED``, ``DMI-PROHIBITED-SEECONSTRAINT``
  (the words are in ``plus:OtherConstraints``), ``DMI-PROHIBITED-SEEEMBEDDEDRIGHTSEXPR``,
  ``DMI-PROHIBITED-SEELINKEDRIGHTSEXPR``: a reservation for AI training.

XMP packets are found by scanning the bytes for ``<x:xmpmeta`` ... ``</x:xmpmeta>``, which the XMP
specification makes possible in any file format (JPEG APP1, PNG iTXt, WebP, TIFF, HEIF alike), so nothing
is decoded. A packet that does not parse gives a note, never an exception; a packet with a DOCTYPE is
refused (entities are how XML parsers are attacked).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from .records import Found, Reservation

__all__ = ["PLUS_NS", "DMI_VOCAB", "DMI_VALUES", "RESERVING", "find_packets", "read_xmp", "data_mining_xmp"]

PLUS_NS = "http://ns.useplus.org/ldf/xmp/1.0/"
DMI_VOCAB = "http://ns.useplus.org/ldf/vocab/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DMI_VALUES = ("DMI-UNSPECIFIED", "DMI-ALLOWED", "DMI-PROHIBITED-AIMLTRAINING", "DMI-PROHIBITED-GENAIMLTRAINING",
              "DMI-PROHIBITED-EXCEPTSEARCHENGINEINDEXING", "DMI-PROHIBITED", "DMI-PROHIBITED-SEECONSTRAINT",
              "DMI-PROHIBITED-SEEEMBEDDEDRIGHTSEXPR", "DMI-PROHIBITED-SEELINKEDRIGHTSEXPR")
#: The values that reserve AI training.
RESERVING = frozenset(v for v in DMI_VALUES if v.startswith("DMI-PROHIBITED"))
#: At most this many XMP packets are read per file (a JPEG may carry standard and extended XMP).
MAX_PACKETS = 8
#: A packet larger than this is not parsed (a note says so).
MAX_PACKET_BYTES = 4 << 20

_START = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?x[ma]pmeta[\s>]")
_END = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?x[ma]pmeta\s*>")
_RULE = "iptc:DataMining"


def find_packets(data: bytes) -> list[bytes]:
    """The XMP packets (``<x:xmpmeta ...>...</x:xmpmeta>``) in ``data``, in file order."""
    out: list[bytes] = []
    pos = 0
    while len(out) < MAX_PACKETS:
        if data.find(b"xmpmeta", pos) < 0 and data.find(b"xapmeta", pos) < 0:  # cheap early exit
            break
        m = _START.search(data, pos)
        if m is None:
            break
        end = _END.search(data, m.end())
        if end is None:
            out.append(data[m.start():])  # cut short: parsed, and reported as malformed
            break
        out.append(data[m.start():end.end()])
        pos = end.end()
    return out


def _value(text: str) -> str:
    v = text.strip()
    if v.lower().startswith(DMI_VOCAB.lower()):
        v = v[len(DMI_VOCAB):]
    return v.strip().upper()


def _texts(el: ET.Element) -> list[str]:
    """An XMP property's values: its text, its rdf:resource, or the items of an rdf:Alt/Bag/Seq in it."""
    out = []
    res = el.get(f"{{{RDF_NS}}}resource")
    if res:
        out.append(res)
    if el.text and el.text.strip():
        out.append(el.text)
    for li in el.iter(f"{{{RDF_NS}}}li"):
        if li.text and li.text.strip():
            out.append(li.text)
    return out


def _parse(packet: bytes) -> tuple[list[str], list[str]]:
    """``(DataMining values, OtherConstraints texts)`` of one packet; raises ValueError when malformed."""
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:
        raise ValueError("an XMP packet with a DOCTYPE or ENTITY is not read")
    if len(packet) > MAX_PACKET_BYTES:
        raise ValueError(f"an XMP packet of {len(packet):,} bytes is too large to read")
    try:
        root = ET.fromstring(packet)
    except ET.ParseError as e:
        raise ValueError(f"malformed XMP ({e})") from None
    values: list[str] = []
    constraints: list[str] = []
    key, other = f"{{{PLUS_NS}}}DataMining", f"{{{PLUS_NS}}}OtherConstraints"
    for el in root.iter():
        if key in el.attrib:
            values.append(el.attrib[key])
        if other in el.attrib:
            constraints.append(el.attrib[other])
        if el.tag == key:
            values += _texts(el)
        elif el.tag == other:
            constraints += _texts(el)
    return values, constraints


def read_xmp(data: bytes) -> Found:
    """The IPTC Data Mining reservations in ``data``'s XMP, with a note per packet or value that is not
    understood."""
    found = Found()
    for packet in find_packets(data):
        try:
            values, constraints = _parse(packet)
        except ValueError as e:
            found.notes.append(f"embedded: {e}")
            continue
        for raw in values:
            v = _value(raw)
            if v in RESERVING:
                detail = "; ".join(c.strip() for c in constraints if c.strip())[:300] if v.endswith("SEECONSTRAINT") else ""
                r = Reservation("embedded", _RULE, v, detail)
                if r not in found.reservations:
                    found.reservations.append(r)
            elif v not in DMI_VALUES:
                found.notes.append(f"embedded: unknown plus:DataMining value {raw.strip()[:80]!r}")
    return found


def data_mining_xmp(value: str, *, constraint: str | None = None) -> bytes:
    """An XMP packet that says ``plus:DataMining`` = ``value`` (a :data:`DMI_VALUES` name), with
    ``plus:OtherConstraints`` when given: what ``matcher optout add --mark-copies`` writes."""
    from xml.sax.saxutils import escape, quoteattr

    if value not in DMI_VALUES:
        raise ValueError(f"{value!r} is not an IPTC Data Mining value ({', '.join(DMI_VALUES)})")
    other = ""
    if constraint:
        other = (f"<plus:OtherConstraints><rdf:Alt><rdf:li xml:lang=\"x-default\">{escape(constraint)}</rdf:li>"
                 f"</rdf:Alt></plus:OtherConstraints>")
    body = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:plus={quoteattr(PLUS_NS)} '
        f'plus:DataMining={quoteattr(DMI_VOCAB + value)}>{other}</rdf:Description>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )
    return body.encode("utf-8")
