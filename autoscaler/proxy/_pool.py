"""Keep-alive connection pools per upstream origin, with a connection limit served in arrival order.

Opening a TCP connection per request would cost more than the proxying itself, and a burst of held
requests released at once must not open a thousand connections to a replica that just started: each
origin has at most `limit` connections in use, and requests beyond it wait in a FIFO queue, so held
requests released together are sent in the order they were released. A connection whose exchange
ended cleanly goes back to its pool (its slot straight to the next waiter); any other is closed.
Idle connections are closed after `idle_timeout` seconds (`--upstream-idle-timeout`, 15 s by
default, aiohttp's keep-alive timeout) by one background sweep, which also forgets origins that have
nothing left (endpoints come and go with replicas).
"""

from __future__ import annotations

import asyncio
import ssl

from yarl import URL

from autoscaler.proxy._client import (
    BODY_METHODS,
    IDEMPOTENT,
    ClientError,
    ConnectError,
    Connection,
    Origin,
    StaleConnection,
    StreamBody,
)
from autoscaler.tasks import Background


class Pool:
    """Sends requests to upstream endpoints over pooled keep-alive connections."""

    def __init__(self, *, limit_per_origin: int, connect_timeout: float, idle_timeout: float) -> None:
        if limit_per_origin < 1:
            raise ValueError(f"limit_per_origin must be >= 1 (got {limit_per_origin})")
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0 seconds (got {idle_timeout})")
        self._limit = limit_per_origin
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._origins: dict[str, Origin] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    def start(self, background: Background) -> None:
        background.spawn(self._sweep(), name="upstream idle connections")

    def close(self) -> None:
        """Close every idle connection; connections in use close when their exchange ends."""
        self._closed = True
        for origin in self._origins.values():
            for conn in list(origin.idle):
                conn.close()
            origin.idle.clear()

    async def request(
        self,
        *,
        endpoint: str,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes | StreamBody | None,
    ) -> Connection:
        """Send the request; return the connection once the response head is in (release it after).

        A stale kept-alive connection is retried once for idempotent methods, but never with a
        `StreamBody`: its bytes are read from the client as they are sent and cannot be sent again.
        """
        origin = self._origins.get(endpoint)
        if origin is None:
            origin = self._origins[endpoint] = Origin(URL(endpoint))
        head = _request_head(method, path, origin.host_header, headers, body)
        retried = False
        while True:
            conn = await self._acquire(origin)
            try:
                if isinstance(body, StreamBody):
                    await conn.send_stream(method, head, body)
                else:
                    await conn.send(method, head, body)
                if conn.error is not None:
                    # The body broke its framing in the bytes that came with the head: say so
                    # now (a 502) rather than relay a status line and cut the body after it.
                    raise conn.error
                return conn
            except StaleConnection as e:
                self.release(conn)
                if retried or method not in IDEMPOTENT or isinstance(body, StreamBody):
                    raise ClientError(str(e)) from e
                retried = True  # the peer closed an idle connection just as it was reused: once more
            except BaseException:
                self.release(conn)
                raise

    def release(self, conn: Connection) -> None:
        """Give the connection's slot back; the connection is reused only after a complete exchange."""
        origin = conn.origin
        if (
            conn.done
            and conn.keep_alive
            and conn.error is None
            and not conn.closed
            and not conn.body
            and not self._closed
        ):
            conn.park(asyncio.get_running_loop().time())
            origin.idle.append(conn)
        else:
            conn.close()
        self._pass_slot(origin)

    async def _acquire(self, origin: Origin) -> Connection:
        if self._closed:
            raise ClientError("the proxy is stopping")
        if origin.busy >= self._limit or origin.waiters:
            waiter = asyncio.get_running_loop().create_future()
            origin.waiters.append(waiter)
            try:
                await waiter  # the slot of a released connection is handed over, not freed
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._pass_slot(origin)
                else:
                    origin.waiters.remove(waiter)
                raise
        else:
            origin.busy += 1
        try:
            idle = origin.idle
            while idle:
                conn = idle.pop()
                if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                    return conn
            return await self._connect(origin)
        except BaseException:
            self._pass_slot(origin)
            raise

    def _pass_slot(self, origin: Origin) -> None:
        waiters = origin.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        origin.busy -= 1

    async def _connect(self, origin: Origin) -> Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if origin.ssl:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(origin), origin.host, origin.port, ssl=context
                )
        except TimeoutError as e:
            raise ConnectError(
                f"cannot connect to {origin.label}: no connection within {self._connect_timeout:g} s"
            ) from e
        except OSError as e:
            raise ConnectError(f"cannot connect to {origin.label}: {e.strerror or e}") from e
        return conn

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._idle_timeout / 3)
            stale = loop.time() - self._idle_timeout
            for endpoint, origin in list(self._origins.items()):
                keep = [conn for conn in origin.idle if conn.last_used > stale and not conn.closed]
                for conn in origin.idle:
                    if conn.last_used <= stale:
                        conn.close()
                origin.idle[:] = keep
                if not keep and origin.busy == 0 and not origin.waiters:
                    del self._origins[endpoint]  # endpoints come and go with replicas


def _request_head(
    method: str, path: str, host: str, headers: list[tuple[str, str]], body: bytes | StreamBody | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1\r\nHost: {host}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if isinstance(body, StreamBody):
        length = body.length
        lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    elif body is not None or method in BODY_METHODS:
        lines.append(f"Content-Length: {len(body) if body is not None else 0}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
