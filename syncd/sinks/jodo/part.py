"""What every part of the Jodo sink works with (the outcome poller, reallocator, disposer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncd.core.clock import SYSTEM_CLOCK, Clock
from syncd.sinks.jodo.client import JodoClient
from syncd.sinks.jodo.config import JodoSinkConfig
from syncd.state.base import SinkStore


class JodoPart:
    """Holds the client, the store, the sink's config, its bound log and its dial format."""

    def __init__(
        self,
        client: JodoClient,
        store: SinkStore,
        config: JodoSinkConfig,
        log: Any,
        dial: Callable[[str], str],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.client = client
        self.clock = clock
        self.store = store
        self.cfg = config
        self.log = log
        self.dial = dial
        self.setup()

    def setup(self) -> None:
        """Set what a part derives from the config; the default derives nothing."""
