"""Certificates made by the test (the ``openssl`` command) and a simulator served over HTTPS.

``private_ca(dir)`` makes a certificate authority and a server certificate it
signed for 127.0.0.1, as a company's own CA would; ``self_signed(dir)`` a server
certificate signed by itself. Nothing is added to any trust store.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from syncd.simulators.server import listening_socket

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class ServerCert:
    cert: Path
    key: Path
    ca: Path | None  # the PEM a client must trust (None: self-signed, trust cert itself)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def private_ca(directory: Path) -> ServerCert:
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", *EC, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=syncd test private CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", *EC, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=directory,
    )  # fmt: skip
    (directory / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        encoding="ascii",
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
        cwd=directory,
    )  # fmt: skip
    return ServerCert(directory / "server.pem", directory / "server.key", directory / "ca.pem")


def self_signed(directory: Path) -> ServerCert:
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", *EC, "-keyout", "self.key", "-out", "self.pem", "-days", "2",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        cwd=directory,
    )  # fmt: skip
    return ServerCert(directory / "self.pem", directory / "self.key", None)


@contextmanager
def running_tls(app: Any, cert: ServerCert) -> Iterator[str]:
    """Yield the https:// base URL of ``app`` served on loopback with ``cert``."""
    sock = listening_socket("127.0.0.1", 0)
    config = uvicorn.Config(
        app,
        log_level="critical",
        access_log=False,
        lifespan="off",
        ssl_certfile=str(cert.cert),
        ssl_keyfile=str(cert.key),
    )
    server = uvicorn.Server(config)
    started = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()

        async def main() -> None:
            task = asyncio.ensure_future(server.serve(sockets=[sock]))
            while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
                await asyncio.sleep(0.01)
            started.set()
            await task

        loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=run, name="tls-simulator", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("TLS simulator did not start")
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
