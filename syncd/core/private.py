"""Files and folders syncd creates that hold personal data: private to its user, like the store.

Rejects files, error notes and CSV outbox files carry phone numbers and e-mail
addresses; they are created 0600 in folders created 0700 (an existing folder
keeps the mode its owner gave it).
"""

from __future__ import annotations

import os
import tempfile
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


def folder_problem(path: Path, *, may_create: bool) -> str | None:
    """Return why syncd could not write in folder ``path``, or None when it can.

    It is tried, not inferred from mode bits (ACLs, read-only mounts, root): a file
    is made and deleted there, or, for a folder syncd would create, a folder in the
    nearest one that exists. Nothing is left behind.
    """
    if path.exists() and not path.is_dir():
        return f"{path} is not a folder"
    target = path
    if not path.exists():
        if not may_create:
            return f"{path} does not exist"
        target = next(p for p in path.parents if p.exists())
        if not target.is_dir():
            return f"{path} cannot be created: {target} is not a folder"
    try:
        if target == path:
            fd, name = tempfile.mkstemp(dir=path, prefix=".syncd-check-")
            os.close(fd)
            os.unlink(name)
        else:
            os.rmdir(tempfile.mkdtemp(dir=target, prefix=".syncd-check-"))
    except OSError as exc:
        where = "write in" if target == path else f"create {path} (in {target})"
        return f"cannot {where}: {exc.strerror}"
    return None
