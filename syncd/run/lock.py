"""An exclusive lock on the state store's directory: one syncd per store.

A second ``--once`` (or a ``--once`` while the daemon runs) exits at once with
code 75 (EX_TEMPFAIL, cron's "try later") naming the holder's PID. The kernel
drops a flock when its process dies, kill -9 included: no stale lock files.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from syncd.errors import StoreError, StoreLockedError

if TYPE_CHECKING:  # an annotation only: `syncd --help` and `status` import this module
    from syncd.config import StateConfig

EXIT_LOCKED = 75


def _read_holder(fd: int) -> str:
    """Return the PID written in the lock file, or "unknown" if the holder never writes it.

    The holder writes its PID just after it wins the flock; a loser arriving in
    that instant finds the new file empty, so it looks again for a moment.
    """
    for _ in range(50):
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder:
            return holder
        time.sleep(0.01)
    return "unknown"


class StoreLock:
    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self.path = Path(store_path).parent / "syncd.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(
                f"cannot create the lock file {self.path}: {exc.strerror or exc}; "
                "state.path must point into a folder syncd can write"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreLockedError(str(self.path.parent), holder) from None
        # Write first, then cut to length: a process reading the holder's PID never
        # sees the file empty (truncating first left a window for "pid unknown").
        pid = f"{os.getpid()}\n".encode()
        os.pwrite(fd, pid, 0)
        os.ftruncate(fd, len(pid))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def store_lock(cfg: StateConfig) -> AbstractContextManager[object]:
    """Return the lock a process holds while it works on the store.

    A SQLite store is one host's: one syncd at a time. A PostgreSQL store is shared
    by replicas, which divide the work through the store itself (leases, leaders).
    """
    return nullcontext() if cfg.shared else StoreLock(cfg.path)
