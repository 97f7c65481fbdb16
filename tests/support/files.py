"""Files as a CRM's writer leaves them in the inbox."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TypeVar

PathT = TypeVar("PathT", Path, bytes)


def settled(path: PathT, seconds_ago: float = 60.0) -> PathT:
    """Return ``path`` with its modification time moved back: a file nobody writes to now.

    The CSV source claims a file only once it has not changed for ``settle_s``.
    """
    when = time.time() - seconds_ago
    os.utime(path, (when, when))
    return path
