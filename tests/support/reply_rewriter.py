"""A transparent HTTP proxy in front of a simulator that rewrites what passes through.

Point a sink's url at :attr:`ReplyRewriter.url` instead of the simulator's: every
request goes on to the simulator, and its reply comes back, changed the way a real
server differs from the document. A rule sees the request and the reply and may
change either:

- ``bom()`` puts a UTF-8 byte-order mark before the body (.NET front ends);
- ``content_type("text/plain")`` relabels the reply;
- ``garbage()`` replaces the body with JSON cut short (after the dialer acted);
- ``jodo_refuse(keys)`` drops the records of those CRM keys from an
  ImportProcessData batch before the simulator sees it, and lists them under
  ``faileddata`` in its success reply, as a bulk importer that rejects rows does.

The rewriter counts requests and keeps their headers, so a test sees what reached
the dialer and how often.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncd.simulators.server import running


@dataclass
class Exchange:
    """One request on its way to the simulator and the reply on its way back."""

    path: str
    headers: dict[str, str]
    body: bytes  # the request body (a rule may change it before it goes on)
    status: int = 200
    reply: bytes = b""
    reply_headers: dict[str, str] = field(default_factory=dict)
    answered: bool = False  # a rule answered it: the simulator never sees it


Rule = Callable[[Exchange], None]  # changes the request before, or the reply after


@dataclass
class RuleSet:
    before: list[Rule] = field(default_factory=list)
    after: list[Rule] = field(default_factory=list)


class ReplyRewriter:
    """Forwards to ``upstream`` (a base URL), applying its rules; see the module doc."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules = RuleSet()
        self.seen: list[Exchange] = []
        self.url = ""

    @property
    def requests(self) -> int:
        return len(self.seen)

    def jodo_calls(self, method: str) -> int:
        """Return how many requests of Jodo ``method`` came through."""
        return sum(jodo_method(e) == method for e in self.seen)

    def before(self, rule: Rule) -> ReplyRewriter:
        self.rules.before.append(rule)
        return self

    def after(self, rule: Rule) -> ReplyRewriter:
        self.rules.after.append(rule)
        return self

    def app(self) -> Starlette:
        async def forward(request: Request) -> Response:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            exchange = Exchange(
                path, {k.lower(): v for k, v in request.headers.items()}, await request.body()
            )
            self.seen.append(exchange)
            for rule in self.rules.before:
                rule(exchange)
            if exchange.answered:
                return Response(exchange.reply, exchange.status, headers=exchange.reply_headers)
            headers = {
                k: v
                for k, v in exchange.headers.items()
                if k not in ("host", "content-length", "accept-encoding", "connection")
            }
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.request(
                    request.method, self.upstream + path, content=exchange.body, headers=headers
                )
            exchange.status = answer.status_code
            exchange.reply = answer.content
            exchange.reply_headers = {
                k.lower(): v
                for k, v in answer.headers.items()
                if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
            }
            for rule in self.rules.after:
                rule(exchange)
            return Response(exchange.reply, exchange.status, headers=exchange.reply_headers)

        return Starlette(
            routes=[Route("/{path:path}", forward, methods=["GET", "POST", "HEAD", "PUT"])]
        )


@contextmanager
def rewriting(upstream: str) -> Iterator[ReplyRewriter]:
    """Yield a running ReplyRewriter in front of ``upstream``."""
    rewriter = ReplyRewriter(upstream)
    with running(rewriter.app()) as url:
        rewriter.url = url
        yield rewriter


# -- rules ------------------------------------------------------------------------


def bom() -> Rule:
    def rule(exchange: Exchange) -> None:
        exchange.reply = b"\xef\xbb\xbf" + exchange.reply

    return rule


def content_type(value: str, encoding: str | None = None) -> Rule:
    """Relabel the reply; with ``encoding``, re-encode its (UTF-8) body in that charset."""

    def rule(exchange: Exchange) -> None:
        exchange.reply_headers["content-type"] = value
        if encoding is not None:
            exchange.reply = exchange.reply.decode("utf-8").encode(encoding)

    return rule


def garbage(times: int | None = None, method: str | None = None) -> Rule:
    """Cut the reply short (the dialer acted on the request); the first ``times`` replies
    (of Jodo ``method`` only, when given)."""
    count = 0

    def rule(exchange: Exchange) -> None:
        nonlocal count
        if method is not None and jodo_method(exchange) != method:
            return
        count += 1
        if times is None or count <= times:
            exchange.reply = exchange.reply[: max(1, len(exchange.reply) // 2)]

    return rule


def add_field(name: str, value: Any) -> Rule:
    """Add a field to every JSON object reply."""

    def rule(exchange: Exchange) -> None:
        body = json.loads(exchange.reply)
        if isinstance(body, dict):
            body[name] = value
            exchange.reply = json.dumps(body).encode()

    return rule


def jodo_method(exchange: Exchange) -> str | None:
    try:
        return str(_form_data(exchange.body).get("method"))
    except (KeyError, ValueError):
        return None


def _form_data(body: bytes) -> dict[str, Any]:
    fields = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
    data: dict[str, Any] = json.loads(fields["data"][0])
    return data


def jodo_refuse(
    keys: set[str],
    *,
    field_name: str = "leadnumber",
    list_name: str = "faileddata",
    name_by: str = "mobilenumber",
    reason: str = "Invalid mobile number",
) -> tuple[Rule, Rule]:
    """Return (before, after) rules: Jodo stores all but ``keys``, and lists those as failed.

    Each failed item names its record by ``name_by`` (a field of the record sent)
    and gives ``reason``. Install with ``rewriter.before(b).after(a)``.
    """
    pending: dict[str, list[dict[str, Any]]] = {}

    def before(exchange: Exchange) -> None:
        try:
            data = _form_data(exchange.body)
        except (KeyError, ValueError):
            return
        if data.get("method") != "ImportProcessData":
            return
        kept, failed = [], []
        for record in data.get("data") or []:
            (failed if str(record.get(field_name)) in keys else kept).append(record)
        data["data"] = kept
        exchange.body = urllib.parse.urlencode({"data": json.dumps(data)}).encode()
        pending[exchange.path + str(id(exchange))] = [
            {name_by: r.get(name_by), "reason": f"{reason} {r.get('mobilenumber')}"} for r in failed
        ]
        if not kept:  # nothing left to store: answer as the importer would
            exchange.answered = True
            exchange.reply = json.dumps(
                {"method": "ImportProcessData", "statuscode": "001"}
            ).encode()
            exchange.reply_headers = {"content-type": "application/json"}
            after(exchange)

    def after(exchange: Exchange) -> None:
        failed = pending.pop(exchange.path + str(id(exchange)), None)
        if not failed:
            return
        body = json.loads(exchange.reply)
        body[list_name] = failed
        exchange.reply = json.dumps(body).encode()

    return before, after
