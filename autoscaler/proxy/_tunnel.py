"""Upgraded connections (WebSocket and the like): after a 101, the client's and the function's sockets
are spliced both ways until either side closes.

`Connection` and `Upgrade` are hop-by-hop headers, so a reverse proxy drops them, unless it relays the
upgrade itself, as Go's httputil.ReverseProxy does (handleUpgradeResponse): the request goes to the
function with `Connection: upgrade` and its `Upgrade` header; a `101 Switching Protocols` answer is
relayed with them, and from then on the bytes are not HTTP any more. Any other answer is an ordinary
response (aiohttp's server then reads the client's next request as usual).

The splice works on the two transports' protocol callbacks, with no task copying buffers: what one
side reads is written to the other at once; a side whose write buffer is full pauses reading on the
other (back-pressure both ways, so a slow reader slows the writer instead of filling memory); a
half-close (EOF) is passed on as a half-close and the other direction keeps flowing; when both
directions have ended, or either connection is lost, both are closed. The function's connection
leaves its pool once it switched: it is never reused, and takes no place among the replica's pooled
connections. A tunnel where no byte moves either way
for `idle_timeout` seconds (the upstream timeout) is closed, so a function that answers 101 and then
goes silent holds nothing for ever; a client that stops reading is cut by the send timeout of
`_downstream`.

Any protocol is relayed (`h2c`, `foo/1`, ...) when the request asks for it as HTTP/1.1 allows
(`_upgrades`): a WebSocket's bytes after its head are set aside by aiohttp's own parser, any other
protocol's by the client connection (`_downstream`, `upgrade_held`), and both reach the function
first when the splice begins. A 101 must name a protocol the client asked for (Go's ReverseProxy
checks the same): one that switches to another is a 502.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from autoscaler.proxy._client import Connection
from autoscaler.proxy._downstream import ClientConnection
from autoscaler.proxy._pool import Pool
from autoscaler.proxy._upgrades import asked_upgrade, protocols, self_switched


def upgrade_of(request: web.BaseRequest) -> str | None:
    """The protocols a request asks to switch to when the proxy can relay the switch, else None.

    A WebSocket always (aiohttp's parser holds what follows its head); any other protocol when the
    client connection holds what followed its head (no body came first, nothing else in that read).
    """
    upgrade = asked_upgrade(request.version, request.headers)
    if upgrade is None or self_switched(request.headers):
        return upgrade
    protocol = request.protocol
    if isinstance(protocol, ClientConnection) and protocol.upgrade_held is request._message:
        return upgrade
    return None


def switched_to(upstream: Connection) -> str:
    """The `Upgrade` of a function's 101 ("" when it names none)."""
    return ", ".join(value.strip() for name, value in upstream.headers if name.lower() == "upgrade")


def switches_as_asked(request: web.BaseRequest, upstream: Connection) -> bool:
    """Whether a 101 switches to protocols the client asked for (or names none: the one asked)."""
    switched = protocols(switched_to(upstream))
    return switched <= protocols(upgrade_of(request) or "")


async def splice(
    request: web.BaseRequest,
    upstream: Connection,
    headers: list[tuple[str, str]],
    *,
    pool: Pool,
    idle_timeout: float,
) -> web.StreamResponse:
    """Relay the function's 101 and splice the two connections until the tunnel ends.

    Once the 101 is out, `upstream` leaves its pool (`Pool.detach`): an open WebSocket takes none of
    the replica's `--upstream-connections` from ordinary calls, and its socket is never reused.
    """
    upgrade = switched_to(upstream)
    out = web.StreamResponse(status=101, reason=upstream.reason or "Switching Protocols", headers=headers)
    out.headers["Connection"] = "upgrade"
    out.headers["Upgrade"] = upgrade or request.headers.get("Upgrade", "")
    out.force_close()  # after the tunnel, aiohttp must not read another request from this connection
    try:
        await out.prepare(request)
    except BaseException:
        upstream.close()
        pool.release(upstream)
        raise
    # From here to the splice nothing awaits: no byte of either side can slip past.
    upstream_transport = upstream.transport
    early = upstream.take_body()  # the new protocol's bytes that came with the 101
    gone = upstream.closed
    pool.detach(upstream)
    client = request.transport
    protocol = request.protocol
    if client is not None and early:
        client.write(early)
    if gone or upstream_transport is None or client is None or client.is_closing():
        _close(client, upstream_transport)  # either side is gone already: the other learns it now
        return out
    if not isinstance(protocol, ClientConnection):
        _close(client, upstream_transport)
        return out
    tunnel = _Tunnel(client, upstream_transport, idle_timeout=idle_timeout)
    upstream_transport.set_protocol(_UpstreamEnd(tunnel))
    if not upstream_transport.is_reading():
        upstream_transport.resume_reading()  # paused by the client's buffer cap before the splice
    try:
        protocol.start_tunnel(tunnel, _ClientFeed(tunnel))  # with what the client sent since its head
        await tunnel.done
    finally:
        protocol.tunnel = None
        tunnel.close()
    return out


def _close(*transports: asyncio.BaseTransport | None) -> None:
    for transport in transports:
        if transport is not None:
            transport.close()


class _Tunnel:
    """The state of one splice: which directions still flow, when a byte last moved, the end."""

    __slots__ = ("_client", "_ended", "_idle_timeout", "_last", "_loop", "_timer", "_upstream", "done")

    def __init__(
        self, client: asyncio.Transport, upstream: asyncio.Transport, *, idle_timeout: float
    ) -> None:
        self._client = client
        self._upstream = upstream
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._ended: set[str] = set()  # the directions that saw an EOF: "up" (client->function), "down"
        self._idle_timeout = idle_timeout
        self._last = self._loop.time()
        self._timer = self._loop.call_later(idle_timeout, self._check_idle)

    # -- the client's side ---------------------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        self._last = self._loop.time()
        if not self._upstream.is_closing():
            self._upstream.write(data)

    def client_eof(self) -> None:
        self._half_close("up", self._upstream)

    def client_writable(self, writable: bool) -> None:
        if self._upstream.is_closing():
            return
        if writable:
            self._upstream.resume_reading()
        else:
            self._upstream.pause_reading()

    # -- the function's side -------------------------------------------------------------------------

    def from_upstream(self, data: bytes) -> None:
        self._last = self._loop.time()
        if not self._client.is_closing():
            self._client.write(data)

    def upstream_eof(self) -> None:
        self._half_close("down", self._client)

    def upstream_writable(self, writable: bool) -> None:
        if self._client.is_closing():
            return
        if writable:
            self._client.resume_reading()
        else:
            self._client.pause_reading()

    # -- the end -------------------------------------------------------------------------------------

    def _half_close(self, direction: str, to: asyncio.Transport) -> None:
        self._ended.add(direction)
        if len(self._ended) == 2 or not to.can_write_eof() or to.is_closing():
            self.close()
            return
        to.write_eof()  # sent once what is buffered is out

    def _check_idle(self) -> None:
        idle = self._loop.time() - self._last
        if idle >= self._idle_timeout:
            self.close()
        else:
            self._timer = self._loop.call_later(self._idle_timeout - idle, self._check_idle)

    def close(self) -> None:
        """End the tunnel: both connections close once what they have buffered is written."""
        self._timer.cancel()
        self._client.close()
        self._upstream.close()
        if not self.done.done():
            self.done.set_result(None)


class _UpstreamEnd(asyncio.Protocol):
    """The function's connection once it switched protocols."""

    __slots__ = ("_tunnel",)

    def __init__(self, tunnel: _Tunnel) -> None:
        self._tunnel = tunnel

    def data_received(self, data: bytes) -> None:
        self._tunnel.from_upstream(data)

    def eof_received(self) -> bool:
        self._tunnel.upstream_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.close()

    def pause_writing(self) -> None:
        self._tunnel.upstream_writable(False)

    def resume_writing(self) -> None:
        self._tunnel.upstream_writable(True)


class _ClientFeed:
    """Takes the client's bytes from aiohttp's server protocol (its payload parser's place)."""

    __slots__ = ("_tunnel",)

    def __init__(self, tunnel: _Tunnel) -> None:
        self._tunnel = tunnel

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._tunnel.from_client(data)
        return False, b""

    def feed_eof(self) -> None:
        self._tunnel.close()  # the client's connection was lost
