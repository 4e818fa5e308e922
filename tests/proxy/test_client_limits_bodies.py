"""Request bodies are counted against the buffer caps before they are read, not after.

A held or queued request keeps its body in the proxy's memory. These cases send the head of a POST
and none of its body: a refusal that comes back anyway proves the decision was taken before reading.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from autoscaler.config import ProxySettings, build
from autoscaler.errors import ConfigError
from tests.proxy.conftest import MakeProxy, base, wait_held
from tests.support.fakeprovider import FakeProvider
from tests.support.virtual_time import virtual_loop


async def post_head(port: int, path: str, *extra: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a POST's head only; the body is up to the caller."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"POST {path} HTTP/1.1", "Host: proxy", *extra]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> bytes:
    """The response's head and body (by its Content-Length), without waiting for the close."""
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + await reader.readexactly(length)


async def test_a_body_that_would_pass_the_functions_buffer_cap_gets_429_before_a_byte_of_it_is_read(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("cold", warm=False, ready_delay=30)
    proxy = await make_proxy(max_body=1000, max_buffered=1000, retry_after=7)
    held = asyncio.create_task(client.post(base(proxy) + "/function/cold/", data=b"a" * 600))
    await wait_held(proxy, ref.key, 1)
    reader, writer = await post_head(proxy.port, "/function/cold/", "Content-Length: 600")
    data = await answer(reader)
    assert data.startswith(b"HTTP/1.1 429 ")
    assert b"Retry-After: 7\r\n" in data
    assert b"buffers 600 bytes of request bodies for cold.openfaas-fn (limit 1000)" in data
    writer.close()
    provider.ready_now(ref)
    response = await held
    assert (response.status, (await response.json())["body_len"]) == (200, 600)
    async with client.post(base(proxy) + "/function/cold/", data=b"b" * 1000) as response:
        assert response.status == 200  # the held body's bytes were given back


async def test_the_proxy_wide_cap_counts_the_bodies_of_every_function(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    first = await provider.add("one", warm=False, ready_delay=30)
    second = await provider.add("two", warm=False, ready_delay=30)
    await provider.add("three", warm=False, ready_delay=30)
    proxy = await make_proxy(max_body=600, max_buffered=1000, max_buffered_total=1500)
    held = [
        asyncio.create_task(client.post(base(proxy) + "/function/one/", data=b"1" * 600)),
        asyncio.create_task(client.post(base(proxy) + "/function/two/", data=b"2" * 600)),
    ]
    await wait_held(proxy, first.key, 1)
    await wait_held(proxy, second.key, 1)
    reader, writer = await post_head(proxy.port, "/function/three/", "Content-Length: 600")
    data = await answer(reader)
    assert data.startswith(b"HTTP/1.1 429 ")
    assert b"1200 in all (limit 1500)" in data
    writer.close()
    provider.ready_now(first)
    provider.ready_now(second)
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]


async def test_a_chunked_body_is_counted_as_it_arrives_and_refused_once_it_passes_the_cap(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("cold", warm=False, ready_delay=30)
    proxy = await make_proxy(max_body=1000, max_buffered=1000)
    held = asyncio.create_task(client.post(base(proxy) + "/function/cold/", data=b"a" * 600))
    await wait_held(proxy, ref.key, 1)
    reader, writer = await post_head(proxy.port, "/function/cold/", "Transfer-Encoding: chunked")
    writer.write(b"12c\r\n" + b"c" * 300 + b"\r\n")  # 300 bytes fit: no answer yet
    await asyncio.sleep(0.2)
    assert not reader.at_eof()
    writer.write(b"12c\r\n" + b"c" * 300 + b"\r\n")  # 600 do not
    data = await answer(reader)
    assert data.startswith(b"HTTP/1.1 429 ")
    writer.close()
    provider.ready_now(ref)
    assert (await held).status == 200


async def test_a_cold_request_over_the_hold_limit_is_refused_before_its_body_is_read(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("cold", warm=False, ready_delay=30)
    proxy = await make_proxy(max_held=1)
    held = asyncio.create_task(client.get(base(proxy) + "/function/cold/"))
    await wait_held(proxy, ref.key, 1)
    reader, writer = await post_head(proxy.port, "/function/cold/", "Content-Length: 5000000")
    data = await answer(reader)
    assert data.startswith(b"HTTP/1.1 429 ")
    assert b"(the hold limit)" in data
    writer.close()
    provider.ready_now(ref)
    assert (await held).status == 200


async def test_a_single_body_over_max_body_is_413_at_once_whatever_the_buffers_hold(
    provider: FakeProvider, make_proxy: MakeProxy
) -> None:
    await provider.add("echo")
    proxy = await make_proxy(max_body=1000)
    reader, writer = await post_head(proxy.port, "/function/echo/", "Content-Length: 1001")
    data = await answer(reader)
    assert data.startswith(b"HTTP/1.1 413 ")
    writer.close()


@pytest.mark.virtual_time
async def test_a_body_that_stops_coming_is_cut_at_the_shipped_body_timeout_and_its_bytes_are_freed(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("echo")
    proxy = await make_proxy(max_body=1000, max_buffered=1000)  # the shipped body timeout
    body_timeout = ProxySettings().body_timeout
    loop = virtual_loop()
    start = loop.time()
    reader, writer = await post_head(proxy.port, "/function/echo/", "Content-Length: 1000")
    writer.write(b"x" * 100)  # and nothing more
    async with asyncio.timeout(2 * body_timeout):
        assert await reader.read() == b""
    cut = loop.time() - start
    assert body_timeout <= cut <= body_timeout + 1.0, cut  # at the timeout, within the one-second sweep
    writer.close()
    async with client.post(base(proxy) + "/function/echo/", data=b"y" * 1000) as response:
        assert response.status == 200  # the 1000 bytes taken for the cut body were given back


def test_a_max_body_that_the_buffers_could_never_take_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"--max-buffered-total .*--max-body \(314572800\) must fit"):
        build(ProxySettings, {"max_body": 300 * 1024 * 1024})
    settings = build(
        ProxySettings, {"max_body": 300 * 1024 * 1024, "max_buffered": 2**30, "max_buffered_total": 2**31}
    )
    assert settings.max_body == 300 * 1024 * 1024
