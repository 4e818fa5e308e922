"""The proxy's HTTP/1.1 upstream client reads every framing a replica may send and reuses only sound links.

The replicas here are raw asyncio TCP servers that answer with hand-written bytes (often one byte at a
time), so each case of the response parser and of the keep-alive pools is reached exactly: the three
body framings, interim and switching responses, malformed heads, cut bodies, stale kept-alive
connections and the per-origin connection limit. Each server counts the connections it accepts and
notices when the proxy closes one, which is how reuse (or its refusal) is proven.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from autoscaler.config import ProxySettings
from autoscaler.proxy._http1 import head_end
from autoscaler.proxy._pool import Pool
from autoscaler.tasks import Background
from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider
from tests.support.virtual_time import virtual_loop


@dataclass
class Seen:
    """One request as the raw server read it, with the index of the connection it came on."""

    conn: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


# Answers one request by writing to the connection; returns whether to keep reading from it.
Answer = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 that reads HTTP/1.1 requests and answers them through `answer`."""

    answer: Answer
    accepted: int = 0
    requests: list[Seen] = field(default_factory=list)
    ended: set[int] = field(default_factory=set)  # connections the proxy closed
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _ending: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def closed_by_proxy(self, conn: int, *, within: float = 2.0) -> None:
        async with asyncio.timeout(within), self._ending:
            await self._ending.wait_for(lambda: conn in self.ended)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = self.accepted
        self.accepted += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in head[1:] if line)
                body = await reader.readexactly(int(headers.get("Content-Length", "0")))
                seen = Seen(conn=index, method=method, target=target, headers=headers, body=body)
                self.requests.append(seen)
                if not await self.answer(seen, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            async with self._ending:
                self.ended.add(index)
                self._ending.notify_all()
        finally:
            writer.close()
            self._tasks.discard(task)


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write `data` one byte at a time, letting the reader see each byte on its own."""
    for index in range(len(data)):
        writer.write(data[index : index + 1])
        await writer.drain()
        await asyncio.sleep(0.0005)


def reply(data: bytes, *, keep: bool = True, byte_by_byte: bool = False) -> Answer:
    """Answer every request with `data`; keep the connection open afterwards unless told not to."""

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if byte_by_byte:
            await trickle(writer, data)
        else:
            writer.write(data)
            await writer.drain()
        return keep

    return answer


RawFactory = Callable[[Answer], Awaitable[RawServer]]


@pytest.fixture
async def raw() -> AsyncIterator[RawFactory]:
    servers: list[RawServer] = []

    async def make(answer: Answer) -> RawServer:
        server = RawServer(answer)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def via(
    provider: FakeProvider, make_proxy: MakeProxy, raw: RawFactory
) -> Callable[[Answer], Awaitable[tuple[RawServer, str]]]:
    """A raw server behind a started proxy as function `raw`; gives the server and the function's URL."""

    async def make(answer: Answer) -> tuple[RawServer, str]:
        server = await raw(answer)
        await provider.add("raw", url=server.url)
        proxy = await make_proxy(upstream_timeout=3.0)  # a parser that waits for nothing fails fast
        return server, base(proxy) + "/function/raw"

    return make


Via = Callable[[Answer], Awaitable[tuple[RawServer, str]]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def get(
    client: aiohttp.ClientSession, url: str, method: str = "GET", **kw: object
) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with client.request(method, url, timeout=timeout, **kw) as response:  # type: ignore[arg-type]
        return response.status, await response.read()


# -- body framings ---------------------------------------------------------------------------------


async def test_a_content_length_body_sent_byte_by_byte_arrives_whole_with_its_headers(
    via: Via, client: aiohttp.ClientSession
) -> None:
    raw = b"HTTP/1.1 201 Made\r\nContent-Length: 11\r\nX-Custom: a b\r\n\r\nhello world"
    server, url = await via(reply(raw, byte_by_byte=True))
    async with client.get(url + "/x?q=1") as response:
        assert (response.status, response.reason) == (201, "Made")
        assert response.headers["X-Custom"] == "a b"
        assert await response.read() == b"hello world"
    assert server.requests[0].target == "/x?q=1"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\nContent-Length: 3\nX-Custom: lf\n\nlf\n",  # every line ends with a bare LF
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Custom: lf\n\r\nlf\n",  # CRLF and LF mixed
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Custom: lf\r\n\nlf\n",  # a bare LF blank line
    ],
)
@pytest.mark.parametrize("byte_by_byte", [False, True])
async def test_a_head_whose_lines_end_with_a_bare_lf_is_read_as_go_reads_it(
    via: Via, client: aiohttp.ClientSession, head: bytes, byte_by_byte: bool
) -> None:
    """RFC 9112 2.2 lets a recipient take a bare LF for a line end, and the OpenFaaS gateway does; the
    proxy used to wait for a CRLF blank line until its upstream timeout, then answer 504."""
    server, url = await via(reply(head, byte_by_byte=byte_by_byte))
    async with client.get(url) as response:
        assert response.status == 200
        assert response.headers["X-Custom"] == "lf"
        assert await response.read() == b"lf\n"
    assert await get(client, url) == (200, b"lf\n")
    assert server.accepted == 1  # framed by its Content-Length: the link was reused


