"""OpenFaaS's own PromQL works unchanged on what the proxy exports, so an OpenFaaS user's alerts,
dashboards and autoscaler rules keep working when the proxy takes the gateway's place.

A real Prometheus scrapes the real proxy's admin `/metrics` while real HTTP traffic goes through the
proxy to real upstream servers. Every expression of the CE chart's rules, every panel query of the
community Grafana dashboard and our own transcription of OpenFaaS Pro's recording rules (as
`../shared/openfaas/README.md` describes them) must return data, except the few whose input only a
kubelet or a queue-worker exports: `NEEDS_ANOTHER_EXPORTER` lists those, and the test proves that
missing input is the only reason they are empty. The OpenFaaS files are read from `../shared/openfaas`
at test time, never copied into the project.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from autoscaler.config import ProxySettings
from autoscaler.proxy import Proxy
from tests.manifests.promql import metric_names
from tests.support.child import shared_path
from tests.support.fakeprovider import FakeProvider
from tests.support.prometheus import PrometheusServer, require_binary
from tests.support.waiting import until

pytestmark = [pytest.mark.prometheus, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

NAMESPACE = "openfaas-fn"
HELLO = f"hello.{NAMESPACE}"  # rps (the default type), steady traffic above the CE alert's 5 req/s
BUSY = f"busy.{NAMESPACE}"  # type=capacity, slow requests in flight
CRUNCH = f"crunch.{NAMESPACE}"  # type=cpu: its load comes from the kubelet, never from the proxy
QUEUED = f"queued.{NAMESPACE}"  # type=queue: its load comes from the queue-worker
BROKEN = f"broken.{NAMESPACE}"  # an invalid label: replica gauges only

# Our transcription of OpenFaaS Pro's recording rules (its chart is under the Pro EULA: not copied).
# Pro's autoscaler reads `job:function_current_load:sum`, one series per function from the rule of
# its scaling type: each rule keeps only functions whose gateway_service_target_load has that type.
# Scale to zero reads `job:function_current_started:max_sum`: the highest per-function rate of
# started invocations over the last minute, present only while it is above zero.
PRO_LOAD = "job:function_current_load:sum"
PRO_STARTED = "job:function_current_started:max_sum"


def _of_type(kind: str) -> str:
    target = f'gateway_service_target_load{{scaling_type="{kind}"}}'
    return f"on (function_name) (max by (function_name) ({target}) > 0)"


PRO_RULES: dict[str, dict[str, Any]] = {
    "pro rps": {
        "record": PRO_LOAD,
        "expr": "ceil(sum by (function_name) (rate(gateway_function_invocation_total[30s]))"
        f" and {_of_type('rps')})",
        "labels": {"scaling_type": "rps"},
    },
    "pro capacity": {
        "record": PRO_LOAD,
        "expr": "ceil(sum by (function_name) (max_over_time(gateway_function_invocation_inflight[45s:5s]))"
        f" and {_of_type('capacity')})",
        "labels": {"scaling_type": "capacity"},
    },
    "pro cpu": {
        "record": PRO_LOAD,
        "expr": "ceil(1000 * sum by (function_name) (irate(pod_cpu_usage_seconds_total[1m]))"
        f" and {_of_type('cpu')})",
        "labels": {"scaling_type": "cpu"},
    },
    "pro queue": {
        "record": PRO_LOAD,
        "expr": "ceil(sum by (function_name) (max_over_time(queue_worker_pending_messages[30s]))"
        f" and {_of_type('queue')})",
        "labels": {"scaling_type": "queue"},
    },
    "pro started": {
        "record": PRO_STARTED,
        "expr": "max_over_time((sum by (function_name) (rate(gateway_function_invocation_started[1m])))"
        "[1m:5s]) > 0",
    },
}

# Expressions that cannot return data here, and the series (exported by another component) they need.
NEEDS_ANOTHER_EXPORTER = {
    "pro cpu": "pod_cpu_usage_seconds_total",  # the kubelet's resource metrics (Pro's kubelet scrape job)
    "pro queue": "queue_worker_pending_messages",  # the JetStream queue-worker
}

# Go's prometheus.DefBuckets as its text format writes them.
GO_DEFAULT_BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
# Every family the gateway (CE and Pro) writes that the proxy writes too, with its `# TYPE`.
GATEWAY_TYPES = {
    "gateway_function_invocation_total": "counter",
    "gateway_function_invocation_started": "counter",  # as Go writes it: a counter, no `_total`
    "gateway_function_invocation_inflight": "gauge",
    "gateway_functions_seconds": "histogram",
    "gateway_service_count": "gauge",
    "gateway_service_ready_count": "gauge",
    "gateway_service_target": "gauge",
    "gateway_service_min": "gauge",
    "gateway_service_target_load": "gauge",
}
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "5m", "$function": ".*"}


# -- the OpenFaaS files, read where they are -----------------------------------------------------------


def shared(name: str) -> Path:
    return shared_path("openfaas", name)


def helm_free(template: str) -> str:
    """A Helm template as YAML: `{{ "{{" }}` escapes become braces, lines holding only a directive
    go, and every other action becomes a plain word (enough for the rules inside `data:`)."""
    literal = {'{{ "{{" }}': "\0open\0", '{{ "}}" }}': "\0close\0"}
    for escape, marker in literal.items():
        template = template.replace(escape, marker)
    template = re.sub(r"(?m)^\s*\{\{-?[^}]*-?\}\}\s*$\n?", "", template)
    template = re.sub(r"\{\{-?[^}]*-?\}\}", "openfaas", template)
    return template.replace("\0open\0", "{{").replace("\0close\0", "}}")


def ce_chart_rules() -> list[dict[str, Any]]:
    """The rule groups inside the CE chart's prometheus-config ConfigMap."""
    config_map = yaml.safe_load(helm_free(shared("chart-prometheus-cfg.yaml").read_text()))
    rule_files = [text for name, text in config_map["data"].items() if name != "prometheus.yml"]
    assert rule_files, "the CE chart's ConfigMap holds no rule file"
    groups = [group for text in rule_files for group in yaml.safe_load(text)["groups"]]
    return groups


