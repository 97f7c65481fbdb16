"""The mapping workers: processes that hold nothing of their parent and die with it.

A pull fans large chunks out to a process pool. Forked workers inherited the parent's
open files: its SQLite lock file (the next cron run then found the store "in use by
another syncd" whose pid was long dead) and its PostgreSQL socket (an orphan kept the
dead replica's transaction open, with row locks the other replicas waited on). When the
OOM killer takes the main process alone, nothing ended those orphans.

So the workers come from a fork server (a fresh interpreter that never opened a store
or a socket) and each watches the process that started it, exiting the moment it is
gone, kill -9 included.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

# Imported once in the fork server, so a worker starts without importing them again.
PRELOAD = ["syncd.run.pull"]
ORPHAN_POLL_S = 1.0  # where pidfd is missing: how often a worker looks for its parent


def mapping_pool(
    workers: int, prepare: Callable[..., Any], args: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """Return a pool of ``workers`` processes that die with this process (see module doc).

    ``prepare(*args)`` runs first in each worker: what a forked worker used to inherit
    (the phone library chosen) it now sets up itself.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start,
        initargs=(os.getpid(), prepare, args),
    )


def _start(parent: int, prepare: Callable[..., Any], args: tuple[Any, ...]) -> None:
    die_with(parent)
    prepare(*args)


def die_with(parent: int) -> None:
    """Make this worker exit as soon as process ``parent`` is gone."""
    watch = threading.Thread(target=_watch, args=(parent,), name="syncd-parent", daemon=True)
    watch.start()


def _watch(parent: int) -> None:
    try:
        handle = os.pidfd_open(parent)
    except (AttributeError, OSError):  # not Linux 5.3+, or already gone
        _poll(parent)
    else:
        select.select([handle], [], [])  # readable once the process has exited
    os._exit(1)  # no cleanup: what it holds belongs to a process that is gone


def _poll(parent: int) -> None:
    while True:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass  # it exists under another user: a reused pid is not ours, but rare enough
        time.sleep(ORPHAN_POLL_S)