def test_a_bare_lf_in_a_crlf_body_does_not_end_the_head_early() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\na\n\nb"
    assert head_end(data) == (data.index(b"\r\n\r\n"), data.index(b"a\n"))
    assert head_end(b"HTTP/1.1 200 OK\r\nContent-Len") == (-1, -1)


async def test_a_large_content_length_body_is_streamed_to_the_client_intact(
    via: Via, client: aiohttp.ClientSession
) -> None:
    body = bytes(range(256)) * 1024  # 256 KiB: above the size read whole
    _, url = await via(reply(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body))
    assert await get(client, url) == (200, body)


async def test_a_chunked_body_one_byte_at_a_time_with_extensions_and_trailers_arrives_and_keeps_the_link(
    via: Via, client: aiohttp.ClientSession
) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"5;name=value\r\nhello\r\nA;x\r\n, chunked!\r\n0;last\r\nX-Sum: 15\r\nX-More: y\r\n\r\n"
    )
    server, url = await via(reply(raw, byte_by_byte=True))
    assert await get(client, url) == (200, b"hello, chunked!")
    assert await get(client, url) == (200, b"hello, chunked!")
    assert server.accepted == 1  # the trailers were read to their end: the connection was reusable


@pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/1.1"])
async def test_a_response_without_framing_lasts_until_the_connection_closes(
    via: Via, client: aiohttp.ClientSession, version: bytes
) -> None:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await trickle(writer, version + b" 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await asyncio.sleep(0.05)
        await trickle(writer, b"the end")
        return False  # closing is what ends the body

    server, url = await via(answer)
    assert await get(client, url) == (200, b"until the end")
    assert await get(client, url) == (200, b"until the end")
    assert server.accepted == 2


@pytest.mark.parametrize("coding", [b"gzip", b"gzip, chunked", b"chunked\r\nTransfer-Encoding: chunked"])
async def test_a_transfer_coding_other_than_chunked_alone_is_a_502_naming_it_not_a_body_relayed_as_plain(
    via: Via, client: aiohttp.ClientSession, coding: bytes
) -> None:
    # Before, "gzip" was read to EOF and relayed chunked with the coding dropped: the client got
    # gzip bytes as if they were the body. The gateway's Go client refuses all three.
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    _, url = await via(reply(raw, keep=False))
    status, body = await get(client, url)
    assert status == 502
    assert b"Transfer-Encoding" in body
    assert b"hello" not in body


# -- keep-alive and Connection ---------------------------------------------------------------------


async def test_sequential_requests_share_one_kept_alive_connection(
    via: Via, client: aiohttp.ClientSession
) -> None:
    server, url = await via(reply(OK))
    for _ in range(3):
        assert await get(client, url) == (200, b"ok")
    assert server.accepted == 1
    assert [seen.conn for seen in server.requests] == [0, 0, 0]


async def test_an_http_1_0_reply_is_reused_only_when_it_asks_for_keep_alive(
    via: Via, client: aiohttp.ClientSession
) -> None:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        extra = b"Connection: keep-alive\r\n" if seen.target == "/keep" else b""
        writer.write(b"HTTP/1.0 200 OK\r\n" + extra + b"Content-Length: 2\r\n\r\nok")
        return True  # the server would serve more: only the proxy decides

    server, url = await via(answer)
    for path in ("/keep", "/keep", "/plain", "/keep"):
        assert await get(client, url + path) == (200, b"ok")
    assert [seen.conn for seen in server.requests] == [0, 0, 0, 1]
    await server.closed_by_proxy(0)


async def test_connection_close_means_the_connection_is_never_reused(
    via: Via, client: aiohttp.ClientSession
) -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    server, url = await via(reply(raw))  # the server itself would keep the connection open
    assert await get(client, url) == (200, b"ok")
    assert await get(client, url) == (200, b"ok")
    assert server.accepted == 2
    await server.closed_by_proxy(0)


async def test_hop_by_hop_headers_and_those_named_in_connection_do_not_reach_the_client(
    via: Via, client: aiohttp.ClientSession
) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nconnection: x-other\r\n"
        b"X-Secret: s\r\nX-Other: o\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n"
        b"Upgrade: h2c\r\nTrailer: X-Sum\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok"
    )
    server, url = await via(reply(raw))
    async with client.get(url) as response:
        assert await response.read() == b"ok"
        names = {name.lower() for name in response.headers}
        assert response.headers["X-Kept"] == "yes"
    assert not names & {"x-secret", "x-other", "keep-alive", "proxy-authenticate", "upgrade", "trailer"}
    assert await get(client, url) == (200, b"ok")
    assert server.accepted == 1  # "keep-alive" in Connection kept the link


