"""Reading what syncd logged: its JSON log lines, as a user's log shipper would."""

from __future__ import annotations

import json
from typing import Any


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    """Return every JSON log line of ``stderr`` whose event is ``name``, in order."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == name:
                found.append(entry)
    return found
