"""Files and folders syncd creates that hold personal data: private to its user, like the store.

Rejects files, error notes and CSV outbox files carry phone numbers and e-mail
addresses; they are created 0600 in folders created 0700 (an existing folder
keeps the mode its owner gave it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) 0700 if missing."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)


def open_private(path: Path, mode: str = "w", **kwargs: Any) -> IO[Any]:
    """Open ``path`` for writing, creating it 0600 whatever the umask (``w``, ``a``, ``r+``…)."""
    flags = os.O_CREAT | (os.O_RDWR if "+" in mode or "r" in mode else os.O_WRONLY)
    if "w" in mode:
        flags |= os.O_TRUNC
    if "a" in mode:
        flags |= os.O_APPEND
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an older file of another mode is made private too
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def write_private_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, created 0600."""
    with open_private(path, "w", encoding="utf-8") as fh:
        fh.write(text)