@pytest.mark.parametrize(
    ("response", "later"),
    [
        (OK + b"HTTP/1.1 200 OK\r\n", b""),  # more than the Content-Length announced
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"",
        ),
        (OK, b"HTTP/1.1 200 OK\r\n"),  # bytes nobody asked for while the connection idles
    ],
    ids=["beyond-length", "both-framings", "while-idle"],
)
async def test_a_connection_whose_framing_cannot_be_trusted_is_not_reused(
    via: Via, client: aiohttp.ClientSession, response: bytes, later: bytes
) -> None:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(response)
        if later and seen.conn == 0:
            await asyncio.sleep(0.05)
            writer.write(later)
        return True

    server, url = await via(answer)
    assert await get(client, url) == (200, b"ok")
    await server.closed_by_proxy(0)
    server.answer = reply(OK)
    assert await get(client, url) == (200, b"ok")
    assert server.accepted == 2


# -- responses without a body, interim and switching responses -------------------------------------


async def test_a_head_response_announces_a_length_but_has_no_body_and_its_link_is_not_reused(
    via: Via, client: aiohttp.ClientSession
) -> None:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.method == "HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Head: h\r\n\r\n")
        else:
            writer.write(OK)
        return True

    server, url = await via(answer)
    async with client.head(url) as response:
        assert response.status == 200
        assert response.headers["X-Head"] == "h"
        assert response.headers["Content-Length"] == "1234"
    assert await get(client, url) == (200, b"ok")  # not taken for the HEAD's body
    assert server.accepted == 2  # a body the server might still send would be taken for the next answer


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_is_read_after_a_204_or_304_even_with_a_length(
    via: Via, client: aiohttp.ClientSession, status: int
) -> None:
    server, url = await via(reply(b"HTTP/1.1 %d Nothing\r\nContent-Length: 7\r\n\r\n" % status + OK))
    assert await get(client, url) == (status, b"")
    server.answer = reply(OK)
    assert await get(client, url) == (200, b"ok")
    # The 200 sent right after the bodiless answer counts as bytes nobody asked for: never reused.
    assert server.accepted == 2


async def test_interim_100_and_103_responses_are_skipped_for_the_final_one(
    via: Via, client: aiohttp.ClientSession
) -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: 1\r\n\r\nfinal"
    )
    server, url = await via(reply(raw, byte_by_byte=True))
    async with client.post(url, data=b"payload") as response:
        assert response.status == 200
        assert response.headers["X-Final"] == "1"
        assert "Link" not in response.headers
        assert await response.read() == b"final"
    assert server.requests[0].body == b"payload"
    assert await get(client, url) == (200, b"final")
    assert server.accepted == 2  # after an interim response other than 100 the link is not reused


