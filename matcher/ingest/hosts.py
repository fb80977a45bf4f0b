"""What address a URL's host names, read as the C library reads it, before any connection is made.

``inet_aton`` (which ``getaddrinfo``, and so every HTTP client, falls back on for a host that looks
numeric) accepts far more than dotted quads: ``2130706433`` (one 32-bit number), ``0177.0.0.1`` (octal
parts), ``0x7f.1`` (hex parts), ``127.1`` (the last part fills the remaining bytes), ``0`` (0.0.0.0, which
Linux connects to the local host). All of these are 127.0.0.1. :func:`host_address` parses every such form
itself, and IPv6 literals (zone ids included), so the download guard (:mod:`matcher.ingest.fetch`) refuses a
non-public address from the URL alone, whatever the HTTP library's own parsing does.
"""

from __future__ import annotations

import ipaddress

__all__ = ["host_address", "parse_ipv4_loose"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# bits the last part may fill, by the number of parts (glibc inet_aton)
_LAST_BITS = {1: 32, 2: 24, 3: 16, 4: 8}


def _number(part: str) -> int | None:
    """One part as inet_aton reads it: 0x.. hex, 0.. octal, else decimal; None if not a number."""
    if not part or not part.isascii():
        return None
    if part[:2].lower() == "0x":
        digits, base = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    try:
        value = int(digits, base)
    except ValueError:
        return None
    if digits.strip() != digits or not digits.isalnum():  # int() accepts "_", "+", spaces: inet_aton does not
        return None
    return value if value <= 0xFFFFFFFF else None


def parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``host`` stands for in any form ``inet_aton`` accepts, or None if it is not one."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = [_number(p) for p in parts]
    if any(v is None for v in values):
        return None
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << _LAST_BITS[len(parts)]:
        return None
    value = 0
    for v in head:
        value = value << 8 | v
    return ipaddress.IPv4Address(value << _LAST_BITS[len(parts)] | last)


def host_address(host: str) -> IPAddress | None:
    """The address a URL host (as yarl gives it: no brackets) is, if it is a literal in any form; None for a
    name (DNS decides: the resolver guard checks its answers). A trailing dot is ignored."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if "%" in text:  # fe80::1%eth0: judged without its zone
        try:
            return ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return None
    return parse_ipv4_loose(text[:-1] if text.endswith(".") else text)
