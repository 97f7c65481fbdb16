"""Clients that hold a port's connections without finishing a request (issue 29), and a
daemon with few files to spare, so a few hundred of them reach its limit."""

from __future__ import annotations

import contextlib
import resource
import socket
from collections.abc import Callable, Iterator

# A request head cut off mid-header: the server must wait for the rest, or give up on it.
HALF_HEAD = b"GET /status HTTP/1.1\r\nHost: localhost\r\nX-a: "


def open_files(limit: int) -> Callable[[], None]:
    """Return a ``preexec_fn`` that caps the child's open files at ``limit`` (soft and hard)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return cap


@contextlib.contextmanager
def half_sent(port: int, count: int, head: bytes = HALF_HEAD) -> Iterator[list[socket.socket]]:
    """Open ``count`` connections to ``port`` on loopback, each sending only ``head``; closed
    on exit. A connection the server's backlog does not take is skipped, not an error."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.settimeout(5)
            try:
                conn.connect(("127.0.0.1", port))
                conn.sendall(head)
            except OSError:
                conn.close()
                continue
            opened.append(conn)
        yield opened
    finally:
        for conn in opened:
            conn.close()


def closed_by_peer(conn: socket.socket) -> bool:
    """Return True when the server has closed ``conn`` (EOF or reset), False while it is open."""
    conn.setblocking(False)
    try:
        return conn.recv(4096) == b""  # a 503 then EOF: the next call sees the EOF
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True