async def test_switching_protocols_gives_502_saying_so_and_the_link_is_dropped(
    via: Via, client: aiohttp.ClientSession
) -> None:
    server, url = await via(reply(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"))
    status, body = await get(client, url)
    assert status == 502
    assert b"switched protocols, which the proxy does not relay" in body
    await server.closed_by_proxy(0)


# -- malformed and cut responses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok", b"invalid status line 'HTTP/1.1 2OO OK'"),
        (b"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nok", b"invalid status line"),
        (b"ICY 200 OK\r\n\r\nok", b"invalid status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok", b"invalid Content-Length '2x'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok", b"invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", b"invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok", b"invalid header line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n", b"invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokay\r\n0\r\n\r\n", b"longer than its"),
    ],
    ids=["status-code", "version", "protocol", "length-text", "length-negative", "length-conflict",
         "header-name", "chunk-size", "chunk-overrun"],
)  # fmt: skip
async def test_a_malformed_response_gives_502_saying_what_was_wrong_and_the_link_is_dropped(
    via: Via, client: aiohttp.ClientSession, response: bytes, message: bytes
) -> None:
    server, url = await via(reply(response))  # the whole response in one write: known before any relaying
    status, body = await get(client, url)
    assert status == 502, body
    assert b"function raw.openfaas-fn failed before answering" in body
    assert message in body
    await server.closed_by_proxy(0)
    server.answer = reply(OK)
    assert await get(client, url) == (200, b"ok")
    assert server.accepted == 2


async def test_a_small_body_cut_short_gives_502(via: Via, client: aiohttp.ClientSession) -> None:
    _, url = await via(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part", keep=False))
    status, body = await get(client, url)
    assert status == 502
    assert b"broke off its response" in body


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_streamed_body_cut_short_reaches_the_client_as_a_cut_response(
    via: Via, client: aiohttp.ClientSession, framing: str
) -> None:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if framing == "length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500000\r\n\r\n")
            await asyncio.sleep(0.05)
            writer.write(b"x" * 1000)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            await asyncio.sleep(0.05)
            writer.write(b"5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        return False

    _, url = await via(answer)
    async with client.get(url) as response:
        assert response.status == 200  # already on its way when the function broke off
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


# -- stale kept-alive connections ------------------------------------------------------------------


def close_on_second_request(seen: Seen, served: set[int]) -> bool:
    """Whether to close `seen`'s connection unanswered: a replica that dropped an idle keep-alive link."""
    if seen.conn in served:
        return True
    served.add(seen.conn)
    return False


def drops_kept_links() -> Answer:
    """A replica that answers the first request on each connection and closes it at the second."""
    served: set[int] = set()

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if close_on_second_request(seen, served):
            return False
        writer.write(OK)
        return True

    return answer


async def test_a_get_on_a_connection_the_replica_just_closed_is_sent_again_once(
    via: Via, client: aiohttp.ClientSession
) -> None:
    server, url = await via(drops_kept_links())
    assert await get(client, url) == (200, b"ok")
    assert await get(client, url + "/again") == (200, b"ok")
    assert [(seen.conn, seen.target) for seen in server.requests] == [(0, "/"), (0, "/again"), (1, "/again")]


async def test_a_post_on_a_connection_the_replica_just_closed_is_not_sent_again(
    via: Via, client: aiohttp.ClientSession
) -> None:
    server, url = await via(drops_kept_links())
    assert await get(client, url) == (200, b"ok")
    status, body = await get(client, url + "/once", method="POST", data=b"pay")
    assert status == 502
    assert b"the kept-alive connection was closed" in body
    assert [(seen.conn, seen.method) for seen in server.requests] == [(0, "GET"), (0, "POST")]
    assert server.accepted == 1


async def test_a_get_is_sent_again_only_once_even_when_the_next_kept_link_is_stale_too(
    raw: RawFactory,
) -> None:
    served: set[int] = set()
    both_in = asyncio.Event()

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if close_on_second_request(seen, served):
            return False
        if len(served) == 2:
            both_in.set()
        await both_in.wait()  # hold the first answers so that two connections get opened
        writer.write(OK)
        return True

    server = await raw(answer)
    pool = Pool(limit_per_origin=4, connect_timeout=1.0, idle_timeout=15.0)
    try:
        await asyncio.gather(call(pool, server.url, "/a"), call(pool, server.url, "/b"))
        assert server.accepted == 2
        with pytest.raises(Exception, match="the kept-alive connection was closed"):
            await call(pool, server.url, "/c")
        assert [seen.target for seen in server.requests[2:]] == ["/c", "/c"]
        assert server.accepted == 2  # no third attempt on a fresh connection
    finally:
        pool.close()


# -- the connection limit --------------------------------------------------------------------------


async def call(pool: Pool, endpoint: str, path: str) -> bytes:
    conn = await pool.request(endpoint=endpoint, method="GET", path=path, headers=[], body=None)
    try:
        return await conn.read_all()
    finally:
        pool.release(conn)


async def test_requests_beyond_the_connection_limit_wait_and_are_sent_first_in_first_out(
    raw: RawFactory,
) -> None:
    gate = asyncio.Event()

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/0":
            await gate.wait()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(seen.target), seen.target.encode())
        )
        return True

    server = await raw(answer)
    pool = Pool(limit_per_origin=2, connect_timeout=1.0, idle_timeout=15.0)
    try:
        first = asyncio.create_task(call(pool, server.url, "/0"))
        second = asyncio.create_task(call(pool, server.url, "/1"))
        assert await second == b"/1"  # the second slot is free
        queued = []
        for index in range(2, 8):
            queued.append(asyncio.create_task(call(pool, server.url, f"/{index}")))
            await asyncio.sleep(0)
        # One slot is taken by /0 until it ends; the other serves the queue in order.
        bodies = await asyncio.gather(*queued)
        assert bodies == [f"/{index}".encode() for index in range(2, 8)]
        assert not first.done()
        gate.set()
        assert await first == b"/0"
        assert server.accepted == 2
        assert [seen.target for seen in server.requests] == [f"/{index}" for index in range(8)]
    finally:
        pool.close()


