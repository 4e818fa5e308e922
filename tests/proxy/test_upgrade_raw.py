"""Upgraded connections in bytes: half-closes, the 101 head the client gets, and pass-through.

The function here is a raw asyncio server that switches to `Upgrade: websocket` (a plain byte stream):
it echoes what it reads, and after the client's half-close it sends one last line and closes, so a
tunnel that cut both directions at the first EOF would lose that line.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider
from tests.support.waiting import until

SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


async def _tcp_function(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    if b"upgrade: websocket" not in head.lower():
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    else:
        writer.write(SWITCH + b"welcome\n")
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write(b"bye after your half-close\n")
    await writer.drain()
    writer.close()


def _stop_reading(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()


@pytest.fixture
async def tcp_function() -> AsyncIterator[str]:
    server = await asyncio.start_server(_tcp_function, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


def _half_closing_call(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n".encode()
        )
        got = b""
        while b"welcome\n" not in got:
            chunk = sock.recv(65536)
            assert chunk, f"closed before the switch: {got!r}"
            got += chunk
        sock.sendall(b"one\n")
        sock.sendall(b"two\n")
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            got += chunk
        return got


async def test_a_half_close_from_the_client_reaches_the_function_and_its_last_words_still_come_back(
    provider: FakeProvider, make_proxy: MakeProxy, tcp_function: str
) -> None:
    ref = await provider.add("pipe", url=tcp_function)
    proxy = await make_proxy()
    got = await asyncio.to_thread(_half_closing_call, proxy.port, "/function/pipe/")
    head, _, rest = got.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "http/1.1 101 switching protocols"
    assert "connection: upgrade" in lines
    assert "upgrade: websocket" in lines
    assert not any(line.startswith(("content-length", "transfer-encoding")) for line in lines)
    assert rest == b"welcome\none\ntwo\nbye after your half-close\n"
    await until(lambda: not proxy.busy(ref.key), within=5, what="the call to end")


async def test_a_client_that_reads_nothing_holds_the_function_back_instead_of_filling_the_proxy(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    offered = 256 * 1024 * 1024
    written = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCH)
        block = bytes(1024 * 1024)
        try:
            while written < offered:
                writer.write(block)
                await writer.drain()  # blocks while the proxy stops reading
                written += len(block)
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(flood, "127.0.0.1", 0)
    try:
        ref = await provider.add("flood", url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        proxy = await make_proxy()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, limit=1024)
        writer.write(
            b"GET /function/flood/ HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 101 ")
        _stop_reading(writer)  # the client reads nothing more
        seen = -1
        for _ in range(100):  # until the function's writes stall (or it wrote everything)
            if written in (seen, offered):
                break
            seen = written
            await asyncio.sleep(0.3)
        assert written < 64 * 1024 * 1024, f"the function wrote {written} bytes to a client reading none"
        assert proxy.busy(ref.key)  # held back, not cut
        writer.close()
    finally:
        server.close()


async def test_a_function_that_reads_nothing_holds_the_client_back_instead_of_filling_the_proxy(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        _stop_reading(writer)  # the function reads nothing more
        writer.write(SWITCH)
        await asyncio.sleep(30)

    server = await asyncio.start_server(deaf, "127.0.0.1", 0, limit=1024)
    try:
        ref = await provider.add("deaf", url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        proxy = await make_proxy()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"GET /function/deaf/ HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 101 ")
        sent = 0
        block = bytes(1024 * 1024)

        async def send() -> None:
            nonlocal sent
            while True:
                writer.write(block)
                await writer.drain()  # blocks while the proxy stops reading
                sent += len(block)

        sender = asyncio.create_task(send())
        seen = -1
        for _ in range(100):  # until the client's writes stall
            if sent == seen:
                break
            seen = sent
            await asyncio.sleep(0.3)
        assert not sender.done()  # held back, not cut
        assert proxy.busy(ref.key)
        sender.cancel()
        writer.transport.abort()
        assert sent < 64 * 1024 * 1024, f"the client sent {sent} bytes to a function reading none"
    finally:
        server.close()


async def test_an_upgrade_the_proxy_cannot_relay_reaches_the_function_without_its_upgrade_headers(
    provider: FakeProvider, make_proxy: MakeProxy, tcp_function: str
) -> None:
    await provider.add("pipe", url=tcp_function)
    proxy = await make_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    # h2c: aiohttp's server would go on parsing the client's bytes as HTTP after a switch to it.
    writer.write(b"GET /function/pipe/ HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n")
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ")  # the function saw no Upgrade: it did not switch


async def test_a_101_to_a_request_that_asked_for_no_upgrade_is_a_502(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    async def switch_anyway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCH)
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    server = await asyncio.start_server(switch_anyway, "127.0.0.1", 0)
    try:
        await provider.add("rogue", url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        proxy = await make_proxy()
        async with client.get(base(proxy) + "/function/rogue/") as response:
            assert response.status == 502
    finally:
        server.close()


async def test_a_websocket_passed_through_to_the_provider_is_spliced_like_a_function_call(
    make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    async def logs(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"provider: {message.data}")
        return ws

    app = web.Application()
    app.router.add_get("/system/stream", logs)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        proxy = await make_proxy(provider_url=f"http://127.0.0.1:{runner.addresses[0][1]}")
        async with client.ws_connect(base(proxy) + "/system/stream") as ws:
            await ws.send_str("tail")
            assert (await ws.receive_str(timeout=5)) == "provider: tail"
    finally:
        await runner.cleanup()
