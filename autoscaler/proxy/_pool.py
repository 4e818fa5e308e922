"""Keep-alive connection pools per upstream origin: requests take whichever connection frees first.

Opening a TCP connection per request would cost more than the proxying itself, and a burst of held
requests released at once must not open a hundred connections into a replica's small accept queue
(Python's `http.server` listens with a backlog of 5). So connections are not tied to requests, as in
Go's `http.Transport`: a request waiting for a connection takes the first that is free, a released
keep-alive connection or any dial that completes, in arrival order; a dial that completes with no
one waiting goes to the idle pool. Dials to an origin grow as its connections prove themselves,
like TCP's slow start: at most `window` connections are untried (being dialled, or open without a
first response), the window starts at `INITIAL_WINDOW`, grows by one with each first response and
halves when the replica shows it is overwhelmed (a dial slower than `accept_check`, a connection it
never accepted). `limit` caps all of an origin's connections.

A full accept queue makes the kernel drop the handshake's last packet: the client sees an open
connection, the server never accepted it. A request on a fresh connection whose bytes the peer's
kernel has not acknowledged after `accept_check` seconds (TCP_INFO) was never received: the
connection is reset and the request goes back to the head of the queue for another connection.

A connection whose exchange ended cleanly goes back to its pool; any other is closed. One handed
straight to a waiting request is sent on before the event loop reads its socket again, so it is
first checked for bytes past its last response (FIONREAD): those are nobody's answer, and the
request takes another connection. Idle
connections are closed after `idle_timeout` seconds (`--upstream-idle-timeout`, 15 s by default,
aiohttp's keep-alive timeout) by one background sweep, which also forgets origins that have nothing
left (endpoints come and go with replicas).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from yarl import URL

from autoscaler.proxy._client import BODY_METHODS, IDEMPOTENT, Connection, StreamBody
from autoscaler.proxy._http1 import ClientError, ConnectError, NotAccepted, StaleConnection
from autoscaler.tasks import Background

# Untried connections allowed per origin before any has answered (below Python's backlog of 5).
INITIAL_WINDOW = 4
# Seconds after which a dial still in progress, or a fresh connection whose request bytes the peer
# never acknowledged, counts as a sign of a full accept queue (loopback and in-cluster RTTs are ~1 ms).
ACCEPT_CHECK = 0.1


class Origin:
    """One upstream `scheme://host:port`: its connections, its dials and the requests waiting for one.

    `untried` counts dials in progress and connections without a first response yet, `proven` the
    open connections that had one; the pool keeps `untried` within `window` (see `_pool`).
    """

    __slots__ = (
        "dialing", "handshake", "host", "host_header", "idle", "in_use", "label", "loop", "port", "proven",
        "ssl", "threshold", "untried", "waiters", "window",
    )  # fmt: skip

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise ClientError(f"endpoint {url} is not an http:// or https:// URL with a host")
        self.host: str = url.host
        self.port: int = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = url.scheme == "https"
        default = 443 if self.ssl else 80
        self.host_header = self.host if self.port == default else f"{self.host}:{self.port}"
        self.label = str(url.origin())
        # Kept here: Python 3.11's asyncio.get_running_loop() makes a getpid() system call per call.
        self.loop = loop
        self.idle: list[Connection] = []
        self.in_use = 0  # connections handed out to requests
        self.dialing = 0  # connections being opened
        self.untried = 0
        self.proven = 0
        self.window = 0.0
        self.threshold = float("inf")  # above it the window grows by one per window of first answers
        self.handshake = 0.0  # seconds a connect takes here (a moving average; 0 before the first)
        self.waiters: deque[asyncio.Future[Connection]] = deque()


class Pool:
    """Sends requests to upstream endpoints over pooled keep-alive connections."""

    def __init__(
        self,
        *,
        limit_per_origin: int,
        connect_timeout: float,
        idle_timeout: float,
        accept_check: float = ACCEPT_CHECK,
    ) -> None:
        if limit_per_origin < 1:
            raise ValueError(f"limit_per_origin must be >= 1 (got {limit_per_origin})")
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0 seconds (got {idle_timeout})")
        self._limit = limit_per_origin
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._accept_check = accept_check
        self._origins: dict[str, Origin] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self._dials: set[asyncio.Task[None]] = set()

    def start(self, background: Background) -> None:
        background.spawn(self._sweep(), name="upstream idle connections")

    def close(self) -> None:
        """Close every idle connection and stop dialling; connections in use close when released."""
        self._closed = True
        for task in list(self._dials):
            task.cancel()
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
        upgrade: bool = False,
    ) -> Connection:
        """Send the request; return the connection once the response head is in (release it after).

        With `upgrade` (the headers ask for one) a 101 answer is accepted: the connection then
        carries another protocol and is never reused (`_tunnel` closes it before releasing it).

        A request on a fresh connection that the replica never accepted is sent again on another one
        (it never arrived). A stale kept-alive connection is retried once for idempotent methods, never
        with a `StreamBody` (its bytes are read from the client as they are sent); that one resend
        goes to the same replica, and when the replica then refuses the connection it has failed with
        the request: the error is a plain ClientError, so that the caller does not try other replicas.
        """
        origin = self._origins.get(endpoint)
        if origin is None:
            origin = self._origins[endpoint] = Origin(URL(endpoint), asyncio.get_running_loop())
            origin.window = float(min(INITIAL_WINDOW, self._limit))
        head = _request_head(method, path, origin.host_header, headers, body)
        resent = False
        first = False  # back at the head of the queue: it was waiting before the others
        while True:
            try:
                conn = await self._acquire(origin, first=first)
            except ConnectError as e:
                if resent:
                    raise ClientError(f"{e} (after the kept-alive connection was closed)") from e
                raise
            first = False
            if conn.handed_over:
                conn.handed_over = False
                if conn.stray():  # bytes past the end of the last response: they are nobody's answer
                    conn.close()
                    self.release(conn)
                    first = True
                    continue
            try:
                return await self._exchange(conn, method, head, body, upgrade)
            except NotAccepted:
                self.release(conn)
                self._overwhelmed(origin)
                first = True
            except StaleConnection as e:
                self.release(conn)
                if resent or method not in IDEMPOTENT or isinstance(body, StreamBody):
                    raise ClientError(str(e)) from e
                resent = True  # the peer closed an idle connection just as it was reused: once more
            except BaseException:
                self.release(conn)
                raise

    async def _exchange(
        self, conn: Connection, method: str, head: bytes, body: bytes | StreamBody | None, upgrade: bool
    ) -> Connection:
        """Send on `conn` and wait for the response head; raises what the exchange failed with."""
        if isinstance(body, StreamBody):
            await conn.send_stream(method, head, body, upgrade=upgrade)
        else:
            answered = conn.send(method, head, body, upgrade=upgrade)
            if not conn.proven:
                conn.origin.loop.call_later(self._accept_check, self._check, conn)
            await answered
        if not conn.proven:
            self._proved(conn)
        if conn.error is not None:
            # The body broke its framing in the bytes that came with the head: say so now (a 502)
            # rather than relay a status line and cut the body after it.
            raise conn.error
        return conn

    def release(self, conn: Connection) -> None:
        """Give the connection back; it is reused only after a complete exchange."""
        origin = conn.origin
        origin.in_use -= 1
        if (
            conn.done
            and conn.keep_alive
            and conn.error is None
            and not conn.closed
            and not conn.body
            and not self._closed
        ):
            self._give(origin, conn)
        else:
            conn.close()
            self._pump(origin)

    def detach(self, conn: Connection) -> None:
        """An upgraded connection leaves its pool for good: it no longer counts against the limit."""
        conn.detach()
        conn.origin.in_use -= 1
        self._pump(conn.origin)

    # -- connections to requests -------------------------------------------------------------------

    async def _acquire(self, origin: Origin, *, first: bool) -> Connection:
        if self._closed:
            raise ClientError("the proxy is stopping")
        idle = origin.idle
        while idle:
            conn = idle.pop()
            if not conn.proven and idle:
                # A dial nobody waited for may be one the replica never accepted: a proven one first.
                for index in range(len(idle) - 1, -1, -1):
                    if idle[index].proven:
                        idle[index], conn = conn, idle[index]
                        break
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                origin.in_use += 1
                return conn
        waiter: asyncio.Future[Connection] = origin.loop.create_future()
        if first:
            origin.waiters.appendleft(waiter)
        else:
            origin.waiters.append(waiter)
        self._pump(origin)
        try:
            return await waiter
        except BaseException:
            if not waiter.done():
                waiter.cancel()
            if waiter in origin.waiters:
                origin.waiters.remove(waiter)
            elif not waiter.cancelled() and waiter.exception() is None:
                # A connection was handed over just as this request gave up: pass it on.
                origin.in_use -= 1
                self._give(origin, waiter.result())
            raise

    def _give(self, origin: Origin, conn: Connection) -> None:
        """Hand a usable connection to the first waiting request, or park it in the idle pool."""
        waiters = origin.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                origin.in_use += 1
                conn.handed_over = conn.uses > 0  # sent on before the loop reads its socket again
                waiter.set_result(conn)
                return
        conn.park(origin.loop.time())
        origin.idle.append(conn)

    def _pump(self, origin: Origin) -> None:
        """Start the dials the waiting requests need, within the origin's limit and window."""
        while (
            len(origin.waiters) > origin.dialing
            and origin.in_use + len(origin.idle) + origin.dialing < self._limit
            and origin.untried < min(origin.window, INITIAL_WINDOW + 2 * origin.proven)
            and not self._closed
        ):
            origin.untried += 1  # the dial's place among the untried passes to its connection
            origin.dialing += 1
            task = origin.loop.create_task(self._dial(origin))
            self._dials.add(task)
            task.add_done_callback(self._dials.discard)

    def _proved(self, conn: Connection) -> None:
        conn.prove()
        origin = conn.origin
        if origin.window < self._limit:
            # Slow start up to the threshold (doubling per round of answers), then one per round.
            origin.window += 1.0 if origin.window < origin.threshold else 1.0 / origin.window
        self._pump(origin)

    def _overwhelmed(self, origin: Origin) -> None:
        origin.threshold = origin.window = max(1.0, origin.window / 2)

    def _check(self, conn: Connection) -> None:
        """`accept_check` seconds after a request went out on a fresh connection, still unanswered."""
        if conn.proven or conn.closed:
            return
        unaccepted = conn.unaccepted()
        if unaccepted:
            conn.drop_unaccepted()
        elif unaccepted is not None or not conn.done:
            # The peer's kernel holds the request (or we cannot tell): the connection is established
            # and a slow function is no reason to hold back the dials of the requests behind it.
            self._proved(conn)

    async def _dial(self, origin: Origin) -> None:
        error: ConnectError | None = None
        try:
            conn = await self._connect(origin)
        except ConnectError as e:
            error = e
        except BaseException:
            origin.untried -= 1
            raise
        finally:
            origin.dialing -= 1
        if error is not None:
            origin.untried -= 1
            self._fail_first(origin, error)
        else:
            conn.trial = True
            if conn.closed:
                conn.untrial()  # the replica closed it at once
            elif self._closed:
                conn.close()
            else:
                self._give(origin, conn)
        self._pump(origin)

    def _fail_first(self, origin: Origin, error: ConnectError) -> None:
        """A dial failed: the request waiting longest learns why (the caller may try another replica)."""
        waiters = origin.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
                return

    async def _connect(self, origin: Origin) -> Connection:
        """Open a connection, giving up on a handshake that takes far longer than this origin's usual.

        A SYN dropped by a full accept queue is sent again by the kernel only after 1 s, then 3 s: a
        new attempt after `accept_check` (or four usual handshakes, if longer), with the patience
        doubling each time, gets in as soon as the queue has room. Every such wait halves the window.
        """
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if origin.ssl:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        give_up = loop.time() + self._connect_timeout
        patience = max(self._accept_check, 4 * origin.handshake)
        while True:
            attempt = loop.time()
            try:
                async with asyncio.timeout_at(min(give_up, attempt + patience)):
                    _, conn = await loop.create_connection(
                        lambda: Connection(origin), origin.host, origin.port, ssl=context
                    )
            except TimeoutError as e:
                if loop.time() < give_up:
                    self._overwhelmed(origin)
                    patience *= 2
                    continue
                raise ConnectError(
                    f"cannot connect to {origin.label}: no connection within {self._connect_timeout:g} s"
                ) from e
            except OSError as e:
                raise ConnectError(f"cannot connect to {origin.label}: {e.strerror or e}") from e
            took = loop.time() - attempt
            origin.handshake = took if origin.handshake == 0 else 0.8 * origin.handshake + 0.2 * took
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
                if not keep and origin.in_use == 0 and origin.dialing == 0 and not origin.waiters:
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
