"""Stop signals for `--once`: the first asks the run to finish in-flight work, the second exits."""

from __future__ import annotations

import asyncio
import signal


def install_stop_handlers(stop: asyncio.Event) -> None:
    """First SIGTERM/SIGINT: stop claiming work and finish in-flight batches; second: exit now."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
