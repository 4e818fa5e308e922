"""A function's concurrency limit is the proxy's to keep: callers queue for a slot instead of getting 429.

OpenFaaS functions set `max_inflight` and their watchdog answers 429 above it. The function servers
here do the same (a `ThreadingHTTPServer` in its own process that answers 429 above N requests at
once), or record what they see (`Upstream`). With `autoscaler.dev/max-inflight` declared (else
`max_inflight` in the function's environment, where OpenFaaS users set it), the proxy sends each
replica at most that many requests and queues the rest in arrival order, within the hold limits (429
with Retry-After when the queue is full, 504 past the hold timeout); a 429 from a function that
declared nothing is retried (the function did not process the request), not passed on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest

from autoscaler.config import ProxySettings
from autoscaler.errors import SpecError
from autoscaler.interfaces import BUSY_HEADER
from autoscaler.proxy import Proxy
from autoscaler.spec import FROM_ENV, FROM_LABEL, MAX_INFLIGHT, limit_source, max_inflight, parse_limit
from tests.proxy.conftest import MakeProxy, base, wait_held
from tests.support.fakeprovider import FakeProvider
from tests.support.naive import NaiveServer
from tests.support.waiting import until

CALLS = 40


@pytest.fixture
async def limited() -> AsyncIterator[NaiveServer]:
    server = NaiveServer(keep_alive=True, max_inflight=2, delay=0.02)
    await server.start()
    yield server
    await server.stop()


async def post_many(client: aiohttp.ClientSession, url: str, count: int) -> list[tuple[int, bool]]:
    async def post(index: int) -> tuple[int, bool]:
        body = f"call {index}".encode()
        expected = f"POST /call/{index} {len(body)} {hashlib.sha256(body).hexdigest()}"
        timeout = aiohttp.ClientTimeout(total=30)
        async with client.post(f"{url}/call/{index}", data=body, timeout=timeout) as response:
            return response.status, await response.text() == expected

    return await asyncio.gather(*(post(index) for index in range(count)))


def started(proxy: Proxy, key: str) -> float:
    stats = proxy.invocation_stats().get(key)
    return 0 if stats is None else stats.started_total


def inflight(proxy: Proxy, key: str) -> int:
    stats = proxy.invocation_stats().get(key)
    return 0 if stats is None else stats.inflight


# -- the declared limit ----------------------------------------------------------------------------


async def test_a_function_that_declares_its_limit_gets_no_more_and_no_caller_sees_its_429(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, limited: NaiveServer
) -> None:
    await provider.add("narrow", url=limited.url, labels={MAX_INFLIGHT: "2"})
    proxy = await make_proxy()
    results = await post_many(client, base(proxy) + "/function/narrow", CALLS)
    assert results == [(200, True)] * CALLS


async def test_requests_held_through_a_cold_start_queue_for_slots_instead_of_getting_429(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, limited: NaiveServer
) -> None:
    ref = await provider.add(
        "sleepy", url=limited.url, warm=False, ready_delay=30, labels={MAX_INFLIGHT: "2"}
    )
    proxy = await make_proxy()
    calls = asyncio.ensure_future(post_many(client, base(proxy) + "/function/sleepy", CALLS))
    await wait_held(proxy, ref.key, CALLS)
    provider.ready_now(ref)
    assert await calls == [(200, True)] * CALLS


async def test_requests_above_the_limit_are_forwarded_one_slot_at_a_time_in_arrival_order(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("single", labels={MAX_INFLIGHT: "1"})
    proxy = await make_proxy()
    url = base(proxy) + "/function/single/slow?seconds=0.2"

    async def call(index: int) -> int:
        async with client.post(url, data=f"{index}".encode()) as response:
            await response.read()
            return response.status

    calls = []
    for index in range(6):  # each arrives after the one before it is in the proxy
        calls.append(asyncio.ensure_future(call(index)))
        arrived = index + 1
        await until(lambda: started(proxy, ref.key) >= arrived, within=5, what=f"call {index} to arrive")  # noqa: B023
    assert await asyncio.gather(*calls) == [200] * 6
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert upstream.most_busy == 1
    assert [seen.body for seen in upstream.received] == [f"{index}".encode() for index in range(6)]


async def test_queued_requests_count_as_in_flight_so_the_function_is_busy(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("queued", labels={MAX_INFLIGHT: "1"})
    proxy = await make_proxy()
    upstream = provider.upstream(ref)
    assert upstream is not None
    url = base(proxy) + "/function/queued/stream"  # the first answer waits on the gate

    async def call() -> int:
        async with client.get(url) as response:
            await response.read()
            return response.status

    calls = [asyncio.ensure_future(call()) for _ in range(3)]
    await until(lambda: inflight(proxy, ref.key) == 3 and upstream.busy == 1, within=5, what="3 calls in")
    assert upstream.busy == 1  # one inside the function, two queued in the proxy
    assert proxy.busy(ref.key)
    upstream.gate.set()
    assert await asyncio.gather(*calls) == [200] * 3
    assert upstream.most_busy == 1


async def test_beyond_the_queue_room_a_caller_gets_429_with_retry_after(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("full", labels={MAX_INFLIGHT: "1"})
    proxy = await make_proxy(max_held=2, retry_after=7)
    upstream = provider.upstream(ref)
    assert upstream is not None
    url = base(proxy) + "/function/full/stream"

    async def call() -> int:
        async with client.get(url) as response:
            await response.read()
            return response.status

    calls = [asyncio.ensure_future(call()) for _ in range(3)]  # one in the function, two queued
    await until(lambda: inflight(proxy, ref.key) == 3 and upstream.busy == 1, within=5, what="3 calls in")
    async with client.get(url) as response:
        assert (response.status, response.headers["Retry-After"]) == (429, "7")
        assert "concurrency limit (1 per replica) and already queues 2" in await response.text()
    upstream.gate.set()
    assert await asyncio.gather(*calls) == [200] * 3


@pytest.mark.virtual_time
async def test_a_request_queued_past_the_shipped_hold_timeout_gets_504_saying_so_at_exactly_that_time(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("sloth", labels={MAX_INFLIGHT: "1"})
    proxy = await make_proxy()  # the shipped hold timeout
    hold_timeout = ProxySettings().hold_timeout
    url = base(proxy) + f"/function/sloth/slow?seconds={2 * hold_timeout:g}"
    upstream = provider.upstream(ref)
    assert upstream is not None
    first = asyncio.ensure_future(client.get(url))
    await until(lambda: upstream.busy == 1, within=5, what="the first call to take the only slot")
    loop = asyncio.get_running_loop()
    sent = loop.time()
    async with client.get(url) as response:
        assert (response.status, loop.time() - sent) == (504, hold_timeout)
        assert "had no free slot (concurrency limit 1 per replica)" in await response.text()
    async with await first as response:
        assert response.status == 200


async def test_the_limit_spreads_over_replicas_the_least_busy_first(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    servers = [NaiveServer(keep_alive=True, max_inflight=2, delay=0.02) for _ in range(2)]
    try:
        for server in servers:
            await server.start()
        ref = await provider.add("pair", url=servers[0].url, labels={MAX_INFLIGHT: "2"})
        provider.set_endpoints(ref, [server.url for server in servers])
        proxy = await make_proxy()
        results = await post_many(client, base(proxy) + "/function/pair", CALLS)
        assert results == [(200, True)] * CALLS
    finally:
        for server in servers:
            await server.stop()


# -- the limit in the function's environment (where OpenFaaS users set it) -------------------------


async def burst(
    proxy: Proxy, client: aiohttp.ClientSession, name: str, count: int, *, seconds: float = 0.1
) -> list[int]:
    url = base(proxy) + f"/function/{name}/slow?seconds={seconds}"

    async def call(index: int) -> int:
        async with client.post(url, data=f"{index}".encode()) as response:
            await response.read()
            return response.status

    return await asyncio.gather(*(call(index) for index in range(count)))


async def test_a_limit_declared_only_in_the_environment_is_kept_per_replica_and_no_caller_sees_429(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, limited: NaiveServer
) -> None:
    ref = await provider.add("envonly", env_max_inflight="2")
    naive = await provider.add("envnaive", url=limited.url, env_max_inflight="2")
    proxy = await make_proxy()

    assert await burst(proxy, client, "envonly", 8) == [200] * 8
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert upstream.most_busy == 2
    # A watchdog-like server answering 429 above 2: every caller gets its own answer, none a 429.
    assert await post_many(client, base(proxy) + f"/function/{naive.name}", CALLS) == [(200, True)] * CALLS


async def test_our_label_wins_over_the_environment(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("both", labels={MAX_INFLIGHT: "1"}, env_max_inflight="3")
    proxy = await make_proxy()
    assert await burst(proxy, client, "both", 6) == [200] * 6
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert upstream.most_busy == 1


async def test_zero_in_the_environment_means_no_limit(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("unlimited", env_max_inflight="0")
    proxy = await make_proxy()
    assert await burst(proxy, client, "unlimited", 8, seconds=0.3) == [200] * 8
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert upstream.most_busy >= 3  # more at once than any limit below 3 allows (the pool grows as it goes)


async def test_a_bad_environment_value_is_one_warning_naming_the_environment_and_no_limit(
    provider: FakeProvider,
    make_proxy: MakeProxy,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ref = await provider.add("envtypo", env_max_inflight="ten")
    proxy = await make_proxy()
    with caplog.at_level(logging.WARNING, logger="autoscaler.proxy"):
        for _ in range(2):
            assert await burst(proxy, client, "envtypo", 8, seconds=0.3) == [200] * 8
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert upstream.most_busy >= 3
    warnings = [r.getMessage() for r in caplog.records if "max_inflight" in r.getMessage()]
    assert warnings == [
        "environment max_inflight='ten' is invalid: a whole number >= 0: "
        "forwarding envtypo.openfaas-fn without a concurrency limit"
    ]


@pytest.mark.parametrize(
    ("labels", "env", "expected"),
    [
        ({}, None, None),
        ({}, "4", (FROM_ENV, "4")),
        ({MAX_INFLIGHT: "2"}, "4", (FROM_LABEL, "2")),
        ({MAX_INFLIGHT: "0"}, "4", (FROM_LABEL, "0")),  # the label says "no limit", and wins
    ],
)
def test_the_label_wins_and_the_environment_fills_in(
    labels: dict[str, str], env: str | None, expected: tuple[str, str] | None
) -> None:
    assert limit_source(labels, env) == expected


@pytest.mark.parametrize(("raw", "limit"), [("3", 3), (" 12 ", 12), ("0", None)])
def test_the_environment_value_reads_a_whole_number_and_zero_means_no_limit(
    raw: str, limit: int | None
) -> None:
    assert parse_limit(FROM_ENV, raw) == limit


@pytest.mark.parametrize("raw", ["", "ten", "-1", "2.5", "+3", "1_0"])
def test_a_bad_environment_value_is_a_clear_error(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^environment max_inflight=.* is invalid: a whole number >= 0$"):
        parse_limit(FROM_ENV, raw)


# -- no declared limit -----------------------------------------------------------------------------


@pytest.mark.slow  # the waiting callers back off up to a second apart while the function is full
async def test_a_429_from_a_function_that_declared_no_limit_is_retried_not_passed_on(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, limited: NaiveServer
) -> None:
    await provider.add("undeclared", url=limited.url)
    proxy = await make_proxy()
    results = await post_many(client, base(proxy) + "/function/undeclared", CALLS)
    assert results == [(200, True)] * CALLS


async def test_a_function_that_keeps_answering_429_past_the_hold_timeout_passes_it_on(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("refuser")
    proxy = await make_proxy(hold_timeout=0.3)
    async with client.post(base(proxy) + "/function/refuser/status/429", data=b"x") as response:
        assert response.status == 429
        assert "status 429 from refuser" in await response.text()


async def test_a_function_that_keeps_answering_429_is_tried_at_most_about_once_a_second(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    # At a 0.25 s ceiling one call waiting out a 30 s hold sent an overloaded function 120 requests.
    ref = await provider.add("refuser")
    proxy = await make_proxy(hold_timeout=4.0)
    async with client.post(base(proxy) + "/function/refuser/status/429", data=b"x") as response:
        assert response.status == 429
    upstream = provider.upstream(ref)
    assert upstream is not None
    assert 3 <= len(upstream.received) <= 9  # 0.1, 0.2, 0.4, 0.8, then 1 s apart within the 4 s


async def test_a_caller_that_retries_on_its_own_gets_the_first_429_at_once_and_the_function_one_request(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("refuser")
    proxy = await make_proxy(hold_timeout=30.0)
    started = asyncio.get_running_loop().time()
    async with client.post(
        base(proxy) + "/function/refuser/status/429", data=b"x", headers={BUSY_HEADER: "pass"}
    ) as response:
        assert response.status == 429
    assert asyncio.get_running_loop().time() - started < 5  # not the 30 s hold
    upstream = provider.upstream(ref)
    assert upstream is not None
    [seen] = upstream.received
    assert BUSY_HEADER.lower() not in {
        name.lower() for name, _ in seen.headers
    }  # the proxy's, not the function's


async def test_a_429_asking_to_come_back_after_the_hold_timeout_is_passed_on_at_once(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession, limited: NaiveServer
) -> None:
    await provider.add("quota", url=limited.url)
    proxy = await make_proxy(hold_timeout=30)
    started = asyncio.get_running_loop().time()
    async with client.post(base(proxy) + "/function/quota/busy", data=b"x") as response:
        assert (response.status, response.headers["Retry-After"]) == (429, "120")
    assert asyncio.get_running_loop().time() - started < 5  # not held for the 30 s hold timeout


# -- the label -------------------------------------------------------------------------------------


def test_the_label_reads_a_whole_number_and_zero_or_absent_means_no_limit() -> None:
    assert max_inflight({MAX_INFLIGHT: " 8 "}) == 8
    assert max_inflight({MAX_INFLIGHT: "0"}) is None
    assert max_inflight({}) is None


@pytest.mark.parametrize("value", ["abc", "-1", "2.5", ""])
def test_a_bad_label_value_is_a_clear_error(value: str) -> None:
    with pytest.raises(SpecError, match=f"label {MAX_INFLIGHT}=.* is invalid: a whole number >= 0"):
        max_inflight({MAX_INFLIGHT: value})


async def test_a_function_with_a_bad_limit_is_still_served_and_the_log_says_why(
    provider: FakeProvider,
    make_proxy: MakeProxy,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await provider.add("typo", labels={MAX_INFLIGHT: "lots"})
    proxy = await make_proxy()
    with caplog.at_level(logging.WARNING, logger="autoscaler.proxy"):
        for _ in range(2):
            async with client.get(base(proxy) + "/function/typo/") as response:
                assert response.status == 200
    warnings = [r.getMessage() for r in caplog.records if MAX_INFLIGHT in r.getMessage()]
    assert len(warnings) == 1  # once per value, not per request
    assert "is invalid: a whole number >= 0" in warnings[0]
