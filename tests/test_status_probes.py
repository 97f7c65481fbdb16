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
from collections.abc import Callable

from syncd.net.http import make_client, status_only
from tests.support.raw_http import one_answer

BODY = 200 << 20  # 200 MB announced and sent, whatever the request asked for
CHUNK = 1 << 20


def ignoring_range(sent: list[int]) -> Callable[[socket.socket], None]:
    """Answer 200 with a 200 MB body whatever was asked; count the bytes the client took."""

    def answer(conn: socket.socket) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\nContent-Type: audio/mpeg\r\n\r\n"
        conn.sendall(head.encode())
        chunk = b"x" * CHUNK
        for _ in range(BODY // CHUNK):
            conn.sendall(chunk)
            sent[0] += CHUNK

    return answer


async def probe(url: str, method: str) -> int:
    async with make_client(timeout_s=30, verify_tls=True) as http:
        return await status_only(http, method, url, headers={"Range": "bytes=0-0"})


def test_a_status_probe_of_a_server_that_ignores_range_reads_none_of_its_body() -> None:
    for method in ("GET", "OPTIONS"):
        sent = [0]
        with one_answer(ignoring_range(sent), "/r.mp3") as url:
            assert asyncio.run(probe(url, method)) == 200
        # what the server got out before the client closed: socket buffers, not 200 MB
        assert sent[0] < 50 * CHUNK, (method, sent[0])
