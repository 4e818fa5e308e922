"""The two topologies build, validate and fit the OpenFaaS chart they sit next to.

`overlays/openfaas/` puts the proxy behind the gateway as its functions provider; `overlays/standalone/`
makes the proxy the entry point. (They live beside `manifests/`, not inside it: kustomize refuses an
overlay inside the directory of its own base, "cycle detected".) Facts about the chart come from
`../shared/openfaas/` where it has the file, and otherwise from openfaas/faas-netes
`chart/openfaas/templates/gateway-dep.yaml` and `queueworker-ce-dep.yaml`, transcribed below.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry
from yarl import URL

from autoscaler.config import DEFAULT_QUERIES, MetricsSettings, ProviderSettings, ProxySettings
from autoscaler.proxy import Proxy
from tests.manifests.conftest import MANIFESTS, ROOT, Obj, build, kubectl, only, pod_specs
from tests.manifests.crd_schemas import BY_KIND
from tests.manifests.promql import exported_names, metric_names
from tests.support.fakeprovider import FakeProvider

OVERLAYS = ROOT / "overlays"
SHARED = ROOT.parent / "shared" / "openfaas"
KUBERNETES_VERSION = "1.33"

# From templates/gateway-dep.yaml: the gateway pods' labels, the faas-netes container's port (env
# port=8081, containerPort 8081) and the provider URL the gateway is given (functions_provider_url).
CHART_GATEWAY_POD_LABELS = {"app": "gateway"}
CHART_GATEWAY_POD_ANNOTATIONS = {"prometheus.io/scrape": "true", "prometheus.io/port": "8082"}
CHART_FAAS_NETES_PORT = 8081
CHART_GATEWAY_PORT = 8080
CHART_RELEASE_NAMESPACE = "openfaas"


def _env(obj: Obj, container: str) -> dict[str, str]:
    (found,) = [c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == container]
    return {e["name"]: e["value"] for e in found.get("env", []) if "value" in e}


def _validate(obj: Obj) -> None:
    if obj["kind"] in BY_KIND:
        jsonschema.validate(obj, BY_KIND[obj["kind"]])
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.fixture
def openfaas() -> list[Obj]:
    return build(OVERLAYS / "openfaas")


@pytest.fixture
def standalone() -> list[Obj]:
    return build(OVERLAYS / "standalone")


# -- both overlays build and are valid -----------------------------------------------------------


@pytest.mark.parametrize("overlay", ["openfaas", "openfaas-namespaces", "standalone"])
def test_each_overlay_builds_and_every_object_validates_against_the_schemas(overlay: str) -> None:
    objects = build(OVERLAYS / overlay)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("Deployment", "autoscaler-controller"), ("Deployment", "autoscaler-proxy")} <= kinds
    for obj in objects:
        _validate(obj)


def test_the_openfaas_overlay_leaves_the_openfaas_namespace_to_openfaas(
    openfaas: list[Obj], standalone: list[Obj]
) -> None:
    assert [o for o in openfaas if o["kind"] == "Namespace"] == []
    assert [o["metadata"]["name"] for o in standalone if o["kind"] == "Namespace"] == ["openfaas"]
    assert {o["metadata"].get("namespace") for o in openfaas if o["kind"] != "ClusterRole"} <= {
        "openfaas",
        "openfaas-fn",
    }


# -- behind the gateway: the provider URL reaches faas-netes -------------------------------------


def test_the_proxy_s_provider_url_names_a_service_that_reaches_the_chart_s_faas_netes(
    openfaas: list[Obj],
) -> None:
    env = _env(only(openfaas, "Deployment", "autoscaler-proxy"), "proxy")
    url = URL(env["AUTOSCALER_PROVIDER_URL"])
    assert ProxySettings(provider_url=str(url)).provider_url == str(url)
    name, namespace, *rest = (url.host or "").split(".")
    assert rest in ([], ["svc"], ["svc", "cluster", "local"])
    service = only(openfaas, "Service", name)
    assert service["metadata"]["namespace"] == namespace == CHART_RELEASE_NAMESPACE
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    # The chart's gateway pods, on the faas-netes container's port (not the gateway's own 8080).
    selector = service["spec"]["selector"]
    assert all(CHART_GATEWAY_POD_LABELS.get(k) == v for k, v in selector.items())
    assert port["targetPort"] == CHART_FAAS_NETES_PORT != CHART_GATEWAY_PORT


def test_the_proxy_serves_the_chart_s_function_namespace_by_default(openfaas: list[Obj]) -> None:
    chart = yaml.safe_load((SHARED / "chart-values.yaml").read_text())
    (container,) = only(openfaas, "Deployment", "autoscaler-proxy")["spec"]["template"]["spec"]["containers"]
    # The gateway sends /function/NAME without a namespace for calls in its function_namespace.
    assert f"--default-namespace={chart['functionNamespace']}" in container["args"]


def test_the_standalone_proxy_has_no_provider_and_exports_the_gateway_s_names(standalone: list[Obj]) -> None:
    env = _env(only(standalone, "Deployment", "autoscaler-proxy"), "proxy")
    assert "AUTOSCALER_PROVIDER_URL" not in env
    assert env["AUTOSCALER_GATEWAY_METRICS"] == "true"
    controller = _env(only(standalone, "Deployment", "autoscaler-controller"), "controller")
    assert not [name for name in controller if name.startswith("AUTOSCALER_QUERY_")]  # the defaults
    assert "gateway_function_invocation_total" in metric_names(DEFAULT_QUERIES["rps"])


# -- behind the gateway: who is scraped, and what the controller reads ---------------------------


def _chart_scrape_config() -> dict[str, Any]:
    text = (SHARED / "chart-prometheus-cfg.yaml").read_text()
    block = text.split("prometheus.yml: |", 1)[1].split("alert.rules.yml: |", 1)[0]
    block = block.replace("{{ .Release.Namespace }}", CHART_RELEASE_NAMESPACE)
    config: dict[str, Any] = yaml.safe_load(textwrap.dedent(block))
    return config


def _relabel(rules: list[dict[str, Any]], meta: dict[str, str]) -> dict[str, str] | None:
    """Prometheus relabelling for the actions the chart's job uses; None when the target is dropped."""
    labels = dict(meta)
    for rule in rules:
        raw = rule.get("regex", "(.*)")
        raw = str(raw).lower() if isinstance(raw, bool) else str(raw)  # YAML reads `regex: true` as a bool
        regex = re.compile(f"^(?:{raw})$")
        action = rule.get("action", "replace")
        if action == "labelmap":
            for name, value in list(labels.items()):
                if regex.match(name):
                    labels[regex.sub(rule.get("replacement", "$1").replace("$", "\\"), name)] = value
            continue
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule.get("source_labels", []))
        match = regex.match(value)
        if action == "keep":
            if not match:
                return None
        elif action == "replace" and match:
            labels[rule["target_label"]] = match.expand(rule.get("replacement", "$1").replace("$", "\\"))
    return {k: v for k, v in labels.items() if not k.startswith("__")} | {
        "__address__": labels["__address__"]
    }


