"""The listening socket of ``matcher serve``, bound before anything is said or opened: a port another program
holds is a clear error (exit 2), never a "serving" line followed by a crash."""

from __future__ import annotations

import errno
import socket

from matcher.errors import MatcherError

__all__ = ["listen_socket"]


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` (not yet listening); MatcherError with what to do when the port is taken
    or the address is not this machine's."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise MatcherError(f"cannot listen on {host}: {e.strerror}; give --host an address of this machine") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart right after a stop works
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise MatcherError(f"port {port} on {host} is already in use (another matcher serve, or another program); "
                               f"stop it or choose another port with --port") from None
        raise MatcherError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock
