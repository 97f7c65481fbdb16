"""One HTTP policy for every vendor: timeouts, the status-to-error mapping, parsing.

Vendor clients build on this and translate answers into the typed errors of
``syncd.errors``; the retry loop here only ever retries ``RetryableError``.

The retries live in :mod:`syncd.net.retry`, the per-sink breaker and limits in
:mod:`syncd.net.guard`; ``status_error`` and ``transport_error`` here are the one
mapping from HTTP answers to syncd's errors that every vendor client shares.
"""

from __future__ import annotations

import codecs
import json
import re
import socket
import ssl
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import structlog

from syncd.errors import BatchTooLarge, PermanentError, RetryableError, SinkConfigError
from syncd.net.answers import unanswered_kind
from syncd.net.fence import before_send
from syncd.net.ratelimit import RequestLimits
from syncd.net.retry import MIN_WAIT_S, parse_retry_after

T = TypeVar("T")
log = structlog.get_logger("syncd.http")

HOLD_STATUSES = (429, 503)  # answers whose Retry-After holds back the whole sink
MAX_INLINE_HOLD_S = 15.0  # a longer Retry-After hold fails the request instead of sleeping


NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
# The charset is explicit: Ameyo servers that decode forms as ISO-8859-1 garble
# "José" without it, and uContact's document asks for it on every call.
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=UTF-8"
FORM_HEADERS = {"content-type": FORM_CONTENT_TYPE}

# Percent-encoding for every ASCII character outside the unreserved set. urllib's
# quote_plus loops in Python; one str.replace per special character runs in C and
# is ~4x faster on the large JSON payloads (hundreds of records) dialers take in
# one form field. "%" goes first (later escapes add "%"), space last (it becomes "+").
_FORM_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")
_FORM_ESCAPES = (
    [("%", "%25")]
    + [(chr(i), f"%{i:02X}") for i in range(128) if chr(i) not in _FORM_SAFE and chr(i) not in "% "]
    + [(" ", "+")]
)


def _escape_ascii(text: str) -> str:
    for char, escaped in _FORM_ESCAPES:
        if char in text:
            text = text.replace(char, escaped)
    return text


def wire_json(value: Any) -> str:
    """Return compact JSON text, ASCII-only (non-ASCII escaped), for a request body.

    orjson is ~8x faster than json on a 500-record batch; its output is UTF-8, so a
    batch holding a non-ASCII name takes json's escaping instead, and the form
    encoding keeps its fast ASCII path either way.
    """
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # a lone surrogate, an int key: json takes them
        text = ""
    return text if text and text.isascii() else json.dumps(value, separators=(",", ":"))


def encode_form(fields: dict[str, str]) -> bytes:
    """Return an application/x-www-form-urlencoded body, identical to urllib's urlencode."""
    parts = []
    for name, value in fields.items():
        if value.isascii() and name.isascii():
            parts.append(f"{_escape_ascii(name)}={_escape_ascii(value)}")
        else:
            parts.append(urllib.parse.urlencode({name: value}))
    return "&".join(parts).encode("ascii")


def make_client(
    *,
    timeout_s: float,
    verify_tls: bool,
    max_connections: int = 8,
    guard: RequestLimits | None = None,
    proxy: str | None = None,
    ca_bundle: str | Path | None = None,
) -> httpx.AsyncClient:
    """Return an httpx client with connect/read timeouts and a bounded pool.

    With ``guard``, every request waits for the sink's rate, concurrency and
    Retry-After hold, and a 429/503 with Retry-After holds the whole sink.

    ``proxy`` (a URL) carries every request; without it the standard environment
    variables apply (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``).
    ``ca_bundle`` adds a PEM file of certificate authorities to the trusted ones
    (``SSL_CERT_FILE`` replaces them, as for any OpenSSL program); ``verify_tls``
    false trusts any certificate.
    """
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    verify = tls_context(verify_tls, ca_bundle)

    def direct_or_via(via: str | None) -> httpx.AsyncHTTPTransport:
        # httpx writes a POST's headers and body separately; with Nagle on, the body
        # waits for the server's delayed ACK (~40 ms a request on Linux).
        return httpx.AsyncHTTPTransport(
            verify=verify,
            limits=limits,
            socket_options=NODELAY,
            proxy=httpx.Proxy(via) if via else None,
        )

    inner: httpx.AsyncBaseTransport
    if proxy:
        inner = direct_or_via(proxy)
    else:
        inner = ProxyRouter(direct_or_via, environment_proxies())
    if guard is None:
        return httpx.AsyncClient(timeout=timeout, transport=inner)
    return httpx.AsyncClient(timeout=timeout, transport=GuardedTransport(inner, guard))


