"""The client side of the data port: the limits an edge proxy puts on the connections it accepts.

aiohttp's server trusts its clients: no header timeout, a keep-alive timeout of an hour, only
per-line caps on a request head (128 lines of 8 KiB: a megabyte a connection), no deadline for a
client that stops reading a response, and at the file-descriptor limit asyncio's accept loop logs
an error for every pending connection. A few hundred idle or hostile connections then keep every
function from being served. Here the server's protocol gets what nginx, Envoy and Go's http.Server
have:
- a header timeout: a connection must bring a whole request head within `header_timeout` seconds
  of opening, or of its first byte after a response (408 if it sent part of one, then closed);
- a keep-alive timeout: an idle connection between requests closes after `keepalive_timeout`;
- a cap on the whole head (request line plus headers): 431 and closed above `max_head_size`;
- a body timeout: a request body must keep coming, a piece at least every `body_timeout` seconds
  (unless the proxy itself stopped reading), or the client is cut and its buffered bytes freed;
- a send timeout: a response whose bytes the client has not taken for `send_timeout` seconds cuts
  the client, so the relay stops and drops the function's connection instead of waiting for ever;
- at the descriptor limit (EMFILE), the oldest idle client connections are closed to make room, and
  new ones replace the oldest idle ones, keeping a margin free for connections to the functions;
- a malformed request gets aiohttp's 400 without a traceback in the log for each one.

An upgraded connection (a WebSocket spliced to a function, `_tunnel`) keeps the send timeout; its
half-close and write back-pressure are passed to the splice (`tunnel`) instead of closing it.

A request for another protocol switch (`h2c`, `foo/1`), which aiohttp's parsers do not stop parsing
HTTP for (`_upgrades`), has its head parsed alone; what the client sends after it is held, unparsed
(`upgrade_held`), until the function answers: a 101 hands it to the splice (`start_tunnel`), any
other answer closes the connection (`_respond.ProxyRequest`). Held bytes pause reading at aiohttp's
`read_bufsize`, like its own; a half-close while held is kept for the splice.

Timeouts are checked by one sweep over the connections (`resolution` seconds apart), not a timer
per request: the hot path only records when a head began and when writing paused.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from autoscaler.proxy._upgrades import Feed, asked_upgrade

log = logging.getLogger("autoscaler.proxy")

# At the descriptor limit: the share of client connections kept free for upstream connections.
FD_MARGIN = 0.1
FD_MARGIN_MIN = 8
# How long a ceiling learnt from EMFILE stays without a new EMFILE (the limit or the load may change).
CEILING_TTL = 30.0
# Seconds between two warnings about the descriptor limit.
WARN_EVERY = 10.0
# After a refusal (408, 431): seconds the rest of what the client sends is read and dropped, so that
# the close does not reset the connection before the client has read the answer (nginx lingers too).
LINGER = 2.0

_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE})
_HEAD_END = b"\r\n\r\n"


class TunnelEnd(Protocol):
    """What an upgraded client connection tells the splice (`_tunnel`) besides the bytes it reads."""

    def client_writable(self, writable: bool) -> None: ...

    def client_eof(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ClientLimits:
    header_timeout: float
    keepalive_timeout: float
    max_head_size: int
    send_timeout: float
    body_timeout: float

    @property
    def resolution(self) -> float:
        """Seconds between sweeps: a quarter of the shortest timeout, at most one second."""
        return min(1.0, self.header_timeout / 4, self.send_timeout / 4, self.body_timeout / 4)


def _answer(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class ClientConnection(RequestHandler):
    """aiohttp's server protocol plus the head's clock and size, and the time writing stalled."""

    __slots__ = (
        "_body_at", "_discarding", "_head_bytes", "_head_last", "_head_since", "_held_bytes", "_held_eof",
        "_limits", "_payload", "_stalled_since", "tunnel", "upgrade_held",
    )  # fmt: skip

    def __init__(self, manager: ClientServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._head_since: float | None = None  # loop time the current head began; None: not in one
        self._head_bytes = 0
        self._payload: StreamReader | None = None  # the body of the last request parsed
        self._stalled_since: float | None = None  # loop time writing paused (the client reads nothing)
        self._discarding = False  # refused: what still comes is dropped until the close
        self._body_at = 0.0  # loop time the last piece of the current request's body came
        self.tunnel: TunnelEnd | None = None  # an upgraded connection spliced to a function's (`_tunnel`)
        self._head_last = b""  # the current head's last bytes so far: its blank line may span reads
        self.upgrade_held: RawRequestMessage | None = None  # its Upgrade holds what follows, unparsed
        self._held_bytes = b""  # what the client sent after that head
        self._held_eof = False  # the client half-closed while held

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_since = self._loop.time()  # a new connection owes a head at once

    def data_received(self, data: bytes) -> None:
        rest: bytes | None = data
        while rest is not None:  # a loop, not recursion: one read may hold many pipelined heads
            rest = self._take(rest)

    def _take(self, data: bytes) -> bytes | None:
        """Parse what `data` begins with; what is left for the next turn (None: all taken)."""
        if self._discarding:
            return None
        if self._head_since is None:
            payload = self._payload
            if self._upgraded or self.tunnel is not None or (payload is not None and not payload.is_eof()):
                self._body_at = self._loop.time()
                super().data_received(data)  # the body of the current request
                return None
            if self.upgrade_held is not None:
                self._hold(data)
                return None
            self._payload = None  # that body is all in: keep no reference to it while idle
            self._head_since = self._loop.time()
            self._head_bytes = 0
            self._head_last = b""
        room = self._limits.max_head_size - self._head_bytes
        cut = self._head_end(data)
        rest: bytes | None = None
        if 0 < cut <= room and cut < len(data) and (self._head_bytes or b"upgrade" in data[:cut].lower()):
            data, rest = data[:cut], data[cut:]  # a head alone: what follows may not be HTTP
        elif len(data) > room:
            data, rest = data[:room], data[room:]
        count = self._request_count
        self._head_bytes += len(data)
        super().data_received(data)
        if self._request_count != count:
            self._head_done(clean=len(data) == cut and self._request_count == count + 1)
        elif len(data) == room and rest is not None:
            self._refuse(
                431, "Request Header Fields Too Large",
                f"request head too large: the limit is {self._limits.max_head_size} bytes "
                "of request line and headers; send fewer or smaller headers\n",
            )  # fmt: skip
            return None
        else:
            self._head_last = (self._head_last + data[-3:])[-3:]
        return rest

    def _head_end(self, data: bytes) -> int:
        """Where in `data` the current head's blank line ends, or -1."""
        last = self._head_last
        if last:
            end = (last + data[:3]).find(_HEAD_END)
            if end >= 0:
                return end + 4 - len(last)
        end = data.find(_HEAD_END)
        return end + 4 if end >= 0 else -1

    def _head_done(self, *, clean: bool) -> None:
        self._head_since = None
        if self._messages:
            message, payload = self._messages[-1]
            self._payload = payload
            self._body_at = self._loop.time()
            # `clean`: one head, and nothing after it given to the parser.
            if (
                clean and not isinstance(message, _ErrInfo) and message.upgrade and not self._upgraded
                and payload.is_eof() and message.method != "CONNECT"
                and asked_upgrade(message.version, message.headers) is not None
            ):  # fmt: skip
                self.upgrade_held = message

    def _hold(self, data: bytes) -> None:
        self._held_bytes += data
        if len(self._held_bytes) >= self._read_bufsize and not self._buffer_paused:
            self._pause_reading_for_buffer()

    def start_tunnel(self, tunnel: TunnelEnd, feed: Feed) -> None:
        """Hand the connection to a splice: the bytes held since the head go first."""
        self.tunnel = tunnel
        self.upgrade_held = None
        held, self._held_bytes = self._held_bytes, b""
        self._upgraded = True
        self.set_parser(feed)  # type: ignore[arg-type]  # (resumes reading paused by the hold)
        if held:
            feed.feed_data(held)
        if self._held_eof:
            tunnel.client_eof()

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        if isinstance(kwargs.get("exc_info"), HttpProcessingError):
            # A malformed request: the client has its 400; a traceback per request would let any
            # client fill the log.
            log.debug("malformed request from %s: %s", self._peer(), kwargs["exc_info"])
            return
        super().log_exception(*args, **kwargs)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._stalled_since = self._loop.time()
        if self.tunnel is not None:
            self.tunnel.client_writable(False)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stalled_since = None
        if self.tunnel is not None:
            self.tunnel.client_writable(True)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio's: True keeps it open
        """The client half-closed: an upgraded connection passes it on and stays open for the answer."""
        if self.tunnel is not None:
            self.tunnel.client_eof()
            return True
        if self.upgrade_held is not None:
            self._held_eof = True  # for the splice, if the function switches
            return True
        return None

    @property
    def idle(self) -> bool:
        """Waiting for a request (between requests, or a head that has not come whole)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and self.transport is not None

    @property
    def fresh(self) -> bool:
        """Open, and no request head has come whole on it yet (a caller that has just connected)."""
        return self._request_count == 0 and self.transport is not None

    @property
    def idle_since(self) -> float:
        return self._next_keepalive_close_time  # aiohttp's: the end of the last response + keep-alive

    def check(self, now: float) -> None:
        """Close the connection if it broke a time limit (called by the sweep)."""
        limits = self._limits
        stalled = self._stalled_since
        if stalled is not None and now - stalled >= limits.send_timeout:
            log.debug("client %s read nothing for %g s: closed", self._peer(), limits.send_timeout)
            if self.transport is not None:
                self.transport.abort()  # its buffer will never drain: do not wait for it
            return
        payload = self._payload
        if (
            payload is not None
            and now - self._body_at >= limits.body_timeout
            and not payload.is_eof()
            and not (self._reading_paused or self._buffer_paused)  # not the proxy's own back-pressure
            and not self._upgraded
        ):
            log.debug("client %s sent no body for %g s: closed", self._peer(), limits.body_timeout)
            self.force_close()
            return
        head = self._head_since
        if head is not None and now - head >= limits.header_timeout and self.idle:
            if self._head_bytes:
                self._refuse(
                    408, "Request Timeout",
                    f"request head not complete within {limits.header_timeout:g} s; closing\n",
                )  # fmt: skip
            else:
                self.force_close()

    def _refuse(self, status: int, reason: str, text: str) -> None:
        self._head_since = None
        transport = self.transport
        if transport is None or self._request_in_progress or self._messages:
            self.force_close()  # a response is under way: no room for another one
            return
        self._discarding = True
        transport.write(_answer(status, reason, text))
        transport.write_eof()  # sent once the answer is out; reading goes on, dropping everything
        self._loop.call_later(LINGER, self.force_close)

    def _peer(self) -> str:
        transport = self.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if peer else "?"


class ClientServer(web.Server):
    """aiohttp's low-level server whose connections keep the limits; `sweep()` enforces the timeouts."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        limits: ClientLimits,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, keepalive_timeout=limits.keepalive_timeout, **kwargs)
        self.limits = limits
        self._ceiling: int | None = None  # client connections at most, learnt from EMFILE
        self._ceiling_until = 0.0
        self._warned = float("-inf")
        self.shed_total = 0

    def __call__(self) -> ClientConnection:
        return ClientConnection(self, loop=self._loop, **self._kwargs)

    async def sweep(self) -> None:
        """Check every connection's time limits, forever (run it as a background task)."""
        loop = self._loop
        while True:
            await asyncio.sleep(self.limits.resolution)
            now = loop.time()
            for connection in list(self._connections):
                if isinstance(connection, ClientConnection):
                    connection.check(now)

    def shed(self, count: int) -> int:
        """Close up to `count` idle client connections, the longest idle first; how many closed."""
        if count <= 0:
            return 0
        idle = [c for c in self._connections if isinstance(c, ClientConnection) and c.idle]
        if len(idle) > count:
            idle = heapq.nsmallest(count, idle, key=lambda c: c.idle_since)
        for connection in idle:
            connection.force_close()
        self.shed_total += len(idle)
        return len(idle)

    def drain(self) -> None:
        """Close the connections waiting between requests (called again and again while draining).

        One mid-request is left to finish (its body still comes), and one that has just connected to
        send its first request: a drain serves it, instead of cutting it before its request is read.
        """
        for connection in list(self._connections):
            if isinstance(connection, ClientConnection) and connection.idle and not connection.fresh:
                connection.close()

    def fresh(self, *, since: float) -> int:
        """Open connections accepted after `since` (loop time) still to send their first request head."""
        return sum(
            1
            for c in self._connections
            if isinstance(c, ClientConnection) and c.fresh and (c._head_since or since) > since
        )

    def before_accept(self) -> None:
        """Past the learnt ceiling, a new connection replaces the longest idle one."""
        ceiling = self._ceiling
        if ceiling is None:
            return
        if self._loop.time() > self._ceiling_until:
            self._ceiling = None
        elif len(self._connections) >= ceiling:
            # A batch at a time: the next accepts then find room without another scan.
            self.shed(len(self._connections) - ceiling + max(1, ceiling // 20))

    def out_of_descriptors(self) -> int:
        """accept() failed with EMFILE: learn a ceiling with a margin and shed down to it."""
        now = self._loop.time()
        live = len(self._connections)
        ceiling = max(1, live - max(FD_MARGIN_MIN, int(live * FD_MARGIN)))
        self._ceiling = ceiling if self._ceiling is None else min(self._ceiling, ceiling)
        self._ceiling_until = now + CEILING_TTL
        shed = self.shed(live - self._ceiling)
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning(
                "out of file descriptors with %d client connections: closed %d idle ones, and new "
                "connections now replace the longest idle (raise the limit with ulimit -n)",
                live, shed,
            )  # fmt: skip
        return shed


class Listener(socket.socket):
    """The data port's listening socket: at the descriptor limit it makes room instead of failing.

    asyncio's accept loop, on EMFILE, logs and retries once per pending connection (thousands of
    lines a second) and pauses accepting for a second. Here accept() asks the server to shed idle
    connections and reports "nothing to accept" until their descriptors are free (the next loop
    turn); only when nothing could be shed does one EMFILE reach asyncio (one log line, a pause).
    """

    def __init__(self, family: int, server: ClientServer) -> None:
        super().__init__(family, socket.SOCK_STREAM)
        self._server = server
        self._failed = False  # an EMFILE went to asyncio in this loop turn

    def accept(self) -> tuple[socket.socket, Any]:
        if self._failed:
            raise BlockingIOError(errno.EAGAIN, "waiting for descriptors")
        self._server.before_accept()
        try:
            return super().accept()
        except OSError as e:
            if e.errno not in _OUT_OF_FDS:
                raise
            if self._server.out_of_descriptors():
                raise BlockingIOError(errno.EAGAIN, "shed idle connections; retry next turn") from e
            self._failed = True
            asyncio.get_running_loop().call_soon(self._clear)
            raise

    def _clear(self) -> None:
        self._failed = False


def listen(server: ClientServer, host: str, port: int, *, reuse_port: bool = False) -> Listener:
    """A bound listening socket for `server` (the site calls listen() with its backlog).

    `reuse_port`: SO_REUSEPORT, so that the workers of `--workers N` each bind the same port and the
    kernel spreads new connections over them.

    A name with several addresses (`localhost`: ::1 and 127.0.0.1) binds its IPv4 one; `::` binds
    both families (Linux's dual-stack default).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = min(infos, key=lambda info: info[0] != socket.AF_INET)
    sock = Listener(family, server)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
