"""A warm function is reached through the proxy as if directly: methods, paths, headers, bodies, codes."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider
from tests.support.upstream import pattern


async def echo(client: aiohttp.ClientSession, method: str, url: str | URL, **kwargs: Any) -> dict[str, Any]:
    async with client.request(method, url, **kwargs) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def header(result: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in result["headers"] if key.lower() == name.lower()]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_method_reaches_the_function_with_its_path_and_query(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, method: str
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    target = URL(base(proxy) + "/function/echo/a/b%20c?x=1&y=%2F&x=2", encoded=True)
    result = await echo(client, method, target, data=b"payload")
    assert result["method"] == method
    assert result["raw_path"] == "/a/b%20c?x=1&y=%2F&x=2"
    assert result["body"] == "payload"


async def test_routes_with_and_without_namespace_and_trailing_path_reach_the_same_function(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    default_ref = await provider.add("echo")
    other_ref = await provider.add("echo", "team-a")
    proxy = await make_proxy()
    assert (await echo(client, "GET", base(proxy) + "/function/echo"))["raw_path"] == "/"
    assert (await echo(client, "GET", base(proxy) + "/function/echo?q=1"))["raw_path"] == "/?q=1"
    assert (await echo(client, "GET", base(proxy) + "/function/echo.openfaas-fn/x"))["raw_path"] == "/x"
    await echo(client, "GET", base(proxy) + "/function/echo.team-a/y")
    default = provider.upstream(default_ref)
    other = provider.upstream(other_ref)
    assert default is not None
    assert other is not None
    assert [r.raw_path for r in default.received] == ["/", "/?q=1", "/x"]
    assert [r.raw_path for r in other.received] == ["/y"]


async def test_hop_by_hop_headers_are_dropped_both_ways_and_end_to_end_headers_kept(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy()
    headers = {
        "Connection": "keep-alive, X-Client-Hop",
        "X-Client-Hop": "secret",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "Authorization": "Bearer end-to-end",
        "X-Custom": "kept",
        "Host": "functions.example.com",
    }
    result = await echo(client, "GET", base(proxy) + "/function/echo/h", headers=headers)
    for name in ("X-Client-Hop", "Keep-Alive", "TE", "Proxy-Authorization"):
        assert header(result, name) == [], name
    assert header(result, "Authorization") == ["Bearer end-to-end"]
    assert header(result, "X-Custom") == ["kept"]
    assert header(result, "X-Forwarded-For") == ["127.0.0.1"]
    assert header(result, "X-Forwarded-Host") == ["functions.example.com"]
    assert header(result, "X-Forwarded-Proto") == ["http"]
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert header(result, "Host") == [f"127.0.0.1:{upstream.port}"]

    async with client.get(base(proxy) + "/function/echo/hop") as response:
        assert await response.text() == "hop"
        assert response.headers.get("X-Kept") == "yes"
        assert "X-Upstream-Hop" not in response.headers
        assert "Keep-Alive" not in response.headers


async def test_an_existing_forwarded_for_chain_is_extended(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    result = await echo(
        client, "GET", base(proxy) + "/function/echo/", headers={"X-Forwarded-For": "10.1.2.3"}
    )
    assert header(result, "X-Forwarded-For") == ["10.1.2.3, 127.0.0.1"]


@pytest.mark.parametrize("size", [0, 1, 70_000, 10 * 1024 * 1024])
async def test_request_bodies_up_to_the_limit_arrive_intact(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, size: int
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    body = pattern(size)
    result = await echo(client, "POST", base(proxy) + "/function/echo/upload", data=body)
    assert result["body_len"] == size
    assert result["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_chunked_request_body_arrives_intact(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()

    async def parts() -> Any:
        for index in range(5):
            yield f"part-{index};".encode()

    result = await echo(client, "POST", base(proxy) + "/function/echo/chunked", data=parts())
    assert result["body"] == "part-0;part-1;part-2;part-3;part-4;"


@pytest.mark.parametrize("size", [10, 64 * 1024, 3 * 1024 * 1024])
async def test_response_bodies_of_any_size_come_back_byte_for_byte(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, size: int
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    async with client.get(base(proxy) + f"/function/echo/big?size={size}") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(size)
        assert await response.read() == pattern(size)


async def test_a_streamed_response_reaches_the_client_before_the_function_finishes(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy()
    upstream = provider.upstream(ref)
    assert upstream is not None
    async with client.get(base(proxy) + "/function/echo/stream?chunks=3") as response:
        assert response.status == 200
        # The function holds back the rest until the first chunk has come through the proxy.
        first = await asyncio.wait_for(response.content.readline(), timeout=5)
        assert first == b"chunk-0\n"
        upstream.gate.set()
        assert await response.read() == b"chunk-1\nchunk-2\n"


@pytest.mark.parametrize("code", [200, 201, 204, 400, 404, 418, 500, 503])
async def test_the_functions_status_codes_pass_through_untouched(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, code: int
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    async with client.get(base(proxy) + f"/function/echo/status/{code}") as response:
        assert response.status == code
        expected = b"" if code == 204 else f"status {code} from echo".encode()
        assert await response.read() == expected
    stats = proxy.invocation_stats()["echo.openfaas-fn"]
    assert stats.completed_total == 1
    assert stats.inflight == 0


async def test_redirects_and_head_requests_are_passed_back_not_followed(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    async with client.get(base(proxy) + "/function/echo/redirect", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/elsewhere"
    async with client.head(base(proxy) + "/function/echo/big?size=200000") as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "200000"
        assert await response.read() == b""


async def test_requests_round_robin_over_the_functions_endpoints(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    first = await provider.add("echo")
    second = await provider.add("echo-b")
    proxy = await make_proxy()
    a, b = provider.upstream(first), provider.upstream(second)
    assert a is not None
    assert b is not None
    provider.set_endpoints(first, [a.url, b.url])
    for _ in range(6):
        await echo(client, "GET", base(proxy) + "/function/echo/rr")
    assert len(a.received) == 3
    assert len(b.received) == 3