# A request extension: this request goes ahead of those queued for the sink's rate
# (a new login and the replay of the request that found the session expired).
URGENT = "syncd.urgent"


class HeldBack(RetryableError):
    """A request not sent: the sink is held (a Retry-After) longer than a call may wait.

    Not the dialer failing: it is not counted against the breaker, and the hold that
    refused it is not taken up again as a new one.
    """


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that applies one sink's RequestLimits to every request."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limits: RequestLimits) -> None:
        self.inner = inner
        self.limits = limits

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        held = self.limits.limiter.held_for()
        if held > MAX_INLINE_HOLD_S:
            # Sleeping out a long Retry-After inside a call would outlast `--once`'s
            # deadline and ignore SIGTERM; the lead waits in the outbox instead.
            raise HeldBack(self.limits.hold_text(held), retry_after=held)
        async with self.limits.slot(urgent=bool(request.extensions.get(URGENT))):
            await before_send()  # after the wait for a turn: the last moment before it leaves
            answers = self.limits.answers
            ticket = answers.sent(_read_timeout(request))
            try:
                response = await self.inner.handle_async_request(request)
            except BaseException as exc:  # a cancel too: the ticket must not stay "waiting"
                answers.ended(ticket, unanswered_kind(exc))
                raise
            answers.answered(ticket)  # any status: the dialer is there
        if response.status_code in HOLD_STATUSES:
            wait = parse_retry_after(response.headers.get("retry-after"))
            if wait is not None:
                self.limits.hold(max(wait, MIN_WAIT_S), answer=f"HTTP {response.status_code}")
        elif response.status_code < 500:
            # The dialer is there (even a 401 is its answer); a 5xx, a gateway's
            # included, says nothing of that.
            self.limits.on_answer()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _read_timeout(request: httpx.Request) -> float | None:
    """Return how long the request may wait for its answer (httpx's timeouts, per request)."""
    timeouts = request.extensions.get("timeout") or {}
    read = timeouts.get("read")
    return float(read) if isinstance(read, int | float) else None


def transport_error(exc: httpx.HTTPError, vendor: str) -> RetryableError | SinkConfigError:
    """Return the RetryableError for a timeout, reset or refused connection.

    A certificate this machine does not trust is a SinkConfigError instead: it does
    not heal by retrying (the sink stops and is re-checked later), and the reason
    names the certificate problem and the setting that fixes it.
    """
    untrusted = _certificate_error(exc)
    if untrusted is not None:
        why = untrusted.verify_message or untrusted.reason or "verification failed"
        refused = SinkConfigError(
            f"certificate not trusted: {why}{_issuer_hint(why)}; set the sink's ca_bundle "
            "to the PEM file of the CA that signed it (or verify_tls = false for a test "
            "server)",
            vendor=vendor,
            code="tls",
        )
        refused.public = "the dialer's TLS certificate is not trusted"
        return refused
    kind = type(exc).__name__
    error = RetryableError(f"{kind} talking to the dialer", vendor=vendor)
    error.public = kind
    return error


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """Return the certificate verification failure in ``exc``'s chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _issuer_hint(message: str) -> str:
    # OpenSSL's messages name the kind ("self-signed certificate", "unable to get
    # local issuer certificate"); say what that means for the operator.
    low = message.lower()
    if "self-signed" in low or "self signed" in low:
        return " (the server signed its own certificate, or its CA is not one we know)"
    if "local issuer" in low:
        return " (signed by a private or unknown certificate authority)"
    if "expired" in low:
        return " (check the server's certificate dates and this machine's clock)"
    return ""


def raise_for_http(
    response: httpx.Response, vendor: str, what: str, hints: Mapping[int, str] | None = None
) -> None:
    """Raise the typed error of an HTTP answer that failed; return for any other.

    The one mapping every dialer client shares: 408, 429 and 5xx are transient
    (``RetryableError``, with Retry-After); 401, 403 and 404 mean the sink is set up
    wrong (``SinkConfigError``: it stops until fixed); 413 says the request was too
    large (``BatchTooLarge``: the push loop halves the batch); any other 4xx refuses the
    request (``PermanentError``). ``hints`` adds what to check, per status.
    """
    retryable = status_error(response, vendor)
    if retryable is not None:
        raise retryable
    code = response.status_code
    hint = (hints or {}).get(code)
    message = f"{what}: HTTP {code}" + (f" ({hint})" if hint else "")
    if code in (401, 403, 404):
        raise SinkConfigError(message, vendor=vendor, code=str(code))
    if code == 413:
        error = BatchTooLarge(message, vendor=vendor, code="413")
        error.public = "HTTP 413 (request too large)"
        raise error
    if code >= 400:
        raise PermanentError(message, vendor=vendor, code=str(code))


def status_error(response: httpx.Response, vendor: str) -> RetryableError | None:
    """Return a RetryableError for 429/5xx/408 answers, None for anything else."""
    if response.status_code in (408, 429) or response.status_code >= 500:
        error = RetryableError(
            f"HTTP {response.status_code}",
            vendor=vendor,
            code=str(response.status_code),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
        error.public = f"HTTP {response.status_code}"
        return error
    return None


_CURLY = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def lenient_json(text: str) -> Any:
    """Return parsed JSON, forgiving curly quotes and trailing commas; ValueError if not JSON.

    The vendors' documents show such bodies; servers built from them sometimes send them.
    """
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    repaired = _TRAILING_COMMA.sub(r"\1", stripped.translate(_CURLY))
    try:
        return json.loads(repaired)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype", "<html", "<?xml")) or "<body" in head


# -- networks: proxies and certificate authorities ------------------------------


def tls_context(verify_tls: bool, ca_bundle: str | Path | None) -> ssl.SSLContext | bool:
    """Return what httpx verifies the dialer's certificate with.

    ``ca_bundle`` is added to the usual trusted authorities (a private CA beside the
    public ones: a proxy may present a public certificate, the dialer a private one).
    """
    if not verify_tls:
        return False
    if ca_bundle is None:
        return True  # httpx's default: certifi, or SSL_CERT_FILE / SSL_CERT_DIR when set
    context = httpx.create_ssl_context()
    try:
        context.load_verify_locations(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise SinkConfigError(
            f"ca_bundle {ca_bundle}: cannot read certificate authorities from it ({exc})"
        ) from None
    return context


def environment_proxies() -> dict[str, str]:
    """Return the proxies of the standard environment variables (``no`` lists exceptions).

    Only http:// and https:// proxies: a SOCKS proxy (``ALL_PROXY=socks5://…``) needs
    a package syncd does not ship, and is skipped with a warning rather than failing
    every request.
    """
    found: dict[str, str] = {}
    for scheme, value in urllib.request.getproxies_environment().items():
        if not value:
            continue
        if scheme != "no" and "://" not in value:
            value = "http://" + value  # "proxy.corp:3128", as curl reads it
        if scheme != "no" and urllib.parse.urlsplit(value).scheme not in ("http", "https"):
            log.warning(
                "http.proxy.skipped",
                variable=f"{scheme.upper()}_PROXY",
                reason="only http:// and https:// proxies are supported",
            )
            continue
        found[scheme] = value
    return found


def bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Return True when ``NO_PROXY`` lists ``host`` (``*``, a name, ``.domain``, ``host:port``)."""
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, wanted = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if wanted and (not wanted.isdigit() or int(wanted) != port):
            continue
        name = name.lstrip(".").strip("[]")
        if host == name or host.endswith("." + name):
            return True
    return False


class ProxyRouter(httpx.AsyncBaseTransport):
    """Sends each request direct or through the proxy the environment names for it.

    httpx reads the proxy variables only for a client built without a transport;
    syncd builds its own (Nagle off, the sink's guard), so it routes here. A host
    listed in ``NO_PROXY`` goes direct.
    """

    def __init__(
        self,
        factory: Callable[[str | None], httpx.AsyncBaseTransport],
        proxies: Mapping[str, str],
    ) -> None:
        self._factory = factory
        self._proxies = dict(proxies)
        self._transports: dict[str | None, httpx.AsyncBaseTransport] = {}

    def proxy_for(self, url: httpx.URL) -> str | None:
        proxies = self._proxies
        via = proxies.get(url.scheme) or proxies.get("all")
        if not via or bypassed(url.host, url.port, proxies.get("no", "")):
            return None
        return via

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        via = self.proxy_for(request.url)
        transport = self._transports.get(via)
        if transport is None:
            transport = self._transports[via] = self._factory(via)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self._transports.values():
            await transport.aclose()


# -- reading replies ---------------------------------------------------------------

REPLY_CAP = 16 * 1024 * 1024  # bytes of a reply syncd reads; a larger one is not an answer
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


