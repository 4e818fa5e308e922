"""A function's small, whole answer written to the client as one buffer of bytes.

Nearly every proxied call ends the same way: a status line, some headers and a body with a known
length of at most `_forward.SMALL_BODY`, all read already. aiohttp's `web.Response` builds that
through a case-insensitive multidict of headers, `prepare`, a per-request payload writer and
`write_eof`: about a tenth of the proxy's CPU per request, for bytes the proxy could write itself.
Here the same bytes aiohttp would write are made in one pass over the function's headers (the
reverse-proxy filter of `_forward.response_headers` fused in) and written with one
`transport.write`; `RawResponse` only tells aiohttp's server loop how the exchange ended (status,
keep-alive), so keep-alive, pipelining and the client limits (`_downstream`) work unchanged.

What aiohttp adds is added the same way: `Content-Length` from the body, `Content-Type:
application/octet-stream` for a non-empty body without one, `Date` and `Server` when absent,
`Connection: close` (HTTP/1.1 not kept alive) or `keep-alive` (HTTP/1.0 kept alive), and the
proxy's `X-Autoscaler-Cold-Start` after a hold. Anything else (HEAD, 1xx, 204, 304, a request that
asked for an Upgrade, a control character aiohttp would refuse) returns None: the caller then
builds aiohttp's own response, which keeps its rules for those.

`ProxyRequest` adds what a response of the proxy says about itself, on both paths:
`X-Autoscaler-Cold-Start`, the seconds a request was held through a cold start (KEDA's HTTP add-on
marks cold starts the same way), and `Connection: close` after a switch that was asked for and not
made (`_upgrades`: what the client sent after such a head is not read).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_exceptions import ClientConnectionResetError
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from autoscaler.proxy._upgrades import must_close

COLD_START_HEADER = "X-Autoscaler-Cold-Start"
# aiohttp's guard against header injection (http_writer._FORBIDDEN_HEADER_CHARS_RE): CR and LF are
# allowed here only as the line breaks this module writes itself, which are checked by count.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade",
    }
)  # fmt: skip
# Headers written from what the proxy knows rather than passed on: the length and the hold's time.
_REWRITTEN = frozenset({"content-length", COLD_START_HEADER.lower()})
_DROP = _HOP_BY_HOP | _REWRITTEN
_EMPTY_BODY_STATUS = frozenset({204, 304})
_NONE: frozenset[str] = frozenset()
_TOKENS: dict[str, frozenset[str]] = {}
_TOKENS_KEPT = 64
_STATUS_LINES: dict[tuple[int, int, str], str] = {}
# What one look-up tells of a function's header: dropped, passed, or passed and one aiohttp adds.
_PASS, _DATE, _SERVER, _TYPE, _DROPPED = 0, 1, 2, 4, -1
_KIND = {name: _DROPPED for name in _DROP} | {"date": _DATE, "server": _SERVER, "content-type": _TYPE}
_SERVER_LINE = f"Server: {SERVER_SOFTWARE}"


class ProxyRequest(web.BaseRequest):
    """aiohttp's request; a response to a request held through a cold start says how long it waited."""

    _held: float | None = None  # an attribute, not a request key: no KeyError raised per request

    def held_for(self, seconds: float) -> None:
        self._held = seconds

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        held = self._held
        if held is not None:
            response.headers[COLD_START_HEADER] = f"{held:.3f}"
        if self._message.upgrade and response.status != 101 and must_close(self.version, self.headers):
            # It asked to switch, and did not: nothing it sent since is read (`_upgrades`).
            response.force_close()
            response.headers["Connection"] = "close"


def request_factory(*, max_body: int) -> Callable[..., web.BaseRequest]:
    """aiohttp's `request_factory` for the data port: every request is a `ProxyRequest`."""

    def make(
        message: RawRequestMessage, payload: StreamReader, protocol: RequestHandler,
        writer: AbstractStreamWriter, task: asyncio.Task[None],
    ) -> web.BaseRequest:  # fmt: skip
        return ProxyRequest(
            message, payload, protocol, writer, task, protocol._loop, client_max_size=max_body
        )

    return make


