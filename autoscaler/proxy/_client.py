"""A lean HTTP/1.1 client for the proxy's upstream side: keep-alive pools on asyncio protocols.

aiohttp's `ClientSession` costs about 75 us of CPU per request (request and response objects, URL
handling, tracing hooks, a connector built for every case), more than half of what the proxy spends.
The proxy needs far less: send a request it already parsed to a replica it already knows, read back
a status line, headers and a body delimited by Content-Length, chunked coding or the end of the
connection. This module does only that: one `asyncio.Protocol` per connection that feeds the bytes
it receives through the three body framings, with what they mean decided in `_http1` (pooling is in
`_pool`, what TCP_INFO says in `_tcp`). Timeouts are the caller's (the
proxy's deadline sweep cancels the awaiting task); a cancelled or unfinished exchange always closes
its connection, and a connection is reused only after a complete, well-framed response.

Request bodies are bytes (function calls, read whole and bounded by `--max-body`) or a `StreamBody`
(requests passed through to the real provider, which may be large): a stream is written piece by
piece as the caller reads it from its client, waiting for the socket to drain between pieces, so
neither a slow upstream nor a large upload fills memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from autoscaler.proxy import _tcp
from autoscaler.proxy._http1 import (
    CHUNK_DATA,
    CHUNK_END,
    CHUNK_SIZE,
    DONE,
    HEAD,
    LENGTH,
    MAX_HEAD,
    MAX_LINE,
    TRAILER,
    UNTIL_EOF,
    ClientError,
    NotAccepted,
    StaleConnection,
    chunk_size,
    head_end,
    parse_head,
)

if TYPE_CHECKING:
    from autoscaler.proxy._pool import Origin


# Body bytes received but not yet taken by the caller: above this the socket stops being read
# until the caller takes them (a slow client slows the function down instead of filling memory).
HIGH_WATER = 256 * 1024
# Methods a reused connection may resend once when it turns out to have been closed by the peer.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Methods for which an absent body is still announced as `Content-Length: 0`.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class StreamBody:
    """A request body sent as it is read: `read()` gives the next piece (b"" at the end).

    With a `length` it goes out with that Content-Length; without one, in chunked coding.
    """

    read: Callable[[], Awaitable[bytes]]
    length: int | None


class Connection(asyncio.Protocol):
    """One keep-alive connection and the parser of the response it is currently reading."""

    __slots__ = (
        "_buf", "_chunk_left", "_drain_waiter", "_feed_waiter", "_head", "_interim_kept", "_method",
        "_paused", "_state", "_upgrade", "_write_paused", "body", "body_size", "closed", "connection",
        "content_length", "counted", "done", "error", "got_bytes", "handed_over", "headers", "keep_alive",
        "last_used", "loop", "origin", "proven", "reason", "status", "transport", "trial", "uses",
    )  # fmt: skip

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.loop = origin.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.uses = 0
        self.proven = False  # a response came back on it: the replica accepted it
        self.trial = False  # counted in origin.untried
        self.counted = False  # counted in origin.proven
        self.last_used = 0.0
        self.handed_over = False  # released straight to a waiting request (see `_pool`)
        self._write_paused = False  # the transport's write buffer is above its high-water mark
        self._drain_waiter: asyncio.Future[None] | None = None
        self._buf = bytearray()  # a line-oriented state's bytes so far (kept, cleared per exchange)
        self._reset("GET")

    def _reset(self, method: str, upgrade: bool = False) -> None:
        self._method = method
        self._upgrade = upgrade  # the request asked for an Upgrade: a 101 is its answer
        self._interim_kept = True  # no interim response, or only 100 Continue, came before the answer
        self._state = HEAD
        self._buf.clear()
        self._head: asyncio.Future[None] | None = None
        self._feed_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._chunk_left = 0
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.connection = ""  # the Connection header's value(s), joined
        self.content_length: int | None = None
        self.keep_alive = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.done = False
        self.error: ClientError | None = None
        self.got_bytes = False

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._forget()
        self._wake_drain()
        if self._state == UNTIL_EOF and exc is None:
            self._finish()
        elif not self.done and self._head is not None:
            reason = f": {exc}" if exc else ""
            if self._state == HEAD and not self.got_bytes and self.uses > 1:
                self._fail(StaleConnection(f"the kept-alive connection was closed{reason}"))
            else:
                self._fail(ClientError(f"the connection was closed before the response ended{reason}"))
        idle = self.origin.idle
        if self in idle:
            idle.remove(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        if self._head is None or self.done or self.error is not None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        self.got_bytes = True
        try:
            self._feed(data)
        except ClientError as e:
            self._fail(e)
            self.close()

    # -- one exchange ------------------------------------------------------------------------------

    def send(
        self, method: str, head: bytes, body: bytes | None, *, upgrade: bool = False
    ) -> asyncio.Future[None]:
        """Write the request; the returned future completes when the response head is parsed."""
        assert self.transport is not None
        self._reset(method, upgrade)
        self.uses += 1
        self._head = self.loop.create_future()
        if body is not None and len(body) <= 16 * 1024:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            if body:
                self.transport.write(body)
        return self._head

    async def send_stream(self, method: str, head: bytes, body: StreamBody, *, upgrade: bool = False) -> None:
        """Write the head, then the body as it is read; return once the response head is parsed.

        If the replica answers (or the connection ends) before the whole body is sent, sending stops
        and the connection is not reused: the replica may not have read the rest.
        """
        head_future = self.send(method, head, None, upgrade=upgrade)
        assert self.transport is not None
        transport = self.transport
        chunked = body.length is None
        complete = False
        while not head_future.done() and not self.closed:
            data = await body.read()
            if self.closed or head_future.done():
                break
            if not data:
                if chunked:
                    transport.write(b"0\r\n\r\n")
                complete = True
                break
            transport.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
            while self._write_paused and not self.closed and not head_future.done():
                waiter = self._drain_waiter = self.loop.create_future()
                try:
                    await waiter
                finally:
                    self._drain_waiter = None
        await head_future
        if not complete:
            self.keep_alive = False  # answered early: the rest of the body was never sent

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_body(self) -> bytes:
        """The body bytes received so far, handed over once."""
        body = self.body
        self.body = []
        self.body_size = 0
        return body[0] if len(body) == 1 else b"".join(body)

    async def read_all(self) -> bytes:
        """The whole body; raises ClientError when the connection broke off before its end."""
        while not self.done:
            await self._wait()
        return self.take_body()

    async def read_any(self) -> bytes:
        """The body bytes received so far (waiting for some), b"" at its end; raises ClientError."""
        while not self.body:
            if self.done:
                return b""
            await self._wait()
        body = self.body
        self.body = []
        self.body_size = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return body[0] if len(body) == 1 else b"".join(body)

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        waiter = self._feed_waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._feed_waiter = None
        if self.error is not None and not self.body:
            raise self.error

    def stray(self) -> bool:
        """Whether bytes came or wait unread (FIONREAD) after a complete response: never reuse it then."""
        return self.closed or self.transport is None or _tcp.pending(self.transport) > 0

    def park(self, now: float) -> None:
        """The exchange is over and the connection idles in its pool: a byte arriving now closes it."""
        self.last_used = now
        self._head = None

    def close(self) -> None:
        self.closed = True
        self._forget()
        if self.transport is not None:
            self.transport.close()

    def detach(self) -> None:
        """Another protocol takes the transport over (after a 101): this connection is over for the pool."""
        self.closed = True
        self._forget()

    def untrial(self) -> None:
        """Stop counting this connection among its origin's untried ones (once)."""
        if self.trial:
            self.trial = False
            self.origin.untried -= 1

    def prove(self) -> None:
        """A response came back: the replica accepted this connection."""
        self.proven = True
        self.untrial()
        if not self.closed:
            self.counted = True
            self.origin.proven += 1

    def _forget(self) -> None:
        self.untrial()
        if self.counted:
            self.counted = False
            self.origin.proven -= 1

    def unaccepted(self) -> bool | None:
        """While the request waits for its answer: whether the peer's kernel acknowledged none of it.

        None when the exchange is over or TCP_INFO cannot tell (see `_tcp`).
        """
        head = self._head
        if self.closed or self.got_bytes or head is None or head.done() or self.transport is None:
            return None
        return _tcp.unacknowledged(self.transport)

    def drop_unaccepted(self) -> None:
        """Reset the connection, so that the kernel never delivers the request, and fail the exchange."""
        self._fail(NotAccepted(f"{self.origin.label} never accepted the connection"))
        self.closed = True
        self.untrial()
        if self.transport is not None:
            _tcp.reset(self.transport)

    # -- the parser --------------------------------------------------------------------------------

    def _fail(self, error: ClientError) -> None:
        if self.error is None:
            self.error = error
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        self._wake()
        self._wake_drain()

    def _wake(self) -> None:
        waiter = self._feed_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self) -> None:
        self._state = DONE
        self.done = True
        self._wake()

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self.body.append(data)
        self.body_size += len(data)
        if self.body_size > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _feed(self, data: bytes) -> None:
        while data:
            state = self._state
            if state == LENGTH:
                left = self._chunk_left
                if len(data) < left:
                    self._chunk_left = left - len(data)
                    self._emit(data)
                    return
                self._emit(data[:left] if len(data) > left else data)
                if len(data) > left:
                    self.keep_alive = False  # more than announced: never reuse this connection
                self._finish()
                return
            if state == UNTIL_EOF:
                self._emit(data)
                return
            if state == CHUNK_DATA:
                left = self._chunk_left
                if len(data) <= left:
                    self._chunk_left = left - len(data)
                    self._emit(data)
                    if self._chunk_left == 0:
                        self._state = CHUNK_END
                    return
                self._emit(data[:left])
                data = data[left:]
                self._state = CHUNK_END
                continue
            if state == DONE:
                self.keep_alive = False
                return
            data = self._feed_line(data)

    def _feed_line(self, data: bytes) -> bytes:
        """Line-oriented states (the head, chunk sizes, chunk ends, trailers): the bytes after the line."""
        state = self._state
        buf = self._buf
        if state == HEAD and not buf:
            # The usual case: the whole head (often with its body) in one read, parsed without a copy.
            end, after = head_end(data)
            if end >= 0:
                self._parse_head(data[:end])
                return data[after:]
        buf += data
        if state == HEAD:
            end, after = head_end(buf)
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ClientError(f"the response head is larger than {MAX_HEAD} bytes")
                return b""
            head = bytes(buf[:end])
            rest = bytes(buf[after:])
            buf.clear()
            self._parse_head(head)
            return rest
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > MAX_LINE:
                raise ClientError("a chunk-size or trailer line is too long")
            return b""
        line = bytes(buf[:end])
        rest = bytes(buf[end + 2 :])
        buf.clear()
        if state == CHUNK_SIZE:
            size = chunk_size(line)
            if size == 0:
                self._state = TRAILER
            else:
                self._chunk_left = size
                self._state = CHUNK_DATA
        elif state == CHUNK_END:
            if line:
                raise ClientError("a chunk is longer than its announced size")
            self._state = CHUNK_SIZE
        elif state == TRAILER and not line:
            self._finish()
            if rest:
                self.keep_alive = False
        return rest

    def _parse_head(self, raw: bytes) -> None:
        head = parse_head(raw, self._method, upgrade=self._upgrade)
        if head.status < 200 and head.status != 101:
            self._interim_kept = self._interim_kept and head.keep_alive
            return  # 100 Continue and other interim responses: the real one follows
        self.status = head.status
        self.reason = head.reason
        self.headers = head.headers
        self.connection = head.connection
        self.keep_alive = head.keep_alive and self._interim_kept
        self.content_length = head.length
        if head.state == DONE:
            self._finish()
        else:
            self._state = head.state
            if head.state == LENGTH:
                self._chunk_left = head.length or 0
        head_future = self._head
        if head_future is not None and not head_future.done():
            head_future.set_result(None)
        self._wake_drain()  # a body still being sent stops: the answer is in
