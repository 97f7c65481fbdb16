"""A loopback forward proxy, as a corporate egress proxy would be, that counts what it carries.

It takes plain HTTP requests in absolute form (``POST http://host:port/path``) and
``CONNECT host:port`` tunnels for HTTPS. Every host it is asked for is reached on
127.0.0.1: a sink's url can name a host that does not resolve (``jodo.invalid``),
so a request that arrives proves it came through the proxy.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.parse
from typing import Any


class ForwardProxy:
    """Serves on 127.0.0.1:<port>; ``requests`` lists what it forwarded."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []  # "POST jodo.invalid:8080/path" or "CONNECT host:port"
        self.authorizations: list[str | None] = []  # Proxy-Authorization per request
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.transport.abort()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [h for h in lines[1:] if h]
        auth = next(
            (h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-auth")),
            None,
        )
        if method == "CONNECT":
            self.requests.append(f"CONNECT {target}")
            self.authorizations.append(auth)
            port = int(target.rsplit(":", 1)[1])
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                self._writers.add(up_writer)
            except OSError:
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._pipe_both(reader, writer, up_reader, up_writer)
            return
        url = urllib.parse.urlsplit(target)
        self.requests.append(f"{method} {url.hostname}:{url.port}{url.path}")
        self.authorizations.append(auth)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", url.port or 80)
            self._writers.add(up_writer)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        path = url.path + (f"?{url.query}" if url.query else "")
        kept = [
            h for h in headers if not h.lower().startswith(("proxy-", "connection:", "keep-alive:"))
        ]
        # One request per connection: the upstream closes after its answer, and so do we.
        upstream_head = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close"])
        up_writer.write(upstream_head.encode("latin-1") + b"\r\n\r\n")
        await up_writer.drain()
        await self._pipe_both(reader, writer, up_reader, up_writer)

    async def _pipe_both(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        upward = asyncio.ensure_future(pipe(reader, up_writer))
        await pipe(up_reader, writer)  # the answer has ended: the exchange is over
        upward.cancel()
        await asyncio.gather(upward, return_exceptions=True)
        for w in (writer, up_writer):
            w.transport.abort()
            self._writers.discard(w)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
