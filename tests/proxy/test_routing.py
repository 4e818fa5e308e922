"""The proxy is no open proxy: only known functions are reachable and no path escapes its route."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from yarl import URL

from autoscaler.proxy import Proxy
from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider


async def raw_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout=5)
    finally:
        writer.close()


async def test_an_unknown_function_gets_404_naming_it(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy()
    async with client.get(base(proxy) + "/function/ghost/x") as response:
        assert response.status == 404
        text = await response.text()
    assert "function ghost.openfaas-fn not found" in text
    assert "ghost.openfaas-fn" not in proxy.invocation_stats()


async def test_a_function_in_another_namespace_is_not_reachable_by_name_alone(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("echo", "team-a")
    proxy = await make_proxy()
    async with client.get(base(proxy) + "/function/echo/") as response:
        assert response.status == 404
    async with client.get(base(proxy) + "/function/echo.team-a/") as response:
        assert response.status == 200


@pytest.mark.parametrize("path", ["/", "/metrics", "/functions/echo", "/system/functions", "/functionecho"])
async def test_paths_outside_the_function_routes_get_404(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, path: str
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    async with client.get(base(proxy) + path) as response:
        assert response.status == 404
        assert "/function/NAME" in await response.text()


ESCAPES = [
    "/function/echo/../secret/",
    "/function/echo/%2e%2e/secret/",
    "/function/echo/%2E%2E%2Fsecret",
    "/function/echo%2fsecret",
    "/function/echo/..%2fsecret",
    "/function/../function/secret/",
    "/function/./secret/",
    "/function/echo/a/./b",
    "/function/echo\\..\\secret",
    "/function/ECHO/",
    "/function/echo.@evil.example/",
    "/function/echo.secret.ns/",
]


@pytest.mark.parametrize("target", ESCAPES)
async def test_path_escape_attempts_are_refused_and_reach_no_function(
    provider: FakeProvider, make_proxy: MakeProxy, target: str
) -> None:
    echo = await provider.add("echo")
    secret = await provider.add("secret")
    proxy = await make_proxy()
    reply = await raw_exchange(proxy.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status = int(reply.split(b" ", 2)[1])
    assert status in (400, 404), reply
    assert b"invalid" in reply or b"not found" in reply or b"no such" in reply
    for ref in (echo, secret):
        upstream = provider.upstream(ref)
        assert upstream is not None
        assert upstream.received == []


async def test_an_absolute_form_target_cannot_make_it_an_open_proxy(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    echo = await provider.add("echo")
    proxy = await make_proxy()
    for target in (f"http://127.0.0.1:{proxy.port}/function/echo/", "http://evil.example/"):
        reply = await raw_exchange(
            proxy.port, f"GET {target} HTTP/1.1\r\nHost: evil.example\r\n\r\n".encode()
        )
        assert reply.startswith(b"HTTP/1.1 404"), reply
    reply = await raw_exchange(
        proxy.port, b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 405"), reply  # CONNECT is refused before any routing
    upstream = provider.upstream(echo)
    assert upstream is not None
    assert upstream.received == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /function/echo/ HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET /function/echo/ HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /function/echo/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /function/echo/" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
    ],
)
async def test_malformed_http_gets_400_and_never_reaches_the_function(
    provider: FakeProvider, make_proxy: MakeProxy, request_bytes: bytes
) -> None:
    echo = await provider.add("echo")
    proxy = await make_proxy()
    reply = await raw_exchange(proxy.port, request_bytes)
    assert reply.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400", b"HTTP/1.1 414")), reply
    upstream = provider.upstream(echo)
    assert upstream is not None
    assert upstream.received == []


async def test_the_proxy_keeps_serving_after_malformed_requests(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("echo")
    proxy: Proxy = await make_proxy()
    for _ in range(3):
        await raw_exchange(proxy.port, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
    async with client.get(URL(base(proxy) + "/function/echo/ok")) as response:
        assert response.status == 200
