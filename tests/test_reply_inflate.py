"""A compressed reply is inflated with the same cap as any other (issue 29, point 3).

64 KB of gzip can hold 64 MB of text: inflating each piece the network brings, whole,
lets a hostile or broken dialer put tens of MB in memory per piece before the cap is
looked at. syncd inflates in steps no larger than what the cap still allows.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import tracemalloc
import zlib
from collections.abc import Callable

import httpx

from syncd.net.http import CUT, make_client, post
from tests.support.raw_http import one_answer


def bomb() -> bytes:
    """Return 100 MB of zeros, gzipped: about 100 KB, a piece or two of the network's."""
    inflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join([*(inflater.compress(zeros) for _ in range(100)), inflater.flush()])


def answering(body: bytes, encoding: str) -> Callable[[socket.socket], None]:
    """Answer 200 with ``body`` as it is, under ``Content-Encoding: encoding``."""

    def answer(conn: socket.socket) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
            f"Content-Encoding: {encoding}\r\nContent-Type: application/json\r\n\r\n"
        )
        conn.sendall(head.encode() + body)

    return answer


async def send(url: str, cap: int) -> httpx.Response:
    async with make_client(timeout_s=30, verify_tls=True) as http:
        return await post(http, url, cap=cap, content=b"{}")


def test_a_gzip_bomb_is_cut_at_the_cap_without_inflating_past_it() -> None:
    with one_answer(answering(bomb(), "gzip")) as url:
        tracemalloc.start()
        try:
            reply = asyncio.run(send(url, cap=1 << 20))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert reply.extensions[CUT] is True
    assert peak < 16 << 20, peak  # the cap and a step, not a network piece inflated whole


def test_a_gzip_or_deflate_reply_within_the_cap_reads_as_sent() -> None:
    data = json.dumps({"statuscode": "001", "rows": list(range(5000))}).encode()
    for encoding, body in (
        ("gzip", gzip.compress(data)),
        ("deflate", zlib.compress(data)),
        ("deflate", zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
    ):
        with one_answer(answering(body, encoding)) as url:
            reply = asyncio.run(send(url, cap=1 << 20))
        assert reply.extensions[CUT] is False, encoding
        assert reply.json()["rows"][-1] == 4999, encoding
