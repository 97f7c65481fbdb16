"""A tiny dialer with a token login, and a vendor for ``syncd.net.session`` that talks to it.

The server hands out tokens at ``POST /login`` and answers ``POST /work`` with 401
unless the request carries a token it still holds, in the ``Authorization`` header
or in the form field ``token``. Tests expire tokens, refuse logins or refuse every
token, then ask it what it saw.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from syncd.errors import SinkConfigError
from syncd.net.http import URGENT
from syncd.net.session import with_form
from syncd.simulators.server import running

PASSWORD = "right-password"


@dataclass
class TokenServer:
    """What the server holds and what it saw."""

    valid: set[str] = field(default_factory=set)
    login_attempts: int = 0
    logins: int = 0  # logins that got a token
    refuse_logins: bool = False
    refuse_every_token: bool = False  # a token is refused even right after its login
    work: list[tuple[str, str]] = field(default_factory=list)  # (token sent, "ok" | "401")
    bodies: list[dict[str, str]] = field(default_factory=list)  # the forms /work answered
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expire(self) -> None:
        with self.lock:
            self.valid.clear()

    async def login(self, request: Request) -> Response:
        form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        with self.lock:
            self.login_attempts += 1
            if self.refuse_logins or form.get("password") != PASSWORD:
                return PlainTextResponse("refused")
            self.logins += 1
            token = f"t{self.logins}"
            self.valid.add(token)
        return PlainTextResponse(token)

    async def do_work(self, request: Request) -> Response:
        form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        token = form.pop("token", "") or request.headers.get("authorization", "").removeprefix(
            "Token "
        )
        with self.lock:
            ok = token in self.valid and not self.refuse_every_token
            self.work.append((token, "ok" if ok else "401"))
            if not ok:
                return PlainTextResponse("expired", status_code=401)
            self.bodies.append(form)
        return PlainTextResponse(json.dumps(form))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/login", self.login, methods=["POST"]),
                Route("/work", self.do_work, methods=["POST"]),
            ]
        )


@contextmanager
def serving(server: TokenServer) -> Iterator[str]:
    with running(server.app()) as url:
        yield url


class TokenVendor:
    """The vendor's part of the session for TokenServer: log in, attach, recognise a 401."""

    vendor = "tokens"

    def __init__(
        self, http: httpx.AsyncClient, url: str, *, in_body: bool = False, password: str = PASSWORD
    ) -> None:
        self.http = http
        self.url = url
        self.in_body = in_body
        self.password = password

    async def login(self) -> str:
        response = await self.http.post(
            self.url + "/login",
            data={"user": "syncd", "password": self.password},
            extensions={URGENT: True},
        )
        if response.text == "refused":
            raise SinkConfigError("login as 'syncd' refused; check the password", vendor="tokens")
        return response.text

    def attach(self, request: httpx.Request, token: str) -> httpx.Request:
        if self.in_body:
            fields = dict(urllib.parse.parse_qsl(request.content.decode()))
            return with_form(request, {**fields, "token": token})
        request.headers["Authorization"] = f"Token {token}"
        return request

    def expired(self, response: httpx.Response, *, replayed: bool) -> str | None:
        return "work: HTTP 401" if response.status_code == 401 else None
