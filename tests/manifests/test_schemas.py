"""Every object the kustomize base (and the example) yields is valid for the Kubernetes API."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest

from tests.manifests.conftest import Obj
from tests.manifests.crd_schemas import BY_KIND, SERVICE_MONITOR

KUBERNETES_VERSION = "1.33"


def _validate(obj: Obj) -> None:
    if obj["kind"] in BY_KIND:
        jsonschema.validate(obj, BY_KIND[obj["kind"]])
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_base_builds_into_the_add_on_s_objects(base: list[Obj]) -> None:
    kinds = sorted({o["kind"] for o in base})
    assert kinds == [
        "ClusterRole",
        "ConfigMap",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_every_object_of_the_base_validates_against_the_kubernetes_schemas(base: list[Obj]) -> None:
    for obj in base:
        _validate(obj)


def test_every_object_of_the_example_validates_against_the_kubernetes_schemas(example: list[Obj]) -> None:
    assert {o["kind"] for o in example} == {"Deployment", "Service"}
    for obj in example:
        _validate(obj)


def test_the_schema_check_rejects_a_misspelt_field(base: list[Obj]) -> None:
    deployment = next(o for o in base if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    monitor = next(o for o in base if o["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR)


def test_add_on_objects_live_in_the_add_on_namespace_and_only_the_binding_in_the_function_namespace(
    base: list[Obj],
) -> None:
    (namespace,) = [o["metadata"]["name"] for o in base if o["kind"] == "Namespace"]
    placed = {(o["kind"], o["metadata"]["name"]): o["metadata"].get("namespace") for o in base}
    elsewhere = {k: ns for k, ns in placed.items() if ns not in (None, namespace)}
    assert elsewhere == {("RoleBinding", "autoscaler-functions"): "openfaas-fn"}
    cluster_scoped = {k for k, ns in placed.items() if ns is None}
    assert cluster_scoped == {("Namespace", namespace), ("ClusterRole", "autoscaler-functions")}
