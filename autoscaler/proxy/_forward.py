"""The upstream half of the data path: one pooled client, header rules, and response relaying.

All functions share keep-alive connection pools (`_pool`, on the lean client of `_client`): opening
a TCP connection per request would cost more than the proxying itself. Headers follow the
reverse-proxy rules (RFC 9110 section 7.6.1: drop hop-by-hop headers and those named in any
`Connection` line; extend `X-Forwarded-For`, set `X-Forwarded-Host` and `-Proto` from the connection
unless the client is the gateway in front); bodies are passed as bytes, never decompressed or re-encoded.
Small responses with a known length are read whole (one write downstream); anything larger or of
unknown length is streamed chunk by chunk. The same forwarder carries requests passed through to the
real provider (`what` names the upstream in errors: a function by default, or the provider). A
request for a protocol switch the proxy can relay (WebSocket, h2c, any other: `_tunnel.upgrade_of`)
keeps its `Connection: upgrade` and `Upgrade` headers, and a 101 to one of the protocols it asked for
is spliced to the client (`_tunnel`); a 101 to another is a 502.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from autoscaler.errors import AutoscalerError
from autoscaler.interfaces import BUSY_HEADER
from autoscaler.proxy._client import Connection, StreamBody
from autoscaler.proxy._deadlines import Deadlines
from autoscaler.proxy._http1 import ClientError, ConnectError
from autoscaler.proxy._pool import Pool
from autoscaler.proxy._respond import raw_answer
from autoscaler.proxy._tunnel import splice, switched_to, switches_as_asked, upgrade_of
from autoscaler.proxy._upgrades import protocols
from autoscaler.tasks import Background

log = logging.getLogger("autoscaler.proxy")

# Hop-by-hop headers (RFC 9110 7.6.1) plus those the upstream client sets itself from the body.
_REQUEST_DROP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect",
        BUSY_HEADER.lower(),
    }
)  # fmt: skip
_RESPONSE_DROP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade",
    }
)  # fmt: skip
# Responses up to this size with a Content-Length are read whole: one write instead of a stream.
SMALL_BODY = 64 * 1024
# A replica that does not accept a connection within this time is treated as unreachable.
CONNECT_TIMEOUT = 5.0


class UpstreamError(AutoscalerError):
    """The function could not be reached or failed before answering; `status` is 502 or 504."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UpstreamConnectError(UpstreamError):
    """No connection could be opened: the request never left, so it is safe to retry."""