async def test_with_one_connection_allowed_waiters_are_served_in_arrival_order(raw: RawFactory) -> None:
    gate = asyncio.Event()

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/0":
            await gate.wait()
        writer.write(OK)
        return True

    server = await raw(answer)
    pool = Pool(limit_per_origin=1, connect_timeout=1.0, idle_timeout=15.0)
    try:
        tasks = []
        for index in range(6):
            tasks.append(asyncio.create_task(call(pool, server.url, f"/{index}")))
            await asyncio.sleep(0.01)
        assert [seen.target for seen in server.requests] == ["/0"]  # the rest wait for the one slot
        gate.set()
        assert await asyncio.gather(*tasks) == [b"ok"] * 6
        assert [seen.target for seen in server.requests] == [f"/{index}" for index in range(6)]
        assert server.accepted == 1
    finally:
        pool.close()


@pytest.mark.virtual_time
async def test_an_idle_kept_alive_connection_is_closed_at_the_shipped_idle_timeout_and_its_origin_forgotten(
    raw: RawFactory,
) -> None:
    idle_timeout = ProxySettings().upstream_idle_timeout  # 15 s, swept every third of it
    server = await raw(reply(OK))
    pool = Pool(limit_per_origin=2, connect_timeout=1.0, idle_timeout=idle_timeout)
    background = Background()
    pool.start(background)
    loop = virtual_loop()
    try:
        assert await call(pool, server.url, "/a") == b"ok"
        assert await call(pool, server.url, "/b") == b"ok"
        last_used = loop.time()
        assert server.accepted == 1  # kept alive between the two
        await server.closed_by_proxy(0, within=2 * idle_timeout)  # the sweep closes it once idle
        idle = loop.time() - last_used
        assert idle_timeout <= idle <= idle_timeout * 4 / 3, idle  # not before, one sweep late at most
        assert server.url not in pool._origins  # nothing left there: the origin is forgotten
        assert await call(pool, server.url, "/c") == b"ok"  # and a later request opens a new one
        assert server.accepted == 2
    finally:
        pool.close()
        await background.close()


def test_a_pool_refuses_an_idle_timeout_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="idle_timeout must be > 0"):
        Pool(limit_per_origin=1, connect_timeout=1.0, idle_timeout=0.0)