class UnreadableReply(RetryableError):
    """The dialer answered, but its body cannot be read (not JSON, cut short, too large).

    For a request that changes the dialer this is an answer in doubt: the dialer may
    have acted on it. Clients repeat such a request at most once.
    """


async def post(
    http: httpx.AsyncClient, url: str, *, cap: int = REPLY_CAP, **kwargs: Any
) -> httpx.Response:
    """Return the answer of a POST with its body read, at most ``cap`` bytes of it.

    A longer body is not read on (see :func:`read_reply`) and the response's
    ``extensions["syncd.cut"]`` says so: every outside reply is read with a limit (a
    proxy's endless error page must not fill the memory).
    """
    extensions = {**(kwargs.pop("extensions", None) or {}), CAP: cap}  # for a session's auth flow
    async with http.stream("POST", url, extensions=extensions, **kwargs) as streamed:
        body = await read_reply(streamed, cap)
    response = httpx.Response(
        streamed.status_code,
        headers=[(k, v) for k, v in streamed.headers.multi_items() if k.lower() not in _DECODED],
        content=body,
        request=streamed.request,
        extensions=dict(streamed.extensions),
    )
    return response


CAP = "syncd.cap"  # request: the bytes its reply may have; reply: the limit that applied
CUT = "syncd.cut"  # reply: True when the body was longer than the limit, and not read on
# Of an error status's body (and of a body cut at its cap): what a reason is taken from.
REASON_BYTES = 4096


async def status_only(
    http: httpx.AsyncClient, method: str, url: str, headers: dict[str, str] | None = None
) -> int:
    """Return the status of ``method url``, reading none of the body: a probe asks only
    whether something is there, and a server that ignores ``Range`` (or answers OPTIONS
    with a page) would otherwise have its whole body read. The connection is closed
    unread."""
    async with http.stream(method, url, headers=headers) as response:
        return response.status_code


async def read_reply(response: httpx.Response, cap: int) -> bytes:
    """Return a streamed reply's body, read once: at most ``cap`` bytes of it, and only
    the first REASON_BYTES of an error status's (its reason; the rest is not wanted).

    Reading stops the moment the limit is passed, and then only the first REASON_BYTES
    are kept (a cut reply is refused, not parsed): a capped read costs the limit once,
    never a copy of it. The response is marked (``CUT``, ``CAP``) and keeps the bytes as
    its content, so an auth flow that reads it leaves it read for the caller.
    """
    if hasattr(response, "_content"):  # read already (by a session's auth flow), capped
        return response.content
    limit = cap if response.status_code < 400 else min(cap, REASON_BYTES)
    chunks: list[bytes] = []
    size, cut = 0, False
    # Raw bytes, decoded here with a bound: httpx would inflate each network chunk
    # whole, and 64 KB of gzip can be 64 MB of text.
    inflate = _bounded_decoder(response.headers.get("content-encoding", ""))
    pieces = response.aiter_raw()
    try:
        async for raw in pieces:
            for chunk in inflate(raw, limit - size + 1):
                chunks.append(chunk)
                size += len(chunk)
            if size > limit:
                cut = True
                break
    finally:
        await pieces.aclose()  # type: ignore[attr-defined]
        await response.aclose()  # cut: the connection is closed, not drained
    if cut:
        body = _first_bytes(chunks, REASON_BYTES)
    else:
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one copy, not two
    chunks.clear()
    response.extensions[CUT] = cut
    response.extensions[CAP] = limit
    # What Response.aread() leaves: later reads (httpx's own, the caller's) see these bytes.
    response._content = body
    return body


def _bounded_decoder(encoding: str) -> Callable[[bytes, int], list[bytes]]:
    """Return ``decode(raw, most) -> pieces`` for a reply's Content-Encoding: the pieces
    of ``raw`` decoded, stopping once more than ``most`` bytes came out (the reply is
    cut there). gzip and deflate are inflated in steps of at most ``most``; an identity
    reply passes as it came; another encoding (syncd asks for none) is refused."""
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return lambda raw, most: [raw] if raw else []
    if name not in ("gzip", "x-gzip", "deflate"):
        raise httpx.DecodingError(f"a reply encoded as {name[:40]!r}, which syncd does not read")
    return _Inflater(name).decode


