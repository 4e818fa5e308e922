"""`autoscaler explain NAME` against a live cluster: labels, load, current and desired replicas, reason.

Functions come in the shapes OpenFaaS makes them (faas-netes: labels on the pod template; the CRD
operator: owned by a Function whose spec is in an annotation) and as hand-written Deployments.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.apiserver import FakeApiServer
from tests.support.cli import run_cli_async
from tests.support.exporter import GatewayExporter
from tests.support.prometheus import PrometheusFactory

LABELS = {"faas_function": "shout", "com.openfaas.scale.type": "capacity", "com.openfaas.scale.target": "5"}
CAPACITY_5 = {"com.openfaas.scale.type": "capacity", "com.openfaas.scale.target": "5"}

# Every test only reads the cluster and Prometheus: they share one of each (and one event loop).
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def explain(*args: str) -> tuple[int, str, str]:
    done = await run_cli_async("explain", *args)
    return done.returncode, done.stdout, done.stderr


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(
    module_prometheus_factory: PrometheusFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[str]]:
    async with FakeApiServer() as api:
        api.add_deployment("shout", labels=LABELS, replicas=2)
        api.add_deployment("broken", labels={"faas_function": "broken", "com.openfaas.scale.max": "many"})
        # faas-netes' shape, with a hand-made label on the Deployment that the pod template overrides.
        api.add_faas_netes_function("figlet", labels=CAPACITY_5, replicas=2)
        api.update_deployment("figlet", labels={"com.openfaas.scale.target": "50", "team": "fonts"})
        api.add_crd_function("nodeinfo", labels={**CAPACITY_5, "com.openfaas.scale.max": "3"}, replicas=2)
        kubeconfig = api.write_kubeconfig(tmp_path_factory.mktemp("explain") / "kubeconfig")
        with GatewayExporter() as exporter:
            for name in ("shout", "figlet", "nodeinfo"):
                exporter.set_function(f"{name}.openfaas-fn", rps=3.0, inflight=15)
            prometheus = module_prometheus_factory.start(targets=[exporter.target], scrape_interval=0.5)
            await prometheus.wait_for_series(
                "sum by (function_name) (gateway_function_invocation_inflight)",
                lambda series: all(
                    series.get(f"{name}.openfaas-fn") == 15 for name in ("shout", "figlet", "nodeinfo")
                ),
            )
            yield ["--prometheus-url", prometheus.url, "--kubeconfig", str(kubeconfig)]


async def test_explain_name_shows_labels_load_replicas_and_reason(live: list[str]) -> None:
    code, out, err = await explain("shout", *live, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["function"] == "shout.openfaas-fn"
    assert result["labels"] == {**LABELS, "app": "shout"}  # `app` from the pod template
    assert {result["label_sources"][k] for k in LABELS} == {"deployment"}
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


async def test_explain_a_faas_netes_function_reads_its_pod_template_and_names_the_conflict(
    live: list[str],
) -> None:
    code, out, err = await explain("figlet", *live, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["labels"]["com.openfaas.scale.target"] == "5"  # the pod template's, not the Deployment's 50
    assert result["label_sources"]["com.openfaas.scale.target"] == "both"
    assert result["label_sources"]["com.openfaas.scale.type"] == "template"
    assert result["label_sources"]["team"] == "deployment"
    assert result["conflicts"] == [
        "label com.openfaas.scale.target: the pod template says '5', the Deployment's metadata '50'; "
        "using the pod template's '5'"
    ]
    assert (result["load"], result["current"], result["desired"]) == (15, 2, 4)
    assert "owner" not in result


async def test_explain_a_faas_netes_function_in_text_says_where_each_label_came_from(live: list[str]) -> None:
    code, out, err = await explain("figlet", *live)
    assert code == 0, err
    lines = out.splitlines()
    assert "com.openfaas.scale.type=capacity (pod template)" in lines[0]
    assert "team=fonts (Deployment)" in lines[0]
    assert "faas_function=figlet (pod template and Deployment)" in lines[0]
    assert any(line.startswith("conflict: label com.openfaas.scale.target:") for line in lines)


async def test_explain_a_crd_function_shows_its_owner_and_the_owners_spec(live: list[str]) -> None:
    code, out, err = await explain("nodeinfo", *live, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["owner"] == "Function/nodeinfo"
    assert result["owner_spec"]["image"] == "example.com/nodeinfo:latest"
    assert result["owner_spec"]["labels"]["com.openfaas.scale.max"] == "3"
    assert result["label_sources"]["controller"] == "template"
    assert "conflicts" not in result
    assert (result["load"], result["current"], result["desired"]) == (15, 2, 3)  # 4, capped by max 3

    code, out, err = await explain("nodeinfo", *live)
    assert code == 0, err
    assert "owner: Function/nodeinfo" in out.splitlines()
    assert any(
        line.startswith('owner spec: {"image": "example.com/nodeinfo:latest"') for line in out.splitlines()
    )
