"""The admin port answers probes and exports the gateway's metric names, which dashboards depend on."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.config import ProxySettings
from autoscaler.proxy import Proxy
from tests.proxy.conftest import MakeProxy, base, wait_held
from tests.support.fakeprovider import FakeProvider


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


async def test_metrics_use_the_gateway_names_with_function_name_as_name_dot_namespace(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    await provider.add("echo")
    proxy = await make_proxy()
    for path in ("/", "/status/500", "/"):
        async with client.get(base(proxy) + "/function/echo" + path) as response:
            await response.read()
    async with client.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    got = samples(text)
    fn = ("function_name", "echo.openfaas-fn")
    assert got[("gateway_function_invocation_total", frozenset({fn, ("code", "200")}))] == 2
    assert got[("gateway_function_invocation_total", frozenset({fn, ("code", "500")}))] == 1
    # prometheus_client's parser renames counter samples to `..._total`; Prometheus does not, so the
    # gateway's started counter (no `_total`, as Go writes it) is checked on the text itself.
    assert '\ngateway_function_invocation_started{function_name="echo.openfaas-fn"} 3\n' in text
    assert got[("gateway_function_invocation_inflight", frozenset({fn}))] == 0
    assert got[("gateway_functions_seconds_count", frozenset({fn, ("code", "200")}))] == 2
    assert got[("gateway_functions_seconds_bucket", frozenset({fn, ("code", "200"), ("le", "+Inf")}))] == 2
    assert got[("autoscaler_held_requests", frozenset({fn}))] == 0
    assert got[("autoscaler_wakeups_total", frozenset({fn}))] == 0
    assert got[("autoscaler_cold_start_seconds_count", frozenset({fn}))] == 0


async def test_held_requests_show_as_in_flight_and_held_while_waiting(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("cold", warm=False, ready_delay=30)
    proxy = await make_proxy()
    pending = [asyncio.create_task(client.get(base(proxy) + "/function/cold/")) for _ in range(4)]
    await wait_held(proxy, ref.key, 4)
    async with client.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as response:
        got = samples(await response.text())
    fn = frozenset({("function_name", "cold.openfaas-fn")})
    assert got[("autoscaler_held_requests", fn)] == 4
    assert got[("gateway_function_invocation_inflight", fn)] == 4
    assert proxy.busy(ref.key)
    provider.ready_now(ref)
    assert [r.status for r in await asyncio.gather(*pending)] == [200] * 4
    assert not proxy.busy(ref.key)


async def test_probes_say_live_and_ready_and_readiness_turns_off_when_draining(
    provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy()
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    async with client.get(admin + "/healthz") as response:
        assert response.status == 200
    async with client.get(admin + "/readyz") as response:
        assert response.status == 200
    await proxy.drain(grace=0.1)
    async with client.get(admin + "/readyz") as response:
        assert response.status == 503
        assert "draining" in await response.text()
    async with client.get(admin + "/healthz") as response:
        assert response.status == 200


async def test_a_given_registry_receives_the_metrics_and_is_released_on_stop(provider: FakeProvider) -> None:
    registry = CollectorRegistry()
    settings = ProxySettings(host="127.0.0.1", port=0, admin_port=0)
    first = Proxy(settings=settings, provider=provider, registry=registry)
    assert registry.get_sample_value("autoscaler_held_requests", {"function_name": "x"}) is None
    await first.start()
    await first.stop()
    second = Proxy(settings=settings, provider=provider, registry=registry)  # no duplicate-name error
    await second.stop()