def _named_in_connection(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(token.strip().lower() for token in value.split(","))


# Headers not passed as the client sent them: the X-Forwarded-* ones are set by the proxy (For is
# extended; Host and Proto replaced unless the client is trusted).
_DROP_UNTRUSTED = _REQUEST_DROP | {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"}
_DROP_TRUSTED = _REQUEST_DROP | {"x-forwarded-for"}


def request_headers(request: web.BaseRequest, *, trusted: bool = False) -> list[tuple[str, str]]:
    """The client's headers as the function should see them.

    Every `Connection` line counts (RFC 9110 7.6.1: a list header may come on several lines), and so
    does every `X-Forwarded-For` line, joined in order with the client's address appended. The
    client's `X-Forwarded-Host` and `-Proto` are replaced by what the proxy saw (its Host header, its
    scheme): a client could otherwise make a function build links to a host of its choosing. With
    `trusted` (the client is a proxy in front of this one, e.g. the OpenFaaS gateway), they are kept
    and only added when absent, as the gateway itself does.
    """
    src = request.headers
    extra = _named_in_connection(",".join(src.getall("Connection", ())))
    drop = _DROP_TRUSTED if trusted else _DROP_UNTRUSTED
    out = [
        (key, value)
        for key, value in src.items()
        if (lower := key.lower()) not in drop and lower not in extra
    ]
    chain = [value for value in src.getall("X-Forwarded-For", ()) if value.strip()]
    chain.append(request.remote or "")
    out.append(("X-Forwarded-For", ", ".join(chain)))
    host = src.get("Host")
    if host and not (trusted and "X-Forwarded-Host" in src):
        out.append(("X-Forwarded-Host", host))
    if not (trusted and "X-Forwarded-Proto" in src):
        out.append(("X-Forwarded-Proto", request.scheme))
    upgrade = upgrade_of(request)
    if upgrade is not None:  # hop-by-hop, but the switch is relayed: the function is asked for it
        connection = "upgrade"
        settings = src.get("HTTP2-Settings")
        if settings is not None and "http2-settings" in extra and "h2c" in protocols(upgrade):
            # h2c's own hop-by-hop header (RFC 7540 3.2.1): without it a server does not switch.
            out.append(("HTTP2-Settings", settings))
            connection = "upgrade, HTTP2-Settings"
        out += (("Connection", connection), ("Upgrade", upgrade))
    return out


def response_headers(src: list[tuple[str, str]], *, connection: str) -> list[tuple[str, str]]:
    """The function's headers as the client should see them; `connection` is its Connection header."""
    extra = _named_in_connection(connection)
    return [
        (key, value)
        for key, value in src
        if (lower := key.lower()) not in _RESPONSE_DROP and lower not in extra
    ]


class Forwarder:
    """Owns the upstream connection pools; opens upstream requests and relays their responses."""

    def __init__(
        self,
        *,
        upstream_timeout: float,
        background: Background,
        max_connections_per_host: int,
        idle_timeout: float,
    ) -> None:
        self._upstream_timeout = upstream_timeout
        self._background = background
        self._deadlines = Deadlines(resolution=min(1.0, upstream_timeout / 4))
        self._pool = Pool(
            limit_per_origin=max_connections_per_host,
            connect_timeout=CONNECT_TIMEOUT,
            idle_timeout=idle_timeout,
        )
        self._started = False

    async def start(self) -> None:
        # Reads are timed by self._deadlines (see _deadlines: a timer per read costs too much).
        self._background.spawn(self._deadlines.run(), name="upstream deadlines")
        self._pool.start(self._background)
        self._started = True

    async def close(self) -> None:
        self._started = False
        self._pool.close()

    def _timed_out(self, what: str) -> UpstreamError:
        limit = self._upstream_timeout
        return UpstreamError(504, f"{what} did not answer within the upstream timeout ({limit:g} s)")

    async def open(
        self,
        *,
        method: str,
        endpoint: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes | StreamBody | None,
        key: str,
        what: str | None = None,
        upgrade: bool = False,
    ) -> Connection:
        """Send the request to `endpoint` and return once the function's response headers are in.

        With `upgrade` (the headers ask for a protocol switch) the answer may be a 101 (see `relay`).
        """
        if not self._started:
            raise UpstreamError(503, "the proxy is not started or already stopped")
        task = self._deadlines.arm(self._upstream_timeout)
        try:
            return await self._pool.request(
                endpoint=endpoint, method=method, path=path, headers=headers, body=body, upgrade=upgrade
            )
        except asyncio.CancelledError:
            if self._deadlines.disarm(task):
                raise self._timed_out(what or f"function {key}") from None
            raise
        except ConnectError as e:
            raise UpstreamConnectError(
                502, f"{what or f'function {key}'} is unreachable at {endpoint}: {e}"
            ) from e
        except ClientError as e:
            raise UpstreamError(502, f"{what or f'function {key}'} failed before answering: {e}") from e
        finally:
            self._deadlines.disarm(task)

    def discard(self, upstream: Connection) -> None:
        """Drop a response the caller will not see; the connection is kept only if it is all in."""
        if upstream.done:
            upstream.take_body()
        else:
            upstream.close()
        self._pool.release(upstream)

    async def relay(
        self, request: web.BaseRequest, upstream: Connection, *, key: str, what: str | None = None
    ) -> web.StreamResponse:
        """Pass the function's status, headers and body back to the client."""
        if upstream.status == 101:
            headers = response_headers(upstream.headers, connection=upstream.connection)
            if not switches_as_asked(request, upstream):
                upstream.close()
                self._pool.release(upstream)
                raise UpstreamError(
                    502, f"{what or f'function {key}'} switched to {switched_to(upstream)!r}, which was "
                    f"not asked for ({request.headers.get('Upgrade', '')!r})",
                )  # fmt: skip
            return await splice(
                request, upstream, headers, pool=self._pool, idle_timeout=self._upstream_timeout
            )
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY:
            if upstream.done:  # the whole body came with the head: nothing to wait for
                body = upstream.take_body()
                self._pool.release(upstream)
            else:
                body = await self._read_small(upstream, what=what or f"function {key}")
            # The common case, written as bytes (`_respond`); aiohttp's response for the rest.
            raw = raw_answer(
                request, status=upstream.status, reason=upstream.reason, headers=upstream.headers,
                connection=upstream.connection, body=body,
            )  # fmt: skip
            if raw is not None:
                return raw
            headers = response_headers(upstream.headers, connection=upstream.connection)
            return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=body)
        headers = response_headers(upstream.headers, connection=upstream.connection)
        return await self._stream(request, upstream, headers, what=what or f"function {key}")

    async def _read_small(self, upstream: Connection, *, what: str) -> bytes:
        task = self._deadlines.arm(self._upstream_timeout)
        try:
            return await upstream.read_all()
        except asyncio.CancelledError:
            if self._deadlines.disarm(task):
                raise self._timed_out(what) from None
            raise
        except ClientError as e:
            raise UpstreamError(502, f"{what} broke off its response: {e}") from e
        finally:
            self._deadlines.disarm(task)
            self._pool.release(upstream)

    async def _stream(
        self, request: web.BaseRequest, upstream: Connection, headers: list[tuple[str, str]], *, what: str
    ) -> web.StreamResponse:
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        try:
            await out.prepare(request)
            while True:
                chunk = await self._read_chunk(upstream, what=what)
                if chunk is None:
                    # The status line is gone already: cut the client's connection so that a
                    # truncated body can never pass for a whole one.
                    upstream.close()
                    if request.transport is not None:
                        request.transport.close()
                    break
                if not chunk:
                    break
                await out.write(chunk)
        except ConnectionError:
            upstream.close()  # the client went away: stop reading from the function
        finally:
            self._pool.release(upstream)
        return out

    async def _read_chunk(self, upstream: Connection, *, what: str) -> bytes | None:
        """The next piece of the body (b"" at its end), or None when the function broke off or stalled."""
        task = self._deadlines.arm(self._upstream_timeout)
        try:
            return await upstream.read_any()
        except asyncio.CancelledError:
            if not self._deadlines.disarm(task):
                raise
            log.warning("%s sent nothing for %g s mid-body", what, self._upstream_timeout)
            return None
        except ClientError as e:
            log.warning("%s broke off its response mid-body: %s", what, e)
            return None
        finally:
            self._deadlines.disarm(task)
