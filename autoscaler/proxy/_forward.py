"""The upstream half of the data path: one pooled client, header rules, and response relaying.

All functions share one keep-alive aiohttp session: opening a TCP connection per request would cost
more than the proxying itself. Headers follow the reverse-proxy rules (RFC 9110 section 7.6.1: drop
hop-by-hop headers and those named in `Connection`, add `X-Forwarded-*`); bodies are passed as
bytes, never decompressed or re-encoded. Small responses with a known length are read whole (one
write downstream); anything larger or of unknown length is streamed chunk by chunk.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from autoscaler.errors import AutoscalerError
from autoscaler.proxy._deadlines import Deadlines
from autoscaler.tasks import Background

log = logging.getLogger("autoscaler.proxy")

# Hop-by-hop headers (RFC 9110 7.6.1) plus those the client session sets itself from the body.
_REQUEST_DROP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect",
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


def request_headers(request: web.BaseRequest) -> CIMultiDict[str]:
    """The client's headers as the function should see them."""
    src = request.headers
    extra = _named_in_connection(src.get("Connection"))
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in src.items():
        lower = key.lower()
        if lower in _REQUEST_DROP or lower in extra:
            continue
        out.add(key, value)
    peer = request.remote or ""
    prior = src.get("X-Forwarded-For")
    out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    if "X-Forwarded-Host" not in src:
        host = src.get("Host")
        if host:
            out["X-Forwarded-Host"] = host
    if "X-Forwarded-Proto" not in src:
        out["X-Forwarded-Proto"] = request.scheme
    return out


def response_headers(src: CIMultiDict[str] | CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The function's headers as the client should see them."""
    extra = _named_in_connection(src.get("Connection"))
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in src.items():
        lower = key.lower()
        if lower in _RESPONSE_DROP or lower in extra:
            continue
        out.add(key, value)
    return out


class Forwarder:
    """Owns the shared client session; opens upstream requests and relays their responses."""

    def __init__(
        self, *, upstream_timeout: float, background: Background, max_connections_per_host: int = 100
    ) -> None:
        self._upstream_timeout = upstream_timeout
        self._max_per_host = max_connections_per_host
        self._background = background
        self._deadlines = Deadlines(resolution=min(1.0, upstream_timeout / 4))
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=self._max_per_host, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            # Reads are timed by self._deadlines (see _deadlines: a timer per read costs too much).
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=None),
        )
        self._background.spawn(self._deadlines.run(), name="upstream deadlines")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _timed_out(self, key: str) -> UpstreamError:
        limit = self._upstream_timeout
        return UpstreamError(504, f"function {key} did not answer within the upstream timeout ({limit:g} s)")

    async def open(
        self, *, method: str, url: URL, headers: CIMultiDict[str], body: bytes | None, key: str
    ) -> aiohttp.ClientResponse:
        """Send the request and return once the function's response headers are in."""
        session = self._session
        if session is None:
            raise UpstreamError(503, "the proxy is not started or already stopped")
        task = self._deadlines.arm(self._upstream_timeout)
        try:
            return await session.request(method, url, headers=headers, data=body, allow_redirects=False)
        except asyncio.CancelledError:
            if self._deadlines.disarm(task):
                raise self._timed_out(key) from None
            raise
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            raise UpstreamConnectError(502, f"function {key} is unreachable at {url.origin()}: {e}") from e
        except TimeoutError as e:
            raise self._timed_out(key) from e
        except aiohttp.ClientError as e:
            raise UpstreamError(502, f"function {key} failed before answering: {e!r}") from e
        finally:
            self._deadlines.disarm(task)

    async def relay(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse, *, key: str
    ) -> web.StreamResponse:
        """Pass the function's status, headers and body back to the client."""
        headers = response_headers(upstream.headers)
        length = upstream.content_length
        if length is not None and length <= SMALL_BODY:
            task = self._deadlines.arm(self._upstream_timeout)
            try:
                body = await upstream.read()
            except asyncio.CancelledError:
                if self._deadlines.disarm(task):
                    upstream.close()
                    raise self._timed_out(key) from None
                raise
            except (aiohttp.ClientError, TimeoutError) as e:
                raise UpstreamError(502, f"function {key} broke off its response: {e!r}") from e
            finally:
                self._deadlines.disarm(task)
                upstream.release()
            return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=body)
        return await self._stream(request, upstream, headers, key=key)

    async def _stream(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        headers: CIMultiDict[str],
        *,
        key: str,
    ) -> web.StreamResponse:
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        try:
            await out.prepare(request)
            while True:
                chunk = await self._read_chunk(upstream, key=key)
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
            upstream.release()
        return out

    async def _read_chunk(self, upstream: aiohttp.ClientResponse, *, key: str) -> bytes | None:
        """The next piece of the body (b"" at its end), or None when the function broke off or stalled."""
        task = self._deadlines.arm(self._upstream_timeout)
        try:
            return await upstream.content.readany()
        except asyncio.CancelledError:
            if not self._deadlines.disarm(task):
                raise
            log.warning("function %s sent nothing for %g s mid-body", key, self._upstream_timeout)
            return None
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("function %s broke off its response mid-body: %r", key, e)
            return None
        finally:
            self._deadlines.disarm(task)
