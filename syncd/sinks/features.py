"""A sink's optional features: helper endpoints it can do without.

Queue figures, recording links, GSM conversion, dispositions: a server of an older
release, or an API user with fewer rights, answers 404 or 403 for them. That turns
the one feature off (said once in the log, ``sink.feature.off``, and kept as a
warning in `syncd status` and /readyz) while leads keep flowing; it does not stop
the sink. A reopened sink (a reload, a re-check) asks again.
"""

from __future__ import annotations

from typing import Any

from syncd.errors import SinkConfigError, VendorError

OFF_STATUSES = frozenset({"403", "404"})  # the server lacks the call, or the user may not use it


class OptionalFeatures:
    """Which of a sink's optional features are off, and why; each said once."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self._off: dict[str, str] = {}

    def is_off(self, feature: str) -> bool:
        return feature in self._off

    def turn_off(self, feature: str, exc: VendorError, *, action: str) -> bool:
        """Turn ``feature`` off if ``exc`` is a 403/404 for it; return True when it is off.

        Any other error is not about the feature's presence: the caller handles it.
        """
        if not isinstance(exc, SinkConfigError) or exc.code not in OFF_STATUSES:
            return False
        if feature not in self._off:
            self._off[feature] = (
                f"{feature} is off: the dialer answered HTTP {exc.code} for it; {action}"
            )
            self.log.warning(
                "sink.feature.off",
                feature=feature,
                status=int(exc.code),
                reason=str(exc),
                action=action,
            )
        return True

    def warnings(self) -> list[str]:
        """Return one line per feature that is off, for `syncd status` and /readyz."""
        return list(self._off.values())