def dashboard_queries() -> dict[str, str]:
    """Every panel query of the community dashboard, Grafana variables substituted."""
    dashboard = json.loads(shared("grafana-dashboard.json").read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield item
            yield from panels(item.get("panels", []))

    tops = dashboard.get("panels", []) + [p for row in dashboard.get("rows", []) for p in row["panels"]]
    queries = {}
    for panel in panels(tops):
        for n, target in enumerate(panel.get("targets", [])):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"a Grafana variable is left in {expr!r}"
            queries[f"panel {panel['title']!r} #{n}"] = expr
    return queries


def every_expression() -> dict[str, str]:
    exprs = {
        f"chart {rule.get('alert') or rule['record']}": rule["expr"]
        for group in ce_chart_rules()
        for rule in group["rules"]
    }
    exprs |= dashboard_queries()
    exprs |= {name: rule["expr"] for name, rule in PRO_RULES.items()}
    return exprs


# -- the stack: functions, proxy, traffic, Prometheus with the rules loaded ------------------------------


class RulesPrometheus(PrometheusServer):
    """The tests' Prometheus, with rule files loaded as OpenFaaS's chart loads them."""

    def __init__(self, *, rule_files: list[Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rule_files = rule_files

    def config(self) -> dict[str, object]:
        return super().config() | {"rule_files": [str(path) for path in self.rule_files]}


@dataclass
class Stack:
    proxy: Proxy
    prometheus: RulesPrometheus
    session: aiohttp.ClientSession

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.admin_port}/metrics"

    async def api(self, path: str, **params: str) -> Any:
        async with self.session.get(self.prometheus.url + path, params=params) as response:
            body = await response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    async def evaluate(self, expr: str) -> list[dict[str, Any]]:
        """The series an instant query returns; a scalar counts as one series unless it is NaN."""
        data = await self.api("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [] if math.isnan(float(data["result"][1])) else [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", f"{expr!r} returned a {data['resultType']}"
        return data["result"]  # type: ignore[no-any-return]


async def _drive(session: aiohttp.ClientSession, url: str, *, pause: float) -> None:
    while True:
        async with session.get(url) as response:
            await response.read()
        await asyncio.sleep(pause)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    binary = require_binary()
    every_expression()  # the OpenFaaS files are there and parse, before anything starts
    provider = FakeProvider()
    await provider.add("hello")
    await provider.add(
        "busy", labels={"com.openfaas.scale.type": "capacity", "com.openfaas.scale.target": "5"}
    )
    await provider.add(
        "crunch", labels={"com.openfaas.scale.type": "cpu", "com.openfaas.scale.target": "500"}
    )
    await provider.add(
        "queued", labels={"com.openfaas.scale.type": "queue", "com.openfaas.scale.target": "10"}
    )
    await provider.add("broken", labels={"com.openfaas.scale.min": "lots"})
    proxy = Proxy(settings=ProxySettings(host="127.0.0.1", port=0, admin_port=0), provider=provider)
    await proxy.start()
    data_dir = tmp_path_factory.mktemp("openfaas-prometheus")
    rules = data_dir / "rules"
    rules.mkdir()
    (rules / "chart.yml").write_text(yaml.safe_dump({"groups": ce_chart_rules()}))
    pro_group = {"name": "pro", "rules": list(PRO_RULES.values())}
    (rules / "pro.yml").write_text(yaml.safe_dump({"groups": [pro_group]}))
    prometheus = RulesPrometheus(
        rule_files=[rules / "chart.yml", rules / "pro.yml"],
        data_dir=data_dir,
        targets=[f"127.0.0.1:{proxy.admin_port}"],
        scrape_interval=1.0,
        binary=binary,
    )
    base = f"http://127.0.0.1:{proxy.port}/function"
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    traffic = [
        asyncio.create_task(_drive(session, f"{base}/hello", pause=0.03)),  # about 25 req/s
        *(asyncio.create_task(_drive(session, f"{base}/busy/slow?seconds=0.5", pause=0)) for _ in range(3)),
        asyncio.create_task(_drive(session, f"{base}/crunch", pause=0.5)),
    ]
    try:
        prometheus.start()
        yield Stack(proxy=proxy, prometheus=prometheus, session=session)
    finally:
        for task in traffic:
            task.cancel()
        for task in traffic:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await task
        prometheus.stop()
        await session.close()
        await proxy.stop()
        await provider.close()


# -- the expressions -------------------------------------------------------------------------------------


async def test_every_chart_rule_dashboard_query_and_pro_rule_returns_data(stack: Stack) -> None:
    exprs = every_expression()
    assert set(NEEDS_ANOTHER_EXPORTER) <= set(exprs)
    wanted = {name: expr for name, expr in exprs.items() if name not in NEEDS_ANOTHER_EXPORTER}
    empty: dict[str, str] = dict(wanted)

    async def refresh() -> None:
        for name in list(empty):
            if await stack.evaluate(empty[name]):
                del empty[name]

    # rate() over the chart's 10 s window needs two scrapes inside it; 40 s bounds a slow machine.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40
    while empty and loop.time() < deadline:
        await refresh()
        await asyncio.sleep(0.5)
    assert not empty, f"no data from: {empty}"
    hello = await stack.evaluate(wanted["chart APIHighInvocationRate"])
    assert [s["metric"]["function_name"] for s in hello] == [HELLO]


async def test_only_the_kubelet_and_queue_worker_inputs_are_missing_from_the_exempt_rules(
    stack: Stack,
) -> None:
    for name, needed in NEEDS_ANOTHER_EXPORTER.items():
        rule = PRO_RULES[name]
        assert needed in metric_names(rule["expr"])
        # The rest of the rule selects a function of its type: with `needed` there, it would record.
        kind = rule["labels"]["scaling_type"]
        of_kind = f'max by (function_name) (gateway_service_target_load{{scaling_type="{kind}"}}) > 0'
        await stack.prometheus.wait_for_series(of_kind, lambda result: bool(result), timeout=20)
        assert await stack.evaluate(needed) == [], f"{needed} is not supposed to exist here"
        assert await stack.evaluate(rule["expr"]) == [], f"{name} returned data without {needed}"


async def test_pro_recording_rules_give_each_function_the_load_of_its_scaling_type(stack: Stack) -> None:
    loads: dict[str, str] = {}  # function_name -> scaling_type of its recorded load
    started: set[str] = set()

    busy_loads: list[float] = []

    async def recorded() -> bool:
        # Recorded series appear at the group's next evaluation, and a subquery's steps are aligned
        # to multiples of 5 s: they can lag a direct query by a few seconds. The first evaluation of
        # busy's may come from a scrape before its slow requests were in flight (0): wait past it.
        answer = await stack.evaluate(PRO_LOAD)
        loads.update({s["metric"]["function_name"]: s["metric"]["scaling_type"] for s in answer})
        busy_loads[:] = [float(s["value"][1]) for s in answer if s["metric"]["function_name"] == BUSY]
        started.update(s["metric"]["function_name"] for s in await stack.evaluate(PRO_STARTED))
        return {HELLO, BUSY} <= loads.keys() and HELLO in started and any(v >= 1 for v in busy_loads)

    await _until_async(
        recorded,
        within=30,
        what=lambda: f"hello and busy (at least 1) recorded; got {loads}, busy {busy_loads}, {started}",
    )
    assert loads[HELLO] == "rps"
    assert loads[BUSY] == "capacity"
    assert CRUNCH not in loads  # its load comes from the kubelet
    assert QUEUED not in loads  # and its from the queue-worker
    assert BROKEN not in loads  # no scaling type: its labels are invalid
    busy = await stack.evaluate(f'{PRO_LOAD}{{function_name="{BUSY}"}}')
    assert float(busy[0]["value"][1]) >= 1  # three slow requests are always in flight
    assert BROKEN not in started  # idle: absent, not zero


async def test_the_chart_alert_that_scales_ce_functions_fires_for_the_function_above_5_per_second(
    stack: Stack,
) -> None:
    firing: list[dict[str, Any]] = []

    async def fired() -> bool:
        alerts = (await stack.api("/api/v1/alerts"))["alerts"]
        firing[:] = [a for a in alerts if a["state"] == "firing"]
        return bool(firing)

    await _until_async(fired, within=40, what=lambda: f"APIHighInvocationRate firing; got {firing}")
    (alert,) = firing
    assert alert["labels"]["alertname"] == "APIHighInvocationRate"
    assert alert["labels"]["function_name"] == HELLO
    assert alert["annotations"]["summary"] == f'High invocation total on "{HELLO}"'


# -- the exposition itself ---------------------------------------------------------------------------------


async def test_the_scrape_types_and_buckets_every_family_as_the_gateway_writes_them(stack: Stack) -> None:
    await until(lambda: HELLO in stack.proxy.invocation_stats(), within=10, what="traffic to hello")
    async with stack.session.get(stack.metrics_url) as response:
        text = await response.text()
    types = dict(re.findall(r"(?m)^# TYPE (\S+) (\S+)$", text))
    assert {name: types.get(name) for name in GATEWAY_TYPES} == GATEWAY_TYPES
    sample_names = set(re.findall(r"(?m)^([a-z_:]+)[{ ]", text))
    assert "gateway_function_invocation_started" in sample_names
    assert "gateway_function_invocation_started_total" not in sample_names
    bounds = re.findall(
        rf'(?m)^gateway_functions_seconds_bucket\{{code="200",function_name="{HELLO}",le="([^"]+)"\}}', text
    )
    assert bounds == GO_DEFAULT_BUCKETS
    assert re.search(r'(?m)^gateway_functions_seconds_\w+\{.*le="\d+\.0"', text) is None
    assert f'gateway_service_target_load{{function_name="{BUSY}",scaling_type="capacity"}} 5\n' in text
    assert f'gateway_service_target_load{{function_name="{QUEUED}",scaling_type="queue"}} 10\n' in text
    assert f'gateway_service_count{{function_name="{BROKEN}"}} 1\n' in text
    assert f'gateway_service_ready_count{{function_name="{BROKEN}"}} 1\n' in text
    assert not re.search(rf'(?m)^gateway_service_(target|min|target_load)\{{function_name="{BROKEN}"', text)
    assert f'gateway_service_min{{function_name="{HELLO}"}} 1\n' in text
    assert f'gateway_service_target{{function_name="{HELLO}"}} 50\n' in text


async def test_prometheus_stores_go_bucket_bounds_and_the_counter_type(stack: Stack) -> None:
    await stack.prometheus.wait_for_series(
        f'gateway_functions_seconds_bucket{{function_name="{HELLO}",le="1"}}', lambda r: bool(r), timeout=20
    )
    assert (
        await stack.evaluate('gateway_functions_seconds_bucket{le="1.0"}') == []
    )  # 2.x: not the same series
    metadata = await stack.api("/api/v1/metadata", metric="gateway_function_invocation_started")
    assert [entry["type"] for entry in metadata["gateway_function_invocation_started"]] == ["counter"]


async def test_behind_a_real_gateway_the_proxy_counts_under_its_own_names_only() -> None:
    provider = FakeProvider()
    await provider.add("hello")
    settings = ProxySettings(host="127.0.0.1", port=0, admin_port=0, gateway_metrics=False)
    proxy = Proxy(settings=settings, provider=provider)
    await proxy.start()
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/", "/status/500"):
                async with session.get(f"http://127.0.0.1:{proxy.port}/function/hello{path}") as response:
                    await response.read()
            async with session.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as response:
                text = await response.text()
    finally:
        await proxy.stop()
        await provider.close()
    assert "gateway_" not in text  # the gateway in front exports those itself: nothing counted twice
    types = dict(re.findall(r"(?m)^# TYPE (\S+) (\S+)$", text))
    own = {name.replace("gateway_", "autoscaler_proxy_"): kind for name, kind in GATEWAY_TYPES.items()}
    invocation = {name: kind for name, kind in own.items() if "service" not in name}
    assert {name: types.get(name) for name in invocation} == invocation
    assert f'autoscaler_proxy_function_invocation_total{{code="500",function_name="{HELLO}"}} 1\n' in text
    assert f'autoscaler_proxy_function_invocation_started{{function_name="{HELLO}"}} 2\n' in text
    assert (
        f'autoscaler_proxy_functions_seconds_bucket{{code="200",function_name="{HELLO}",le="1"}} 1\n' in text
    )


async def _until_async(
    condition: Callable[[], Awaitable[bool]], *, within: float, what: Callable[[], str]
) -> None:
    """Poll an asynchronous `condition` every 0.25 s; after `within` seconds fail with `what()`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what()}")
        await asyncio.sleep(0.25)
