"""A request asked only for its status reads none of the body (issue 29, point 3).

A recording's existence (HEAD, or one byte by Range where HEAD is refused) and a
webhook writeback's reachability (OPTIONS) are answered by a status. A server that
ignores Range, or answers OPTIONS with a large page, must not have its body read:
the request ends at the status, so what the server gets out stays what the sockets
buffer, not the body.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from syncd.net.http import make_client, status_only

BODY = 200 << 20  # 200 MB announced and sent, whatever the request asked for
CHUNK = 1 << 20


@contextmanager
def ignoring_range(sent: list[int]) -> Iterator[str]:
    """Serve one request: 200 with a 200 MB body; count the bytes the client took."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\nContent-Type: audio/mpeg\r\n\r\n"
            conn.sendall(head.encode())
            chunk = b"x" * CHUNK
            try:
                for _ in range(BODY // CHUNK):
                    conn.sendall(chunk)
                    sent[0] += CHUNK
            except OSError:  # the client closed: what it took is counted
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/r.mp3"
    finally:
        thread.join(timeout=60)
        listener.close()


async def probe(url: str, method: str) -> int:
    async with make_client(timeout_s=30, verify_tls=True) as http:
        return await status_only(http, method, url, headers={"Range": "bytes=0-0"})


def test_a_status_probe_of_a_server_that_ignores_range_reads_none_of_its_body() -> None:
    for method in ("GET", "OPTIONS"):
        sent = [0]
        with ignoring_range(sent) as url:
            assert asyncio.run(probe(url, method)) == 200
        # what the server got out before the client closed: socket buffers, not 200 MB
        assert sent[0] < 50 * CHUNK, (method, sent[0])
