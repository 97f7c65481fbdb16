"""Running a simulator: as a real server (`syncd simulate`) or in a thread for tests."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def listening_socket(host: str, port: int) -> socket.socket:
    """Return a bound TCP socket whose accepted connections send without Nagle delays.

    Accepted sockets inherit TCP_NODELAY on Linux; without it each answer written
    in two parts waits ~40 ms for the client's delayed ACK.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def serve(app: Any, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` on a socket from :func:`listening_socket` until interrupted.

    The caller binds it first, so it can say which port port 0 became.
    """
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


# How long a simulator stopped by the end of `running` lets a request still in hand
# finish: a slow answer (a fault's or a quirk's 1.5 s) lands, one held on purpose for
# tens of seconds (a dialer that never answers) is cancelled. Without it the stop
# waited for every such answer, and gave up on the thread after 10 s.
STOP_GRACE_S = 3  # whole seconds: uvicorn takes an int


@contextmanager
def running(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Yield the base URL of ``app`` served on loopback from a background thread."""
    sock = listening_socket(host, port)
    config = uvicorn.Config(
        app,
        log_level="critical",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=STOP_GRACE_S,
    )
    server = uvicorn.Server(config)
    started = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def main() -> None:
            task = asyncio.ensure_future(server.serve(sockets=[sock]))
            while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
                await asyncio.sleep(0.01)
            started.set()
            await task

        loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=run, name="simulator", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("simulator did not start")
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
