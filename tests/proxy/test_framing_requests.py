"""What a client sends reaches the function as a reverse proxy should pass it, or is refused before routing.

The clients here write raw bytes on a socket, as a hostile or an old client does: header lines that
aiohttp's client would fold into one (two `Connection` lines, two `X-Forwarded-For` lines), forged
`X-Forwarded-Host` and `-Proto`, CONNECT and HTTP/0.9 request lines, and a curl-like upload that
waits for `100 Continue` before it sends its body. The function is the echo replica of
`tests.support.upstream`, which records every request exactly as it arrived.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from autoscaler.proxy import Proxy
from tests.proxy.conftest import MakeProxy
from tests.support.fakeprovider import FakeProvider
from tests.support.upstream import Upstream


async def exchange(proxy: Proxy, head: bytes, body: bytes = b"") -> tuple[bytes, bytes]:
    """Send `head` (and `body`), read until the proxy closes; return (status line, response body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(head + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    response_head, _, response_body = data.partition(b"\r\n\r\n")
    return response_head.split(b"\r\n", 1)[0], response_body


async def echoed(proxy: Proxy, header_lines: bytes) -> dict[str, Any]:
    """GET /function/echo/ with `header_lines` (each ending in CRLF); the function's JSON echo."""
    head = b"GET /function/echo/ HTTP/1.1\r\nHost: functions.example.com\r\n" + header_lines
    status, body = await exchange(proxy, head + b"Connection: close\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK", body
    result: dict[str, Any] = json.loads(body)
    return result


def seen(result: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in result["headers"] if key.lower() == name.lower()]


def replica(provider: FakeProvider, ref: Any) -> Upstream:
    upstream = provider.upstream(ref)
    assert upstream is not None
    return upstream


async def test_headers_named_in_any_connection_line_do_not_reach_the_function(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    result = await echoed(
        proxy, b"Connection: X-First\r\nConnection: X-Second, X-Third\r\n"
        b"X-First: 1\r\nX-Second: 2\r\nX-Third: 3\r\nX-Kept: 4\r\n",
    )  # fmt: skip
    for name in ("X-First", "X-Second", "X-Third", "Connection"):
        assert seen(result, name) == [], name
    assert seen(result, "X-Kept") == ["4"]


async def test_every_forwarded_for_line_is_kept_in_order_with_the_client_appended(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    result = await echoed(proxy, b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n")
    assert seen(result, "X-Forwarded-For") == ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]


async def test_a_forged_forwarded_host_and_proto_are_replaced_by_what_the_proxy_saw(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    result = await echoed(
        proxy, b"X-Forwarded-Host: evil.example\r\nX-Forwarded-Host: other.example\r\n"
        b"X-Forwarded-Proto: https\r\n",
    )  # fmt: skip
    assert seen(result, "X-Forwarded-Host") == ["functions.example.com"]
    assert seen(result, "X-Forwarded-Proto") == ["http"]


async def test_behind_a_gateway_its_forwarded_host_and_proto_reach_the_function_unchanged(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy(provider_url="http://127.0.0.1:9")  # --provider-url: the client is the gateway
    result = await echoed(proxy, b"X-Forwarded-Host: public.example\r\nX-Forwarded-Proto: https\r\n")
    assert seen(result, "X-Forwarded-Host") == ["public.example"]
    assert seen(result, "X-Forwarded-Proto") == ["https"]
    assert seen(result, "X-Forwarded-For") == ["127.0.0.1"]
    plain = await echoed(proxy, b"")  # what the gateway did not say, the proxy adds
    assert seen(plain, "X-Forwarded-Host") == ["functions.example.com"]
    assert seen(plain, "X-Forwarded-Proto") == ["http"]


@pytest.mark.parametrize("target", [b"/function/echo/", b"functions.example.com:443"])
async def test_connect_is_refused_with_405_and_never_reaches_the_function(
    provider: FakeProvider, make_proxy: MakeProxy, target: bytes
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"CONNECT " + target + b" HTTP/1.1\r\nHost: functions.example.com:443\r\n\r\n")
        head = await asyncio.wait_for(reader.read(), timeout=5)  # and the proxy closes the connection
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n" in head
    assert replica(provider, ref).received == []


@pytest.mark.parametrize(
    ("request_line", "says"),
    [
        (b"GET /function/echo/ HTTP/0.9", b"HTTP/0.9 requests are not supported"),
        (b"GET /function/echo/", b""),  # no version at all: aiohttp's parser refuses it (400) itself
    ],
    ids=["version-0.9", "no-version"],
)
async def test_an_http_0_9_request_is_refused_with_400_and_never_reaches_the_function(
    provider: FakeProvider, make_proxy: MakeProxy, request_line: bytes, says: bytes
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy()
    status, body = await exchange(proxy, request_line + b"\r\n\r\n")
    assert b" 400 " in status
    assert says in body
    assert replica(provider, ref).received == []


async def expect_continue(
    proxy: Proxy, length: int
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a POST head with `Expect: 100-continue`, as curl does; the first line the proxy answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"POST /function/echo/up HTTP/1.1\r\nHost: functions.example.com\r\nContent-Length: %d\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n" % length
    )
    await writer.drain()
    # curl sends the body anyway after one second: the proxy must answer well within it.
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=0.5)
    return first, reader, writer


async def test_a_client_expecting_100_continue_is_invited_and_the_function_gets_the_body_without_expect(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy()
    first, reader, writer = await expect_continue(proxy, 7)
    try:
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"payload")
        rest = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["body"] == "payload"
    (received,) = replica(provider, ref).received
    assert received.body == b"payload"
    assert [name for name, _ in received.headers if name.lower() == "expect"] == []


async def test_a_client_expecting_100_continue_for_a_body_over_the_limit_gets_413_without_sending_it(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy(max_body=1000)
    first, _, writer = await expect_continue(proxy, 5000)
    writer.close()
    assert first.startswith(b"HTTP/1.1 413 ")
    assert replica(provider, ref).received == []
