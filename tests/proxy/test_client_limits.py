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


def head(path: str, *extra: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: proxy", *extra]) + "\r\n\r\n").encode()


async def test_a_client_that_connects_and_sends_nothing_is_closed_after_the_header_timeout(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy(header_timeout=0.5)
    reader, writer = await connect(proxy.port)
    waited, data = await closed_after(reader, within=3)
    assert (data, 0.4 < waited < 2.5) == (b"", True)
    writer.close()


async def test_a_client_that_sends_part_of_a_head_gets_408_and_is_closed(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy(header_timeout=0.5)
    reader, writer = await connect(proxy.port)
    writer.write(b"GET /function/echo/ HTTP/1.1\r\nHost: proxy\r\n")
    waited, data = await closed_after(reader, within=3)
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"not complete within 0.5 s" in data
    assert waited < 2.5
    writer.close()


async def test_a_head_trickled_a_line_at_a_time_is_cut_at_the_header_timeout_all_the_same(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy(header_timeout=0.6)
    reader, writer = await connect(proxy.port)
    writer.write(b"GET /function/echo/ HTTP/1.1\r\n")

    async def trickle() -> None:
        for index in range(40):
            await asyncio.sleep(0.1)
            writer.write(f"X-Line-{index}: slow\r\n".encode())

    dripping = asyncio.create_task(trickle())
    waited, data = await closed_after(reader, within=3)
    dripping.cancel()
    assert data.startswith(b"HTTP/1.1 408 ")
    assert waited < 2.5
    writer.close()


async def test_an_idle_kept_alive_connection_outlives_the_header_timeout_and_closes_at_the_keepalive_timeout(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy(header_timeout=0.3, keepalive_timeout=1.5)
    reader, writer = await connect(proxy.port)
    for _ in range(2):
        writer.write(head("/function/echo/"))
        status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 200 ")
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        await asyncio.sleep(0.8)  # idle longer than the header timeout, shorter than keep-alive
    waited, data = await closed_after(reader, within=4)
    assert (data, waited < 3) == (b"", True)
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


async def test_a_client_that_never_reads_a_large_response_is_cut_and_frees_the_functions_connection(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy(send_timeout=0.5, upstream_connections=1)
    reader, writer = await connect(proxy.port, rcvbuf=4096)
    writer.write(head("/function/echo/big?size=50000000"))  # 50 MB that it never reads
    upstream = provider.upstream(ref)
    assert upstream is not None
    while not upstream.received:  # noqa: ASYNC110 - the upstream records requests, it signals nothing
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(10), client.get(base(proxy) + "/function/echo/") as response:
        assert response.status == 200  # it had to wait for the function's only connection
    assert loop.time() - start < 4
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


async def test_an_answer_after_a_cold_start_says_how_long_the_request_was_held(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("cold", warm=False, ready_delay=0.3)
    await provider.add("warm")
    proxy = await make_proxy()
    async with client.get(base(proxy) + "/function/cold/") as response:
        assert response.status == 200
        held = float(response.headers["X-Autoscaler-Cold-Start"])
    assert 0.25 < held < 5
    async with client.get(base(proxy) + "/function/cold/") as response:  # warm now
        assert "X-Autoscaler-Cold-Start" not in response.headers
    async with client.get(base(proxy) + "/function/warm/") as response:
        assert "X-Autoscaler-Cold-Start" not in response.headers
