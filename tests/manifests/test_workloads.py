"""The two Deployments: hardened, bounded, probed on the admin port, started with flags the CLI takes."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from pydantic import BaseModel

from autoscaler.cli import _parser
from autoscaler.config import ControllerSettings, ProviderSettings, ProxySettings, build
from tests.manifests.conftest import Obj, only, pod_specs


def settings_overrides(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The flags of `model` the manifest gives (None: not given), as the CLI hands them to the settings."""
    given = vars(args)
    return {name: given[name] for name in model.model_fields if given.get(name) is not None}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _args(base: list[Obj], deployment: str) -> argparse.Namespace:
    (container,) = only(base, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return _parser().parse_args(container["args"])


def test_every_container_runs_non_root_read_only_without_capabilities_under_runtime_default_seccomp(
    base: list[Obj], example: list[Obj]
) -> None:
    specs = pod_specs(base) + pod_specs(example)
    assert {name for name, _ in specs} == {"autoscaler-controller", "autoscaler-proxy", "figlet"}
    for name, spec in specs:
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, name
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert pod.get("runAsUser", 0) > 0, name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("runAsNonRoot") is True, where
            assert context.get("capabilities") == {"drop": ["ALL"]}, where
            assert context.get("seccompProfile") == {"type": "RuntimeDefault"}, where
            assert not context.get("privileged", False), where
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert set(resources.get(bound, {})) == {"cpu", "memory"}, f"{where}: {bound}"


def test_probes_ask_the_admin_port_that_the_process_is_told_to_serve(base: list[Obj]) -> None:
    wanted = {
        "autoscaler-controller": build(
            ControllerSettings, settings_overrides(_args(base, "autoscaler-controller"), ControllerSettings)
        ).admin_port,
        "autoscaler-proxy": build(
            ProxySettings, settings_overrides(_args(base, "autoscaler-proxy"), ProxySettings)
        ).admin_port,
    }
    for name, spec in pod_specs(base):
        (container,) = spec["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert (
            ports["admin"] == wanted[name] == {"autoscaler-controller": 8081, "autoscaler-proxy": 8082}[name]
        )
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{name} {probe}"
            assert ports.get(get["port"], get["port"]) == wanted[name], f"{name} {probe} asks another port"


def test_the_controller_runs_two_replicas_with_leader_election_on_a_lease_it_may_use(base: list[Obj]) -> None:
    deployment = only(base, "Deployment", "autoscaler-controller")
    assert deployment["spec"]["replicas"] == 2
    args = _args(base, "autoscaler-controller")
    assert args.command == "run"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["AUTOSCALER_LEASE_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    settings = build(
        ControllerSettings, settings_overrides(args, ControllerSettings) | {"lease_namespace": "openfaas"}
    )
    assert settings.leader_election is True

    role = only(base, "Role", "autoscaler-leader-election")
    assert role["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    named = [r for r in role["rules"] if "resourceNames" in r]
    assert named, "get/update on the Lease should be limited to its name"
    for rule in named:
        assert rule["resourceNames"] == [settings.lease_name]


def test_the_function_namespaces_given_to_both_processes_each_have_a_role_binding(base: list[Obj]) -> None:
    bound = {
        o["metadata"]["namespace"]
        for o in base
        if o["kind"] == "RoleBinding"
        and o["roleRef"]
        == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "autoscaler-functions"}
    }
    for deployment in ("autoscaler-controller", "autoscaler-proxy"):
        namespaces = build(
            ProviderSettings, settings_overrides(_args(base, deployment), ProviderSettings)
        ).namespaces
        assert set(namespaces) == bound == {"openfaas-fn"}, deployment
    proxy = build(ProxySettings, settings_overrides(_args(base, "autoscaler-proxy"), ProxySettings))
    assert proxy.default_namespace in bound


@pytest.mark.parametrize("component", ["controller", "proxy"])
def test_services_and_disruption_budgets_select_their_pods_and_name_real_ports(
    base: list[Obj], component: str
) -> None:
    deployment = only(base, "Deployment", f"autoscaler-{component}")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], labels)
    others = [o for o in base if o["kind"] == "Deployment" and o is not deployment]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}

    service = only(base, "Service", f"autoscaler-{component}")
    assert _selects(service["spec"]["selector"], labels)
    assert not any(
        _selects(service["spec"]["selector"], o["spec"]["template"]["metadata"]["labels"]) for o in others
    )
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names

    budget = only(base, "PodDisruptionBudget", f"autoscaler-{component}")
    assert _selects(budget["spec"]["selector"]["matchLabels"], labels)
    assert deployment["spec"]["replicas"] == 2
    keeps = budget["spec"].get(
        "minAvailable", deployment["spec"]["replicas"] - budget["spec"].get("maxUnavailable", 0)
    )
    assert 1 <= keeps < deployment["spec"]["replicas"], (
        "the budget must keep one pod and still let a node drain"
    )


def test_the_service_monitor_scrapes_the_admin_port_of_both_services(base: list[Obj]) -> None:
    monitor = only(base, "ServiceMonitor", "autoscaler")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [o for o in base if o["kind"] == "Service" and _selects(selector, o["metadata"]["labels"])]
    assert {o["metadata"]["name"] for o in scraped} == {"autoscaler-controller", "autoscaler-proxy"}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        for service in scraped:
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_the_example_function_carries_scaling_labels_the_autoscaler_accepts(example: list[Obj]) -> None:
    from autoscaler.providers.kubernetes._objects import function_info
    from autoscaler.spec import parse_labels

    deployment = only(example, "Deployment", "figlet")
    # Where faas-netes puts them: only faas_function on the Deployment, the rest on the pod template.
    assert deployment["metadata"]["labels"] == {"faas_function": "figlet"}
    info = function_info(deployment)
    assert info is not None
    spec = parse_labels(info.labels)
    assert spec.zero is True
    assert (spec.min_replicas, spec.max_replicas, spec.zero_duration) == (1, 10, 300.0)
    scaling = [k for k in info.labels if k.startswith("com.openfaas.scale.")]
    assert len(scaling) == 7
    assert {info.label_sources[k] for k in scaling} == {"template"}
    assert info.conflicts == ()
    service = only(example, "Service", "figlet")
    assert _selects(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
