"""`autoscaler explain NAME` against a live cluster: labels, load, current and desired replicas, reason."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.apiserver import FakeApiServer
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory

LABELS = {"faas_function": "shout", "com.openfaas.scale.type": "capacity", "com.openfaas.scale.target": "5"}


async def explain(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscaler", "explain", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def live(prometheus_factory: PrometheusFactory, tmp_path: Path) -> AsyncIterator[list[str]]:
    async with FakeApiServer() as api:
        api.add_deployment("shout", labels=LABELS, replicas=2)
        api.add_deployment("broken", labels={"faas_function": "broken", "com.openfaas.scale.max": "many"})
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        with GatewayExporter() as exporter:
            exporter.set_function("shout.openfaas-fn", rps=3.0, inflight=15)
            prometheus = prometheus_factory.start(targets=[exporter.target], scrape_interval=0.5)
            await prometheus.wait_for_series(
                "sum by (function_name) (gateway_function_invocation_inflight)",
                lambda series: series.get("shout.openfaas-fn") == 15,
            )
            yield ["--prometheus-url", prometheus.url, "--kubeconfig", str(kubeconfig)]


async def test_explain_name_shows_labels_load_replicas_and_reason(live: list[str]) -> None:
    code, out, err = await explain("shout", *live, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["function"] == "shout.openfaas-fn"
    assert result["labels"] == LABELS
    assert (result["load"], result["current"], result["desired"]) == (15, 2, 4)
    assert result["code"] == "ScaleUp"
    assert "capacity load 15 / (target 5 x 0.9)" in result["reason"]


async def test_explain_name_reports_invalid_labels_and_exits_2(live: list[str]) -> None:
    code, out, _ = await explain("broken.openfaas-fn", *live)
    assert code == 2
    assert "com.openfaas.scale.max='many' is invalid" in out


async def test_explain_an_unknown_function_says_so_and_exits_2(live: list[str]) -> None:
    code, _, err = await explain("ghost", *live)
    assert code == 2
    assert "no function ghost.openfaas-fn" in err
