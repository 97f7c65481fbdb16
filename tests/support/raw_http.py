"""A server of one HTTP answer written by hand: what no framework would send (a body
longer than asked for, a gzip bomb, a Range ignored), byte for byte."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def one_answer(answer: Callable[[socket.socket], None], path: str = "/") -> Iterator[str]:
    """Yield the URL of a loopback server that reads one request's head, then lets
    ``answer`` write to the connection; a client that leaves early ends the answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            try:
                answer(conn)
            except OSError:  # the client closed once it had enough
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        thread.join(timeout=60)
        listener.close()
