"""A simulator served from a forked process, for benches that time a sink against it.

The bench's own event loop then measures syncd alone: the simulator's work (dialling,
answering) runs on the other core, as a real dialer's would.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from syncd.simulators.server import listening_socket  # noqa: E402


def get_json(url: str) -> dict[str, Any]:
    """Return a bench route's JSON answer (what the simulator counted)."""
    with urllib.request.urlopen(url, timeout=30) as reply:
        return dict(json.loads(reply.read()))


@contextlib.contextmanager
def forked_server(serve: Callable[..., None], *args: Any, ready_path: str) -> Iterator[str]:
    """Yield the URL of ``serve(sock, *args)`` run in a forked child, once ``ready_path``
    answers; the child is ended on the way out."""
    sock: socket.socket = listening_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    child = multiprocessing.get_context("fork").Process(
        target=serve, args=(sock, *args), daemon=True
    )
    child.start()
    try:
        for _ in range(100):
            try:
                get_json(url + ready_path)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        child.terminate()
        child.join(10)
