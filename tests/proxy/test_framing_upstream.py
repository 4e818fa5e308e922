"""A function's bad framing costs its own caller at most, never the next caller on a pooled connection.

The replicas here are raw asyncio TCP servers that misbehave on purpose (the `RawServer` of
`test_upstream_http`): status codes outside 100-599, bodies on responses that have none (HEAD,
204, 304) sent a moment after the head, interim responses other than 100, and bytes past the end of
a Content-Length body. The second caller waits for the only connection the pool allows, so it is
handed the first caller's connection the moment that one is released, which is where stray bytes
would be taken for its answer.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from autoscaler.proxy._pool import Pool
from tests.proxy.test_upstream_http import OK, Answer, RawFactory, Seen, Via, get, raw, reply, via

__all__ = ["raw", "via"]  # fixtures shared with test_upstream_http

HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"


@pytest.mark.parametrize("code", [b"099", b"000", b"600", b"999", b"1000", b"-20", b"2 0"])
async def test_a_status_outside_100_to_599_gives_502_and_the_link_is_dropped(
    via: Via, client: aiohttp.ClientSession, code: bytes
) -> None:
    server, url = await via(reply(b"HTTP/1.1 " + code + b" Odd\r\nContent-Length: 2\r\n\r\nok"))
    status, body = await get(client, url)
    assert status == 502, body
    assert b"invalid status line" in body
    await server.closed_by_proxy(0)
    server.answer = reply(OK)
    assert await get(client, url) == (200, b"ok")
    assert server.accepted == 2


async def test_an_interim_response_that_announces_a_body_gives_502(
    via: Via, client: aiohttp.ClientSession
) -> None:
    server, url = await via(reply(b"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\nhello" + OK))
    status, body = await get(client, url)
    assert status == 502
    assert b"an interim 103 response announced a body" in body
    await server.closed_by_proxy(0)


async def test_a_100_continue_before_the_answer_keeps_the_link(
    via: Via, client: aiohttp.ClientSession
) -> None:
    server, url = await via(reply(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    assert await get(client, url, method="POST", data=b"x") == (200, b"ok")
    assert await get(client, url) == (200, b"ok")
    assert server.accepted == 1


async def call(pool: Pool, endpoint: str, method: str, path: str) -> tuple[int, bytes]:
    conn = await pool.request(endpoint=endpoint, method=method, path=path, headers=[], body=None)
    try:
        return conn.status, await conn.read_all()
    finally:
        pool.release(conn)


async def first_then_waiting(
    raw_server: str, first: tuple[str, str], second: tuple[str, str]
) -> list[object]:
    """Two requests through a pool of one connection: the second waits for the first one's link."""
    pool = Pool(limit_per_origin=1, connect_timeout=1.0, idle_timeout=15.0)
    try:
        one = asyncio.create_task(call(pool, raw_server, *first))
        await asyncio.sleep(0)  # the first takes the one connection; the second queues for it
        two = asyncio.create_task(call(pool, raw_server, *second))
        return list(await asyncio.gather(one, two, return_exceptions=True))
    finally:
        pool.close()


def late_body(first_head: bytes, stray: bytes) -> Answer:
    """A replica that sends `first_head`, then `stray` 20 ms later; it answers other requests with 201."""

    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/first":
            writer.write(first_head)
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(stray)
        else:
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmine")
        return True

    return answer


@pytest.mark.parametrize(
    ("method", "head"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\n\r\n"),
        ("GET", HINTS + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ],
    ids=["head", "204", "304", "after-103"],
)  # fmt: skip
async def test_a_body_sent_late_after_a_bodiless_response_never_reaches_the_next_caller(
    raw: RawFactory, method: str, head: bytes
) -> None:
    server = await raw(late_body(head, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"))
    first, second = await first_then_waiting(server.url, (method, "/first"), ("POST", "/second"))
    assert first == ((204 if b" 204 " in head else 304 if b" 304 " in head else 200), b"")
    assert second == (201, b"mine")
    assert server.accepted == 2


async def test_bytes_past_a_content_length_body_are_not_taken_for_the_next_callers_answer(
    raw: RawFactory,
) -> None:
    async def answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/first":
            writer.write(OK)
            await writer.drain()
            for _ in range(2):  # the proxy reads the answer on its own, then the surplus comes
                await asyncio.sleep(0)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
        else:
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmine")
        return True

    server = await raw(answer)
    first, second = await first_then_waiting(server.url, ("GET", "/first"), ("POST", "/second"))
    assert first == (200, b"ok")
    assert second == (201, b"mine")
    assert server.accepted == 2
    assert [seen.target for seen in server.requests] == ["/first", "/second"]
