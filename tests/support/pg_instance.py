"""A PostgreSQL server of the test's own, which the test may stop and restart.

The shared test database (``SYNCD_TEST_PG_URL``) must not be restarted under the other
tests; this one lives in a temporary directory on a free port. ``initdb`` refuses to
run as root, so as root the server runs as the ``postgres`` OS user (``runuser``).
Without the binaries the test skips, or fails under CI (it must run there).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

OS_USER = "postgres"


def binaries() -> Path:
    """Return the folder of initdb and pg_ctl; skip (fail under CI) when there is none."""
    found = shutil.which("initdb")
    candidates = [str(Path(found).resolve().parent)] if found else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    why = "no PostgreSQL server binaries (initdb, pg_ctl) on this machine"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}; CI must run the database-restart tests")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgInstance:
    """``initdb`` once, then ``start``, ``stop`` and ``restart`` on one port and folder."""

    def __init__(self) -> None:
        self.bin = binaries()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                import pwd

                self.owner = pwd.getpwnam(OS_USER)
            except KeyError:
                pytest.fail(f"running as root, and there is no {OS_USER!r} OS user to run as")
        # Not under pytest's tmp_path: that is private to root, the server's user must
        # reach its folder.
        self.root = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        if self.as_root:
            os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--no-sync")  # fmt: skip
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", OS_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            server = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stderr or done.stdout}\n{server}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off"  # a test's database: speed over safety
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` ends every session (as a restart does), ``immediate``
        is a crash (recovery at the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def pg_instance() -> Iterator[PgInstance]:
    """Yield a started server of the test's own; it is stopped and removed afterwards."""
    instance = PgInstance()
    try:
        instance.start()
        yield instance
    finally:
        instance.remove()
