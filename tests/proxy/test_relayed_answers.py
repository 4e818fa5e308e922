"""A function's small answer reaches the client as bytes: the same headers aiohttp's response gave.

The proxy writes a relayed answer with a known length itself (`autoscaler.proxy._respond`) instead
of through aiohttp's response objects. These tests read what the client receives byte for byte
(a raw socket, not an HTTP client that would normalise it) from raw functions (`RawServer`).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from tests.proxy.test_upstream_http import OK, Via, raw, reply, via

__all__ = ["raw", "via"]  # fixtures shared with test_upstream_http


async def exchange(url: str, requests: bytes, answers: int = 1) -> tuple[list[bytes], bool]:
    """Send `requests` in one write; the answers' bytes, and whether the proxy closed afterwards."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    got: list[bytes] = []
    try:
        writer.write(requests)
        async with asyncio.timeout(5):
            for _ in range(answers):
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                got.append(head + await reader.readexactly(length))
            closed = False
            try:
                async with asyncio.timeout(0.3):
                    closed = await reader.read(1) == b""
            except TimeoutError:
                pass
    finally:
        writer.close()
    return got, closed


def request(url: str, *, version: bytes = b"1.1", extra: bytes = b"") -> bytes:
    path = urlsplit(url).path.encode()
    return b"GET " + path + b" HTTP/" + version + b"\r\nHost: fn\r\n" + extra + b"\r\n"


def fields(answer: bytes) -> list[tuple[bytes, bytes]]:
    head = answer.split(b"\r\n\r\n", 1)[0]
    return [
        (name.lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    ]


def values(answer: bytes, name: bytes) -> list[bytes]:
    return [value for key, value in fields(answer) if key == name]


async def test_an_answer_without_date_server_or_type_gets_them_as_aiohttp_added_them(via: Via) -> None:
    _, url = await via(reply(OK))
    (answer,), closed = await exchange(url, request(url))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nok")
    assert values(answer, b"content-length") == [b"2"]
    assert values(answer, b"content-type") == [b"application/octet-stream"]
    assert len(values(answer, b"date")) == 1
    assert values(answer, b"server")[0].startswith(b"Python/")
    assert values(answer, b"connection") == []  # HTTP/1.1 kept alive: nothing to say
    assert not closed


async def test_the_functions_own_date_server_and_type_are_kept_and_its_length_rewritten_once(
    via: Via,
) -> None:
    _, url = await via(
        reply(
            b"HTTP/1.1 201 Made\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: fn/1\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 2\r\nContent-Length: 2\r\n"
            b"X-A: 1\r\nX-A: 2\r\n\r\nok"
        )
    )
    (answer,), _ = await exchange(url, request(url))
    assert answer.startswith(b"HTTP/1.1 201 Made\r\n")
    assert values(answer, b"date") == [b"Mon, 01 Jan 2024 00:00:00 GMT"]
    assert values(answer, b"server") == [b"fn/1"]
    assert values(answer, b"content-type") == [b"text/plain"]
    assert values(answer, b"content-length") == [b"2"]
    assert values(answer, b"x-a") == [b"1", b"2"]


async def test_header_bytes_that_are_not_utf8_reach_the_client_unchanged(via: Via) -> None:
    _, url = await via(reply(b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 2\r\n\r\nok"))
    (answer,), closed = await exchange(url, request(url))
    assert values(answer, b"x-name") == [b"caf\xe9"]
    assert not closed


@pytest.mark.parametrize(
    ("version", "extra", "connection", "closes"),
    [
        (b"1.1", b"", [], False),
        (b"1.1", b"Connection: close\r\n", [b"close"], True),
        (b"1.0", b"", [], True),
        (b"1.0", b"Connection: keep-alive\r\n", [b"keep-alive"], False),
    ],
)
async def test_the_connection_header_and_close_follow_the_clients_version_and_wish(
    via: Via, version: bytes, extra: bytes, connection: list[bytes], closes: bool
) -> None:
    _, url = await via(reply(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"))
    (answer,), closed = await exchange(url, request(url, version=version, extra=extra))
    assert answer.startswith(b"HTTP/" + version + b" 200 OK\r\n")
    assert values(answer, b"connection") == connection
    assert closed is closes


async def test_pipelined_requests_in_one_write_get_their_answers_in_order(via: Via) -> None:
    _, url = await via(reply(OK))
    answers, closed = await exchange(url, request(url) * 3, answers=3)
    assert [answer.endswith(b"\r\n\r\nok") for answer in answers] == [True, True, True]
    assert not closed


async def test_headers_the_function_names_in_connection_do_not_reach_the_client(via: Via) -> None:
    _, url = await via(
        reply(
            b"HTTP/1.1 200 OK\r\nConnection: X-Hop, Keep-Alive\r\nX-Hop: 1\r\nKeep-Alive: t=5\r\n"
            b"Content-Length: 2\r\n\r\nok"
        )
    )
    (answer,), _ = await exchange(url, request(url))
    assert [name for name, _ in fields(answer) if name in (b"x-hop", b"keep-alive", b"connection")] == []


async def test_a_bare_line_feed_in_a_functions_head_ends_its_line_and_reaches_the_client_as_crlf(
    via: Via,
) -> None:
    """A bare LF ends a line, as the OpenFaaS gateway's Go reader and nginx read a response (RFC 9112
    2.2 allows it): `X-Injected` is a header of the function's own, as behind the gateway. No bare LF
    reaches the client: the head it gets is written with CRLF line ends. (This used to close the
    connection without an answer.)"""
    _, url = await via(reply(b"HTTP/1.1 200 OK\r\nX-A: a\nX-Injected: 1\r\nContent-Length: 2\r\n\r\nok"))
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request(url, extra=b"Connection: close\r\n"))
        async with asyncio.timeout(5):
            received = await reader.read()
    finally:
        writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"ok"
    assert b"\n" not in head.replace(b"\r\n", b"")  # every line ends with CRLF
    lines = head.lower().split(b"\r\n")
    assert b"x-a: a" in lines
    assert b"x-injected: 1" in lines
