"""A connection the replica never accepted does not keep a request: it is reset and the request moves on.

When a listener's accept queue is full, Linux drops the packet that would have moved a handshake into
it: the client sees an open connection, sends its request, and the server has nothing to read it
from. The listener here (a raw socket on 127.0.0.1 with a backlog of 0 and TCP_DEFER_ACCEPT, which
keeps a handshake half-open until its first data) stages that exactly: the pool holds a connection
dialled ahead of need, a filler connection takes the only place in the accept queue, and the pool's
request on its connection is never acknowledged. The pool must notice (TCP_INFO), reset that
connection so that the request can never arrive later, and send the request on another connection
once the replica accepts again: it reaches the replica once, never on the unaccepted connection.

And a request is not tied to its own dial: with the accept queue full its dial is stuck in SYN
retries, yet it goes out on a kept-alive connection as soon as that one is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import aiohttp
import pytest

from autoscaler.proxy._pool import INITIAL_WINDOW, Pool
from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider
from tests.support.waiting import until

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="Linux only")


class HalfOpenListener:
    """A listener whose handshakes stay half-open until data comes, accepting only when told to."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 30)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.requests: list[tuple[int, bytes]] = []  # (peer port, request line) in arrival order
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queued(self) -> int:
        """Connections in the accept queue (TCP_INFO of a listener: tcpi_unacked)."""
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
        return int(struct.unpack_from("I", info, 24)[0])

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, peer = await loop.sock_accept(self.sock)
            task = loop.create_task(self._answer(conn, int(peer[1])))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, conn: socket.socket, peer: int) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await loop.sock_recv(conn, 4096)
                if not chunk:
                    return
                data += chunk
            self.requests.append((peer, data.split(b"\r\n", 1)[0]))
            body = str(peer).encode()
            head = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
            await loop.sock_sendall(conn, head + body)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.sock.close()


@pytest.fixture
async def listener() -> AsyncIterator[HalfOpenListener]:
    server = HalfOpenListener()
    yield server
    server.close()


async def test_a_request_on_a_connection_the_replica_never_accepted_moves_and_arrives_once(
    listener: HalfOpenListener,
) -> None:
    pool = Pool(limit_per_origin=4, connect_timeout=5.0, idle_timeout=15.0, accept_check=0.02)
    filler: socket.socket | None = None
    serving: asyncio.Task[None] | None = None
    try:
        # A dial whose request gave up: it completes with nobody waiting and goes to the idle pool.
        gave_up = asyncio.ensure_future(
            pool.request(endpoint=listener.url, method="POST", path="/gone", headers=[], body=b"0")
        )
        await asyncio.sleep(0)
        gave_up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gave_up
        origin = pool._origins[listener.url]
        await until(lambda: len(origin.idle) == 1, within=2, what="the dial nobody waited for to go idle")
        unaccepted = origin.idle[0]
        assert unaccepted.transport is not None
        unaccepted_port = int(unaccepted.transport.get_extra_info("sockname")[1])

        filler = socket.create_connection(("127.0.0.1", listener.port))
        filler.send(b"x")  # the filler takes the only place in the accept queue
        await until(lambda: listener.queued() == 1, within=2, what="the filler to be queued")

        call = asyncio.ensure_future(
            pool.request(endpoint=listener.url, method="POST", path="/moved", headers=[], body=b"pay")
        )
        await until(lambda: unaccepted.closed, within=2, what="the unaccepted connection to be reset")
        serving = asyncio.ensure_future(listener.serve())  # the replica accepts again
        async with asyncio.timeout(5):
            conn = await call
            answered_by = int(await conn.read_all())
        pool.release(conn)
        moved = [peer for peer, line in listener.requests if line == b"POST /moved HTTP/1.1"]
        assert moved == [answered_by]
        assert unaccepted_port not in [peer for peer, _ in listener.requests]
    finally:
        if filler is not None:
            filler.close()
        if serving is not None:
            serving.cancel()
        pool.close()


async def test_a_waiting_request_takes_a_kept_alive_connection_that_frees_while_its_dial_is_stuck() -> None:
    loop = asyncio.get_running_loop()
    plain = socket.socket()  # no deferred accept here: a full queue drops new handshakes outright
    plain.bind(("127.0.0.1", 0))
    plain.listen(0)
    plain.setblocking(False)
    url = f"http://127.0.0.1:{plain.getsockname()[1]}"
    pool = Pool(limit_per_origin=4, connect_timeout=5.0, idle_timeout=15.0)
    filler: socket.socket | None = None
    try:
        first = asyncio.ensure_future(
            pool.request(endpoint=url, method="GET", path="/1", headers=[], body=None)
        )
        kept, _ = await loop.sock_accept(plain)
        kept.setblocking(False)
        assert (await loop.sock_recv(kept, 4096)).startswith(b"GET /1 ")
        filler = socket.create_connection(plain.getsockname())  # takes the only place in the queue
        second = asyncio.ensure_future(
            pool.request(endpoint=url, method="GET", path="/2", headers=[], body=None)
        )
        await until(lambda: pool._origins[url].dialing == 1, within=2, what="a dial for the second request")
        await loop.sock_sendall(kept, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
        conn = await first
        assert await conn.read_all() == b"one"
        pool.release(conn)  # the kept-alive connection is free before the stuck dial gets through
        async with asyncio.timeout(2):
            assert (await loop.sock_recv(kept, 4096)).startswith(b"GET /2 ")
        await loop.sock_sendall(kept, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
        async with asyncio.timeout(2):
            conn = await second
            assert await conn.read_all() == b"two"
        pool.release(conn)
        kept.close()
    finally:
        if filler is not None:
            filler.close()
        pool.close()
        plain.close()


async def test_a_slow_answer_on_a_fresh_connection_is_not_mistaken_for_an_unaccepted_one(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("slow")
    proxy = await make_proxy()
    async with client.post(base(proxy) + "/function/slow/slow?seconds=0.5", data=b"once") as response:
        assert response.status == 200
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert [seen.body for seen in upstream.received] == [b"once"]  # past the 0.1 s check, never resent


async def test_a_burst_opens_a_few_connections_first_and_more_as_they_answer() -> None:
    events: list[str] = []  # "accept" and "answer" in the order the replica did them

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        events.append("accept")
        with contextlib.suppress(ConnectionError):
            while await reader.readuntil(b"\r\n\r\n"):
                await asyncio.sleep(0.05)  # a function that takes a moment
                events.append("answer")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    pool = Pool(limit_per_origin=100, connect_timeout=5.0, idle_timeout=15.0, accept_check=5.0)

    async def call(index: int) -> bytes:
        conn = await pool.request(endpoint=url, method="GET", path=f"/{index}", headers=[], body=None)
        try:
            return await conn.read_all()
        finally:
            pool.release(conn)

    try:
        async with asyncio.timeout(10):
            assert await asyncio.gather(*(call(index) for index in range(40))) == [b"ok"] * 40
        before_first_answer = events[: events.index("answer")].count("accept")
        assert before_first_answer == INITIAL_WINDOW  # not 40 handshakes into the accept queue at once
        assert 4 < events.count("accept") <= 40  # and more once they proved themselves
    finally:
        pool.close()
        server.close()
        await server.wait_closed()