def _pod_meta(labels: dict[str, str], annotations: dict[str, str], ip: str) -> dict[str, str]:
    meta = {"__address__": f"{ip}:80", "__meta_kubernetes_namespace": CHART_RELEASE_NAMESPACE}
    meta["__meta_kubernetes_pod_name"] = "pod"
    for key, value in labels.items():
        meta["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    for key, value in annotations.items():
        meta["__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    return meta


def _targets(openfaas: list[Obj]) -> dict[str, dict[str, str] | None]:
    (job,) = [j for j in _chart_scrape_config()["scrape_configs"] if j["job_name"] == "openfaas-pods"]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [CHART_RELEASE_NAMESPACE]
    pods = {"gateway": (CHART_GATEWAY_POD_LABELS, CHART_GATEWAY_POD_ANNOTATIONS)}
    for name in ("autoscaler-proxy", "autoscaler-controller"):
        template = only(openfaas, "Deployment", name)["spec"]["template"]["metadata"]
        pods[name] = (template["labels"], template["annotations"])
    return {name: _relabel(job["relabel_configs"], _pod_meta(*pod, "10.0.0.1")) for name, pod in pods.items()}


def test_the_chart_s_openfaas_pods_job_scrapes_the_proxy_and_the_controller_on_their_admin_ports(
    openfaas: list[Obj],
) -> None:
    targets = _targets(openfaas)
    proxy, controller, gateway = (
        targets["autoscaler-proxy"],
        targets["autoscaler-controller"],
        targets["gateway"],
    )
    assert proxy is not None
    assert controller is not None
    assert gateway is not None
    assert proxy["__address__"] == "10.0.0.1:8082"
    assert controller["__address__"] == "10.0.0.1:8081"
    assert gateway["app"] == "gateway"
    assert proxy.get("app") != "gateway"
    assert controller.get("app") != "gateway"


def _matchers(expr: str, metric: str) -> dict[str, str]:
    found = re.search(re.escape(metric) + r"\{([^}]*)\}", expr)
    return dict(re.findall(r'(\w+)="([^"]*)"', found.group(1))) if found else {}


def test_with_the_gateway_s_series_exported_by_the_gateway_the_queries_read_each_series_from_its_source(
    openfaas: list[Obj],
) -> None:
    proxy_env = _env(only(openfaas, "Deployment", "autoscaler-proxy"), "proxy")
    assert proxy_env["AUTOSCALER_GATEWAY_METRICS"] == "false"
    env = _env(only(openfaas, "Deployment", "autoscaler-controller"), "controller")
    settings = MetricsSettings(
        query_rps=env["AUTOSCALER_QUERY_RPS"],
        query_started=env["AUTOSCALER_QUERY_STARTED"],
        query_inflight=env["AUTOSCALER_QUERY_INFLIGHT"],
        query_source=env["AUTOSCALER_QUERY_SOURCE"],
    )
    targets = _targets(openfaas)
    for expr, metric in (
        (settings.query_rps, "gateway_function_invocation_total"),
        (settings.query_started, "gateway_function_invocation_started"),
        (settings.query_source, "gateway_service_count"),  # the proof the source is up
    ):
        assert metric_names(expr) == {metric}
        assert expr.startswith(("sum by (function_name) ", "max by (function_name) "))
        matchers = _matchers(expr, metric)
        for name, target in targets.items():
            assert target is not None
            selected = all(target.get(k) == v for k, v in matchers.items())
            assert selected == (name == "gateway"), (expr, name)  # the gateway's series, and only its own
    assert "[{window}]" in settings.query_rps
    assert metric_names(settings.query_inflight) == {"autoscaler_proxy_function_invocation_inflight"}


async def test_the_in_flight_series_the_controller_reads_is_one_the_proxy_exports_with_gateway_metrics_off(
    openfaas: list[Obj],
) -> None:
    env = _env(only(openfaas, "Deployment", "autoscaler-controller"), "controller")
    registry = CollectorRegistry()
    settings = ProxySettings(host="127.0.0.1", port=0, admin_port=0, gateway_metrics=False)
    Proxy(settings=settings, provider=FakeProvider(), registry=registry)
    names = exported_names([registry])
    assert metric_names(env["AUTOSCALER_QUERY_INFLIGHT"]) <= names
    assert not {name for name in names if name.startswith("gateway_function")}


# -- the switch-over patches for the chart's own Deployments -------------------------------------

# The chart's env for the two Deployments the switch-over changes (values from chart-values.yaml).
_CHART_GATEWAY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: gateway, namespace: openfaas}
spec:
  selector: {matchLabels: {app: gateway}}
  template:
    metadata: {labels: {app: gateway}}
    spec:
      containers:
        - name: gateway
          image: ghcr.io/openfaas/gateway:0.27.13
          env:
            - {name: upstream_timeout, value: "1m"}
            - {name: functions_provider_url, value: "http://127.0.0.1:8081/"}
            - {name: direct_functions, value: "false"}
            - {name: scale_from_zero, value: "true"}
        - name: faas-netes
          image: ghcr.io/openfaas/faas-netes:0.18.17
          env: [{name: port, value: "8081"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: queue-worker, namespace: openfaas}
spec:
  selector: {matchLabels: {app: queue-worker}}
  template:
    metadata: {labels: {app: queue-worker}}
    spec:
      containers:
        - name: queue-worker
          image: ghcr.io/openfaas/queue-worker:0.14.2
          env:
            - {name: faas_gateway_address, value: "gateway.openfaas.svc.cluster.local"}
            - {name: max_inflight, value: "1"}
"""


def test_the_post_renderer_points_the_gateway_at_the_proxy_and_the_queue_worker_at_the_gateway(
    openfaas: list[Obj],
) -> None:
    done = subprocess.run(
        ["sh", str(OVERLAYS / "openfaas" / "switch" / "post-render.sh")],
        input=_CHART_GATEWAY, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "KUBECTL": kubectl()},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    gateway = _env(only(objects, "Deployment", "gateway"), "gateway")
    url = URL(gateway["functions_provider_url"])
    service = only(openfaas, "Service", (url.host or "").split(".")[0])
    assert service["metadata"]["name"] == "autoscaler-proxy"
    assert url.port in [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]
    assert gateway["direct_functions"] == "false"  # left as the chart has it
    assert gateway["upstream_timeout"] == "1m"
    assert _env(only(objects, "Deployment", "gateway"), "faas-netes") == {"port": "8081"}
    worker = _env(only(objects, "Deployment", "queue-worker"), "queue-worker")
    assert worker == {
        "faas_gateway_address": "gateway.openfaas.svc.cluster.local",
        "max_inflight": "1",
        "gateway_invoke": "true",
    }


def test_the_post_renderer_fails_loudly_on_input_that_is_not_yaml() -> None:
    done = subprocess.run(
        ["sh", str(OVERLAYS / "openfaas" / "switch" / "post-render.sh")],
        input="{ not: [yaml", capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "KUBECTL": kubectl()},
    )  # fmt: skip
    assert done.returncode != 0


# -- the README names only Helm values the chart has ---------------------------------------------


def _has(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_helm_value_the_manifests_readme_names_exists_in_the_chart() -> None:
    readme = (ROOT / "manifests" / "README.md").read_text()
    named = set(re.findall(r"--set ([A-Za-z][\w.]*)=", readme))
    named |= set(re.findall(r"`([a-z][A-Za-z]*(?:\.[a-zA-Z]+)+)=(?:true|false|[^`]*)`", readme))
    assert {
        "gateway.scaleFromZero",
        "gateway.directFunctions",
        "alertmanager.create",
        "autoscaler.enabled",
    } <= named
    values = yaml.safe_load((SHARED / "chart-values.yaml").read_text())
    missing = sorted(name for name in named if not _has(values, name))
    assert missing == [], f"manifests/README.md names Helm values the chart does not have: {missing}"


def test_the_readme_check_would_catch_a_misspelt_value() -> None:
    values = yaml.safe_load((SHARED / "chart-values.yaml").read_text())
    assert _has(values, "gateway.scaleFromZero")
    assert not _has(values, "gateway.scaleFromZer0")
    assert not _has(values, "queueWorker.gatewayInvoke")  # older charts only: the switch patches it


def test_the_overlay_files_exist_where_the_readme_says(tmp_path: Path) -> None:
    readme = (ROOT / "manifests" / "README.md").read_text()
    for path in re.findall(r"(overlays/[\w./-]+\.(?:yaml|sh))", readme):
        assert (ROOT / path).is_file(), path


def test_the_namespaces_overlay_follows_annotated_namespaces_in_both_and_grants_it_cluster_wide() -> None:
    objects = build(OVERLAYS / "openfaas-namespaces")
    for name, container in (("autoscaler-controller", "controller"), ("autoscaler-proxy", "proxy")):
        env = _env(only(objects, "Deployment", name), container)
        assert env["AUTOSCALER_NAMESPACES_ANNOTATED"] == "openfaas=*"
        ProviderSettings(namespaces_annotated=env["AUTOSCALER_NAMESPACES_ANNOTATED"])  # a valid value
        assert env[
            "AUTOSCALER_PROVIDER_URL" if container == "proxy" else "AUTOSCALER_QUERY_RPS"
        ]  # still openfaas
    bound = {o["roleRef"]["name"] for o in objects if o["kind"] == "ClusterRoleBinding"}
    assert {"autoscaler-namespaces", "autoscaler-functions"} <= bound


@pytest.mark.parametrize("overlay", sorted(path.name for path in OVERLAYS.iterdir() if path.is_dir()))
def test_every_container_of_the_project_runs_the_tag_the_base_pins(overlay: str) -> None:
    # The async overlay's queue-worker ran `autoscaler` (:latest): the base's `images:` reaches the
    # base's own objects only.
    pinned = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["images"]
    [entry] = [image for image in pinned if image["name"] == "autoscaler"]
    images = {
        (name, container["image"])
        for name, spec in pod_specs(build(OVERLAYS / overlay))
        for container in (*spec.get("initContainers", ()), *spec["containers"])
        if container["image"].partition(":")[0] == "autoscaler"
    }
    assert images, "no container of the project in the overlay"
    assert {image for _, image in images} == {f"autoscaler:{entry['newTag']}"}, images
