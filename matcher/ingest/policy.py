"""What a download may do and where it may connect: :class:`FetchSettings` and the public-address test.

Kept apart from :mod:`matcher.ingest.fetch` (the downloader) so that what only needs the settings (the
CLI's options, an ``add`` of local files) does not import aiohttp.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

__all__ = ["FetchSettings", "is_public_address", "IPAddress"]


def _package_version() -> str:
    """matcher's version for the User-Agent: the package's ``__version__``, else installed metadata."""
    try:
        from matcher import __version__

        return str(__version__)
    except ImportError:
        pass
    from importlib import metadata

    try:
        return metadata.version("photo-dataset-check")
    except metadata.PackageNotFoundError:
        return "dev"


_USER_AGENT = (
    f"matcher/{_package_version()} "
    "(dataset provenance lookup; +https://github.com/matcher-project/matcher)"
)


@dataclass(frozen=True)
class FetchSettings:
    """How downloads are made. The defaults suit a large crawl of public image hosts."""

    concurrency: int = 64
    """Total requests in flight."""
    per_host: int = 8
    """Simultaneous connections to one scheme/host/port (0 means no per-host limit)."""
    connect_timeout: float = 10.0
    """Seconds to resolve the host and open the connection (TLS included)."""
    timeout: float = 30.0
    """Seconds per attempt, from connecting to the last body byte, redirects included."""
    retries: int = 3
    """Extra attempts after the first, only for timeouts, connection errors, 429 and 5xx."""
    backoff: float = 0.5
    """Base delay in seconds between attempts: ``backoff * 2**attempt``, jittered.
    A ``Retry-After`` header in seconds form overrides it (capped at 30 s)."""
    max_bytes: int = 50 * 1024 * 1024
    """Largest body accepted, checked against Content-Length and while streaming."""
    max_redirects: int = 5
    """Redirect hops followed before giving up."""
    allow_private: bool = False
    """Allow loopback/private/link-local/etc. targets (tests and intranet mirrors)."""
    allow_networks: tuple[str, ...] = ()
    """Non-public networks allowed all the same, as CIDR (``"10.1.2.0/24"``, ``"127.0.0.1/32"``): an
    intranet mirror, without opening every private address to redirects."""
    user_agent: str = _USER_AGENT
    """Sent with every request, so site operators can tell who is fetching."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.per_host < 0:
            raise ValueError(f"per_host must be 0 (no limit) or more, got {self.per_host}")
        for name in ("connect_timeout", "timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, got {self.retries}")
        if not (self.backoff >= 0 and math.isfinite(self.backoff)):
            raise ValueError(f"backoff must be 0 or more seconds, got {self.backoff}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {self.max_bytes}")
        if self.max_redirects < 0:
            raise ValueError(f"max_redirects must be 0 or more, got {self.max_redirects}")
        if isinstance(self.allow_networks, str):
            raise ValueError("allow_networks must be a sequence of CIDR strings, not one string")
        nets = []
        for net in self.allow_networks:
            try:
                nets.append(ipaddress.ip_network(net, strict=False))
            except ValueError:
                raise ValueError(f"allow_networks: {net!r} is not an IP network (e.g. 10.1.2.0/24)") from None
        object.__setattr__(self, "allow_networks", tuple(str(n) for n in nets))

    def allows(self, address: str | IPAddress) -> bool:
        """Whether connecting to ``address`` is allowed: a public address, or one in :attr:`allow_networks`."""
        if self.allow_private or is_public_address(address):
            return True
        ip = address if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else (
            ipaddress.ip_address(address)
        )
        return any(ip in ipaddress.ip_network(net) for net in self.allow_networks)


_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NEVER_PUBLIC_V6 = (
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated), unspecified, loopback
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
    ipaddress.IPv6Network("fec0::/10"),  # deprecated site-local
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_public_address(address: str | IPAddress) -> bool:
    """True if ``address`` is a globally routable unicast IP we may connect to.

    False for loopback, private, link-local (cloud metadata lives there),
    shared/CGNAT, documentation, benchmarking, reserved, unspecified and
    multicast addresses. IPv6 forms that carry an IPv4 address (IPv4-mapped
    ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by
    the IPv4 address inside. Raises ValueError if ``address`` is not an IP address.
    """
    ip = address if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else (
        ipaddress.ip_address(address)
    )
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            ip = inner
        elif any(ip in net for net in _NEVER_PUBLIC_V6):
            return False
    return ip.is_global and not ip.is_multicast
