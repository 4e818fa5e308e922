"""Clients that send nothing, too much, or read nothing are cut like an edge proxy cuts them.

Each case talks to a real proxy over a raw socket, so the test controls every byte (and every byte
it does not send): silent connections, partial and trickled heads, heads over the size cap, idle
keep-alive connections, a client that never reads a large response, and malformed requests. The
last case is what a response says about the proxy's own part: how long a cold start held it.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest

from autoscaler.config import ProxySettings, build
from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider

SHIPPED = ProxySettings()  # the defaults: 10 s for a head, 75 s of keep-alive, 60 s to send


async def connect(
    port: int, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if rcvbuf is None:
        return await asyncio.open_connection("127.0.0.1", port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: a small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def closed_after(reader: asyncio.StreamReader, *, within: float) -> tuple[float, bytes]:
    """Seconds until the proxy closed the connection, and what it sent before closing."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(within):
        data = await reader.read()
    return loop.time() - start, data


def within_a_sweep(waited: float, timeout: float) -> bool:
    """Closed at the timeout, not before, and at most one sweep (a second) after it."""
    return timeout <= waited <= timeout + 1.0


def head(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: proxy", *extra]) + "\r\n\r\n").encode()


@pytest.mark.virtual_time
async def test_a_client_that_connects_and_sends_nothing_is_closed_at_the_shipped_header_timeout(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy()
    reader, writer = await connect(proxy.port)
    waited, data = await closed_after(reader, within=60)
    assert (data, within_a_sweep(waited, SHIPPED.header_timeout)) == (b"", True), waited
    writer.close()


@pytest.mark.virtual_time
async def test_a_client_that_sends_part_of_a_head_gets_408_at_the_header_timeout_and_is_closed(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    reader, writer = await connect(proxy.port)
    writer.write(b"GET /function/echo/ HTTP/1.1\r\nHost: proxy\r\n")
    waited, data = await closed_after(reader, within=60)
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert f"not complete within {SHIPPED.header_timeout:g} s".encode() in data
    assert within_a_sweep(waited, SHIPPED.header_timeout), waited
    writer.close()


@pytest.mark.virtual_time
async def test_a_head_trickled_a_line_a_second_is_cut_at_the_header_timeout_all_the_same(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    reader, writer = await connect(proxy.port)
    writer.write(b"GET /function/echo/ HTTP/1.1\r\n")

    async def trickle() -> None:
        for index in range(60):
            await asyncio.sleep(1.0)
            writer.write(f"X-Line-{index}: slow\r\n".encode())

    dripping = asyncio.create_task(trickle())
    waited, data = await closed_after(reader, within=60)
    dripping.cancel()
    assert data.startswith(b"HTTP/1.1 408 ")
    assert within_a_sweep(waited, SHIPPED.header_timeout), waited
    writer.close()


@pytest.mark.virtual_time
async def test_an_idle_kept_alive_connection_outlives_the_header_timeout_and_closes_at_the_keepalive_timeout(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    idle = SHIPPED.keepalive_timeout / 2
    assert SHIPPED.header_timeout < idle < SHIPPED.keepalive_timeout
    reader, writer = await connect(proxy.port)
    for _ in range(2):
        writer.write(head("/function/echo/"))
        status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 200 ")
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        await asyncio.sleep(idle)  # idle longer than the header timeout, shorter than keep-alive
    waited, data = await closed_after(reader, within=SHIPPED.keepalive_timeout)
    assert (data, idle + waited) == (b"", SHIPPED.keepalive_timeout)  # counted from the last answer
    writer.close()


async def test_a_head_over_the_size_cap_gets_431_and_the_connection_is_closed(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy(max_head_size=8192, header_timeout=30)
    reader, writer = await connect(proxy.port)
    writer.write(b"GET /function/echo/ HTTP/1.1\r\nHost: proxy\r\n")
    for index in range(100):  # 100 KB of header lines, each well under aiohttp's per-line limit
        writer.write(f"X-Filler-{index}: {'f' * 1000}\r\n".encode())
    _, data = await closed_after(reader, within=3)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"the limit is 8192 bytes" in data
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert upstream.received == []
    writer.close()


async def test_a_head_under_the_cap_with_a_large_body_is_served_whole(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("echo")
    proxy = await make_proxy(max_head_size=8192)
    headers = {f"X-Filler-{index}": "f" * 500 for index in range(12)}  # about 6 KB of head
    async with client.post(base(proxy) + "/function/echo/", data=b"b" * 200_000, headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["body_len"] == 200_000


@pytest.mark.virtual_time
async def test_a_client_that_reads_nothing_is_cut_at_the_send_timeout_and_frees_the_functions_connection(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy(upstream_connections=1)  # the shipped send timeout
    reader, writer = await connect(proxy.port, rcvbuf=4096)
    loop = asyncio.get_running_loop()
    start = loop.time()  # the answer starts and stalls at once: nothing reads it
    writer.write(head("/function/echo/big?size=50000000"))  # 50 MB that it never reads
    upstream = provider.upstream(ref)
    assert upstream is not None
    while not upstream.received:  # noqa: ASYNC110 - the upstream records requests, it signals nothing
        await asyncio.sleep(0.01)
    async with asyncio.timeout(2 * SHIPPED.send_timeout):
        async with client.get(base(proxy) + "/function/echo/") as response:
            assert response.status == 200  # it had to wait for the function's only connection
    waited = loop.time() - start
    assert within_a_sweep(waited, SHIPPED.send_timeout), waited
    writer.transport.abort()
    del reader


def test_each_client_limit_is_a_setting_with_an_edge_proxys_default_and_an_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = ("header_timeout", "keepalive_timeout", "max_head_size", "body_timeout", "send_timeout")
    defaults = ProxySettings()
    assert [getattr(defaults, name) for name in names] == [10.0, 75.0, 65536, 60.0, 60.0]
    for name, value in zip(names, ("3", "20", "16384", "30", "9"), strict=True):
        monkeypatch.setenv(f"AUTOSCALER_{name.upper()}", value)  # flags come from the same fields
    settings = build(ProxySettings, {})
    assert [getattr(settings, name) for name in names] == [3.0, 20.0, 16384, 30.0, 9.0]


async def test_a_malformed_request_gets_400_and_leaves_no_traceback_in_the_log(
    make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy()
    for _ in range(3):
        reader, writer = await connect(proxy.port)
        writer.write(b"GET /function/echo/ HTTP/1.1\r\nHost: proxy\r\nX-Long: " + b"l" * 9000 + b"\r\n\r\n")
        _, data = await closed_after(reader, within=3)
        assert data.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")
        writer.close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.virtual_time
async def test_an_answer_after_a_cold_start_says_how_long_the_request_was_held(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("cold", warm=False, ready_delay=2.5)
    await provider.add("warm")
    proxy = await make_proxy()
    async with client.get(base(proxy) + "/function/cold/") as response:
        assert response.status == 200
        held = float(response.headers["X-Autoscaler-Cold-Start"])
    assert held == 2.5  # the replica's start-up, to the millisecond: nothing else waited
    async with client.get(base(proxy) + "/function/cold/") as response:  # warm now
        assert "X-Autoscaler-Cold-Start" not in response.headers
    async with client.get(base(proxy) + "/function/warm/") as response:
        assert "X-Autoscaler-Cold-Start" not in response.headers