class _Inflater:
    """gzip or deflate inflated a bounded step at a time (see :func:`_bounded_decoder`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.first = True
        # gzip's header, or deflate's zlib one (a raw deflate stream is told at its start)
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if name != "deflate" else 15)

    def decode(self, raw: bytes, most: int) -> list[bytes]:
        if self.first and self.name == "deflate" and raw[:1] and (raw[0] & 0x0F) != 8:
            self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self.first = self.first and not raw
        out: list[bytes] = []
        left, pending = max(most, 1), raw
        try:
            while pending and left > 0:
                piece = self.inflater.decompress(pending, left)
                pending = self.inflater.unconsumed_tail
                if piece:
                    out.append(piece)
                    left -= len(piece)
                elif not pending:
                    break
        except zlib.error as exc:
            raise httpx.DecodingError(f"a {self.name} reply that does not inflate: {exc}") from None
        return out


def _first_bytes(chunks: list[bytes], size: int) -> bytes:
    """Return the first ``size`` bytes of ``chunks``, copying no more than those."""
    head = bytearray()
    for chunk in chunks:
        head += chunk[: size - len(head)]
        if len(head) >= size:
            break
    return bytes(head)


def reply_too_large(response: httpx.Response, what: str) -> str:
    """Return the reason a reply cut at its limit is refused."""
    limit = int(response.extensions.get(CAP, REPLY_CAP))
    return f"{what} answered with more than {limit // 1024} KB; not read"


# The body above is already decoded; the copy must not claim to be compressed.
_DECODED = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def body_text(response: httpx.Response) -> str:
    """Return a reply's body as text, the way a careful client reads it.

    A byte-order mark wins (some .NET front ends write one before JSON) and is
    dropped; then the Content-Type's charset; else UTF-8. Bytes that do not decode
    become U+FFFD rather than an error: the parser then says what is wrong.
    """
    raw = response.content
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return raw[len(bom) :].decode(encoding, "replace")
    encoding = response.charset_encoding or "utf-8"
    try:
        text = raw.decode(encoding, "replace")
    except LookupError:  # a charset Python does not know: UTF-8 is the likeliest
        text = raw.decode("utf-8", "replace")
    return text.removeprefix("\ufeff")


def reply_was_cut(response: httpx.Response) -> bool:
    return bool(response.extensions.get(CUT))


def read_json(response: httpx.Response, vendor: str, what: str) -> Any:
    """Return a reply's JSON whatever its Content-Type says; UnreadableReply if there is none.

    JSON labelled ``text/plain`` or ``text/html`` is still JSON; a BOM and the
    charset are handled by :func:`body_text`. An empty body, ``null``, an HTML page,
    text that is not JSON and a reply cut at the size cap are unreadable.
    """
    if reply_was_cut(response):  # before the text: a cut body is not decoded either
        raise UnreadableReply(reply_too_large(response, what), vendor=vendor)
    text = body_text(response)
    stripped = text.strip()
    if not stripped or stripped == "null" or looks_like_html(stripped):
        raise UnreadableReply(
            f"{what} answered with {describe_body(stripped)}, not JSON", vendor=vendor
        )
    try:
        return lenient_json(stripped)
    except ValueError:
        raise UnreadableReply(
            f"{what} answered with {describe_body(stripped)}, not JSON", vendor=vendor
        ) from None


def describe_body(text: str) -> str:
    """Return what a body that is not the expected answer looks like, without quoting it.

    A dialer's body may echo a lead's name or number: the description names its
    shape and size only.
    """
    stripped = text.strip()
    if not stripped:
        return "an empty body"
    if stripped == "null":
        return "null"
    if looks_like_html(stripped):
        return "an HTML page"
    if stripped[0] in "{[":
        return f"a body that is not JSON ({len(stripped)} characters, cut short or malformed)"
    return f"a body that is not JSON ({len(stripped)} characters)"


class UnknownFields:
    """Logs each reply field syncd does not know once per sink and field, not per reply.

    A new field can mean the server speaks a newer dialect (a list of failed records
    syncd would not see); one warning is enough to notice it, thousands would drown it.
    """

    def __init__(self, log: Any, vendor: str) -> None:
        self._log = log
        self._vendor = vendor
        self._seen: set[tuple[str, str]] = set()

    def note(self, what: str, body: Mapping[str, Any], known: frozenset[str]) -> None:
        for name in body:
            field = str(name)
            if field.lower() in known or (what, field) in self._seen:
                continue
            if len(self._seen) >= 200:  # a server that invents names per reply
                return
            self._seen.add((what, field))
            # A name made of digits may be a number the server keys its data by.
            shown = "<a name holding digits>" if re.search(r"\d{5}", field) else field[:60]
            self._log.warning(
                "sink.reply.unknown_field",
                vendor=self._vendor,
                what=what,
                field=shown,
                action="read as unknown; tell the syncd maintainers if it matters",
            )