class RawResponse(web.StreamResponse):
    """A response whose bytes are made already: `prepare` writes them, nothing else is done.

    aiohttp's server loop reads only `prepare`, `write_eof`, `keep_alive` and `status` of what a
    handler returns; aiohttp's own response state (headers, cookies, writer) is never set up.
    """

    def __init__(self, status: int, data: bytes, *, keep_alive: bool) -> None:
        # No super().__init__(): its multidict and state are what this class exists to avoid.
        self._status = status
        self._keep_alive = keep_alive
        self._data = data
        self._eof_sent = False
        self._payload_writer = None
        self._state = {}

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        self._eof_sent = True
        protocol = request.protocol
        transport = protocol.transport
        if transport is None or transport.is_closing():
            raise ClientConnectionResetError("Cannot write to closing transport")
        transport.write(self._data)
        if protocol._paused:  # as aiohttp's write_eof: wait while the client's buffer is full
            await protocol._drain_helper()
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def raw_answer(
    request: web.BaseRequest,
    *,
    status: int,
    reason: str,
    headers: list[tuple[str, str]],
    connection: str,
    body: bytes,
) -> RawResponse | None:
    """The function's answer (its raw `headers`, its Connection value) as bytes, or None (see above)."""
    if not isinstance(request, ProxyRequest):
        return None
    message = request._message
    if status < 200 or status in _EMPTY_BODY_STATUS or message.method == "HEAD" or message.upgrade:
        return None
    minor = message.version.minor
    lines = [_status_line(minor, status, reason)]
    append = lines.append
    extra = _connection_tokens(connection) if connection else _NONE
    seen = 0  # bits of _KIND: which of Date, Server and Content-Type the function sent
    kind_of = _KIND.get
    for name, value in headers:
        lower = name.lower()
        kind = kind_of(lower, _PASS)
        if kind == _DROPPED or (extra and lower in extra):
            continue
        seen |= kind
        append(f"{name}: {value}")
    append(f"Content-Length: {len(body)}")
    if body and not seen & _TYPE:
        append("Content-Type: application/octet-stream")
    if not seen & _DATE:
        append(f"Date: {rfc822_formatted_time()}")
    if not seen & _SERVER:
        append(_SERVER_LINE)
    keep_alive = not message.should_close
    if keep_alive:
        if minor == 0:
            append("Connection: keep-alive")
    elif minor == 1:
        append("Connection: close")
    held = request._held
    if held is not None:
        append(f"{COLD_START_HEADER}: {held:.3f}")
    text = "\r\n".join(lines) + "\r\n\r\n"
    breaks = len(lines) + 1
    if text.count("\n") != breaks or text.count("\r") != breaks or _FORBIDDEN.search(text) is not None:
        return None  # aiohttp refuses such a header: let it say so
    return RawResponse(status, text.encode("utf-8", "surrogateescape") + body, keep_alive=keep_alive)


def _status_line(minor: int, status: int, reason: str) -> str:
    key = (minor, status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        line = f"HTTP/1.{minor} {status} {reason}"
        if len(_STATUS_LINES) < _TOKENS_KEPT:  # functions answer with few distinct status lines
            _STATUS_LINES[key] = line
    return line


def _connection_tokens(value: str) -> frozenset[str]:
    tokens = _TOKENS.get(value)
    if tokens is None:
        # Those dropped anyway (keep-alive, close) need no second look per header.
        tokens = frozenset(token.strip() for token in value.lower().split(",")) - _DROP
        if len(_TOKENS) < _TOKENS_KEPT:  # a function's Connection value is nearly always the same
            _TOKENS[value] = tokens
    return tokens
