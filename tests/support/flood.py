"""Clients that hold a port's connections without finishing a request (issue 29), and a
daemon with few files to spare, so a few hundred of them reach its limit."""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import threading
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


class Flood:
    """A client that keeps ``count`` connections open to ``port`` (issue 29's trial): half
    send :data:`HALF_HEAD` and then a byte every ``every_s``, the rest send nothing, and any
    the server closes is opened again. Runs in a thread until the ``with`` block ends."""

    def __init__(self, port: int, count: int, every_s: float = 0.5) -> None:
        self.port = port
        self.count = count
        self.every_s = every_s
        self.opened = 0  # connections opened, reopened ones included
        self._conns: dict[socket.socket, bool] = {}  # -> trickles
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for conn in self._conns:
            conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._drop_closed()
            self._trickle()
            self._refill()
            self._stop.wait(self.every_s)

    def _refill(self) -> None:
        while len(self._conns) < self.count and not self._stop.is_set():
            conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.settimeout(1)
            trickles = len(self._conns) % 2 == 0
            try:
                conn.connect(("127.0.0.1", self.port))
                if trickles:
                    conn.sendall(HALF_HEAD)
            except OSError:  # the backlog is full: try again next round
                conn.close()
                return
            conn.setblocking(False)
            self._conns[conn] = trickles
            self.opened += 1

    def _drop_closed(self) -> None:
        poll = select.poll()  # not select(): more than 1024 descriptors here
        by_fd = {conn.fileno(): conn for conn in self._conns}
        for fd in by_fd:
            poll.register(fd, select.POLLIN)
        for fd, _ in poll.poll(0):
            conn = by_fd[fd]
            if closed_by_peer(conn):
                del self._conns[conn]
                conn.close()

    def _trickle(self) -> None:
        for conn, trickles in list(self._conns.items()):
            if not trickles:
                continue
            try:
                conn.send(b"a")
            except OSError:
                del self._conns[conn]
                conn.close()


def most_open_files(pid: int, until: threading.Event, every_s: float = 0.01) -> Callable[[], int]:
    """Count ``pid``'s open files in a thread until ``until`` is set; return a function
    giving the most seen so far."""
    most = [0]

    def sample() -> None:
        while not until.is_set():
            with contextlib.suppress(OSError):  # the process is gone, or an fd came and went
                most[0] = max(most[0], len(os.listdir(f"/proc/{pid}/fd")))
            until.wait(every_s)

    threading.Thread(target=sample, daemon=True).start()
    return lambda: most[0]
