"""Every way to write an IPv4 or IPv6 address in a URL host is parsed by matcher itself and refused before
any connection (issue 19, point 6), checked against the C library's own ``inet_aton``."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from yarl import URL

from matcher.errors import FetchError
from matcher.ingest import fetch as fetch_module
from matcher.ingest.fetch import FetchSettings
from matcher.ingest.hosts import host_address, parse_ipv4_loose

LOOPBACK_FORMS = ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7f000001", "017700000001", "127.0.1",
                  "0x7F.0.0.1", "127.000.000.001", "0177.1", "0x7f.0x0.0x0.0x1"]
OTHER_FORMS = ["0", "00", "0x0", "1.2.3.4", "0xffffffff", "10.1", "0xa9.0xfea9fe", "2852039166", "256.1",
               "1.2.3.256", "0x100000000", "4294967296", "09", "08.1", "0x", "1..2", "1.2.3.4.5", "a.b", "1e3",
               "+1", "1_0", "0x1g", "example.com", "127.0.0.1.", ""]


@pytest.mark.parametrize("form", LOOPBACK_FORMS + OTHER_FORMS)
def test_our_parser_reads_hosts_as_the_c_library_does(form):
    try:
        libc = ipaddress.IPv4Address(socket.inet_aton(form))
    except OSError:
        libc = None
    assert parse_ipv4_loose(form) == libc


@pytest.mark.parametrize("form", LOOPBACK_FORMS + ["0", "0x0", "10.1", "0xa9.0xfea9fe", "2852039166", "127.0.0.1."])
def test_every_non_public_form_is_refused_before_connecting(form):
    with pytest.raises(FetchError) as info:
        fetch_module._check_target(URL(f"http://{form}/a.jpg"), FetchSettings())
    assert info.value.kind == "refused", info.value.reason


@pytest.mark.parametrize("host", ["[::1]", "[::ffff:7f00:1]", "[::ffff:127.0.0.1]", "[fe80::1%25eth0]", "[::]",
                                  "[64:ff9b::a00:1]", "[2002:7f00:1::]", "[fc00::1]"])
def test_ipv6_forms_are_refused(host):
    with pytest.raises(FetchError) as info:
        fetch_module._check_target(URL(f"http://{host}/a.jpg"), FetchSettings())
    assert info.value.kind == "refused"


def test_public_forms_pass_and_names_are_left_to_dns():
    assert host_address("134744072") == ipaddress.IPv4Address("8.8.8.8")
    fetch_module._check_target(URL("http://134744072/a.jpg"), FetchSettings())
    fetch_module._check_target(URL("http://0x8.0x8.0x8.0x8/a.jpg"), FetchSettings())
    assert host_address("example.com") is None and host_address("1e3") is None
