"""Functions in the shapes OpenFaaS writes them: faas-netes' Deployments, the CRD operator's, its updates.

The fake API server makes them as OpenFaaS's own source does (see `add_faas_netes_function`,
`add_crd_function` and `faas_netes_update` in tests/support/_apiserver_cluster.py); the provider must
find them, read their scaling labels where OpenFaaS puts them, and keep what OpenFaaS's writes wipe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionInfo, FunctionRef
from tests.support.apiserver import FakeApiServer

from .support import eventually

SCALE = {"com.openfaas.scale.min": "2", "com.openfaas.scale.zero": "true"}
MARK = 1_700_000_000.0


def ref(name: str, namespace: str = "openfaas-fn") -> FunctionRef:
    return FunctionRef(name=name, namespace=namespace)


def info_of(provider: Any, name: str) -> FunctionInfo:
    found = provider.get(ref(name))
    assert found is not None, f"{name} is not a function: {sorted(provider.functions())}"
    assert isinstance(found, FunctionInfo)
    return found


class TestWhichDeploymentsAreFunctions:
    async def test_a_faas_netes_deployment_is_a_function_with_the_labels_of_its_pod_template(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_faas_netes_function("figlet", labels=SCALE)
        assert api.deployment("figlet")["metadata"]["labels"] == {"faas_function": "figlet"}

        info = info_of(await make_provider(), "figlet")

        assert info.labels["com.openfaas.scale.min"] == "2"
        assert info.labels["com.openfaas.scale.zero"] == "true"
        assert info.label_sources["com.openfaas.scale.min"] == "template"
        assert info.label_sources["faas_function"] == "both"
        assert (info.replicas, info.owner, info.owner_spec, info.conflicts) == (2, None, None, ())

    async def test_a_crd_operator_deployment_is_a_function_through_its_owner(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_crd_function("nodeinfo", labels={"com.openfaas.scale.max": "4"}, annotations={"team": "a"})
        assert "labels" not in api.deployment("nodeinfo")["metadata"]

        info = info_of(await make_provider(), "nodeinfo")

        assert info.owner == "Function/nodeinfo"
        assert info.labels["com.openfaas.scale.max"] == "4"
        assert info.label_sources["controller"] == "template"
        assert info.owner_spec is not None
        assert info.owner_spec["image"] == "example.com/nodeinfo:latest"
        assert info.owner_spec["labels"] == {"com.openfaas.scale.max": "4"}
        # The spec is kept parsed, not twice; the Deployment's other annotations are kept.
        assert "com.openfaas.function.spec" not in info.annotations
        assert info.annotations["team"] == "a"

    async def test_a_deployment_owned_by_anything_but_an_openfaas_function_is_not_one(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_deployment("plain", labels={"app": "plain"})
        plain = api.deployment("plain")
        plain["metadata"]["ownerReferences"] = [
            {"apiVersion": "example.com/v1", "kind": "Function", "name": "plain", "uid": "u1"},
            {"apiVersion": "openfaas.com/v1", "kind": "Profile", "name": "plain", "uid": "u2"},
        ]
        api.replace_deployment(plain)

        provider = await make_provider()

        assert provider.get(ref("plain")) is None

    async def test_faas_function_on_the_pod_template_alone_makes_a_function(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_faas_netes_function("templated")
        deployment = api.deployment("templated")
        del deployment["metadata"]["labels"]
        api.replace_deployment(deployment)

        info = info_of(await make_provider(), "templated")

        assert info.label_sources["faas_function"] == "template"

    async def test_a_crd_function_with_a_spec_annotation_that_is_not_json_keeps_working(
        self, api: FakeApiServer, make_provider: Callable[..., Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        api.add_crd_function("broken", labels={"com.openfaas.scale.max": "3"})
        deployment = api.deployment("broken")
        deployment["metadata"]["annotations"]["com.openfaas.function.spec"] = "{not json"
        api.replace_deployment(deployment)

        with caplog.at_level(logging.WARNING):
            info = info_of(await make_provider(), "broken")

        assert (info.owner, info.owner_spec, info.labels["com.openfaas.scale.max"]) == (
            "Function/broken",
            None,
            "3",
        )
        assert "broken.openfaas-fn: annotation com.openfaas.function.spec is not JSON" in caplog.text


class TestWhereLabelsAreRead:
    async def test_the_deployment_metadata_fills_in_what_the_pod_template_lacks(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_faas_netes_function("mixed", labels={"com.openfaas.scale.min": "2"})
        api.update_deployment("mixed", labels={"com.openfaas.scale.max": "7"})

        info = info_of(await make_provider(), "mixed")

        assert (info.labels["com.openfaas.scale.min"], info.labels["com.openfaas.scale.max"]) == ("2", "7")
        assert info.label_sources["com.openfaas.scale.max"] == "deployment"
        assert info.conflicts == ()

    async def test_the_pod_template_wins_a_conflict_and_the_conflict_is_named(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_faas_netes_function(
            "torn", labels={"com.openfaas.scale.max": "10", "autoscaler.dev/keepalive": "adaptive"}
        )
        api.update_deployment(
            "torn",
            labels={
                "com.openfaas.scale.max": "5",
                "autoscaler.dev/keepalive": "fixed",
                "team": "b",  # not a scaling label: no conflict worth a word
            },
        )
        deployment = api.deployment("torn")
        deployment["spec"]["template"]["metadata"]["labels"]["team"] = "a"
        api.replace_deployment(deployment)

        info = info_of(await make_provider(), "torn")

        assert info.labels["com.openfaas.scale.max"] == "10"
        assert info.labels["autoscaler.dev/keepalive"] == "adaptive"
        assert info.conflicts == (
            "label autoscaler.dev/keepalive: the pod template says 'adaptive', the Deployment's metadata "
            "'fixed'; using the pod template's 'adaptive'",
            "label com.openfaas.scale.max: the pod template says '10', the Deployment's metadata '5'; "
            "using the pod template's '10'",
        )

    async def test_labels_written_on_the_deployment_by_hand_are_read_as_before(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_deployment("manual", labels={"faas_function": "manual", "com.openfaas.scale.max": "3"})

        info = info_of(await make_provider(), "manual")

        assert info.labels["com.openfaas.scale.max"] == "3"
        assert info.label_sources["com.openfaas.scale.max"] == "deployment"


class TestOpenFaaSUpdates:
    @pytest.fixture
    async def provider(self, api: FakeApiServer, make_provider: Callable[..., Any]) -> Any:
        """A started provider whose cache shows the mark it wrote on a faas-netes function."""
        api.add_faas_netes_function("figlet", labels=SCALE)
        provider = await make_provider()
        await provider.mark_active(ref("figlet"), MARK)
        await eventually(lambda: info_of(provider, "figlet").last_active == MARK, what="the mark")
        return provider

    async def test_a_faas_netes_update_keeps_the_last_active_mark_it_wipes(
        self, api: FakeApiServer, provider: Any
    ) -> None:
        api.faas_netes_update("figlet", labels={**SCALE, "com.openfaas.scale.max": "9"}, image="figlet:2")
        await eventually(
            lambda: info_of(provider, "figlet").labels.get("com.openfaas.scale.max") == "9", what="the update"
        )

        deployment = api.deployment("figlet")
        assert LAST_ACTIVE_ANNOTATION not in deployment["metadata"]["annotations"]  # wiped, as OpenFaaS does
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "figlet:2"
        assert info_of(provider, "figlet").last_active == MARK

    async def test_a_resync_after_the_update_keeps_the_mark_too(
        self, api: FakeApiServer, provider: Any
    ) -> None:
        api.faas_netes_update("figlet", labels=SCALE)
        api.expire_resource_versions()
        api.drop_watches()
        lists = provider.reflectors[0].lists
        await eventually(lambda: provider.reflectors[0].lists > lists, what="a re-list")

        assert info_of(provider, "figlet").last_active == MARK

    async def test_a_newer_mark_from_elsewhere_replaces_the_kept_one(
        self, api: FakeApiServer, provider: Any
    ) -> None:
        api.faas_netes_update(
            "figlet", labels=SCALE, annotations={LAST_ACTIVE_ANNOTATION: f"{MARK + 60:.3f}"}
        )

        await eventually(lambda: info_of(provider, "figlet").last_active == MARK + 60, what="the newer mark")

    async def test_a_function_deleted_and_made_again_does_not_inherit_the_old_mark(
        self, api: FakeApiServer, provider: Any
    ) -> None:
        # Both within one watch gap: the re-list sees only a new object under the same name.
        api.expire_resource_versions()
        api.drop_watches()
        api.delete_deployment("figlet")
        api.add_faas_netes_function("figlet", labels=SCALE)
        lists = provider.reflectors[0].lists
        await eventually(lambda: provider.reflectors[0].lists > lists, what="a re-list")
        await eventually(lambda: provider.get(ref("figlet")) is not None, what="the new figlet")

        assert info_of(provider, "figlet").last_active is None


def with_environment(api: FakeApiServer, name: str, env: list[dict[str, Any]]) -> None:
    """Give a faas-netes function's container the env faas-netes writes from stack.yml's `environment:`.

    openfaas/faas-netes 03477885 `pkg/handlers/deploy.go`: `buildEnvVars` makes one
    `{"name": K, "value": V}` per entry (plus `fprocess`), sorted by name, on the one container
    `makeDeploymentSpec` makes, named after the function.
    """
    deployment = api.deployment(name)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["name"] == name
    container["env"] = sorted(env, key=lambda entry: str(entry["name"]))
    api.replace_deployment(deployment)


STACK_ENV = [
    {"name": "fprocess", "value": "python3 index.py"},
    {"name": "write_timeout", "value": "10s"},
    {"name": "max_inflight", "value": "3"},
]


class TestTheFunctionsEnvironment:
    async def test_max_inflight_in_a_faas_netes_functions_environment_reaches_the_function_info(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_faas_netes_function("limited", labels=SCALE)
        with_environment(api, "limited", STACK_ENV)
        api.add_faas_netes_function("plain")

        provider = await make_provider()

        assert info_of(provider, "limited").env_max_inflight == "3"
        assert "max_inflight" not in info_of(provider, "limited").labels
        assert info_of(provider, "plain").env_max_inflight is None

    async def test_a_changed_environment_reaches_the_cache_through_the_watch(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_faas_netes_function("limited")
        provider = await make_provider()
        assert info_of(provider, "limited").env_max_inflight is None

        with_environment(api, "limited", STACK_ENV)

        await eventually(lambda: info_of(provider, "limited").env_max_inflight == "3", what="the update")

    async def test_the_function_container_is_read_not_a_sidecar_listed_before_it(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_faas_netes_function("sided")
        with_environment(api, "sided", STACK_ENV)
        deployment = api.deployment("sided")
        sidecar = {"name": "proxy", "image": "envoy", "env": [{"name": "max_inflight", "value": "100"}]}
        deployment["spec"]["template"]["spec"]["containers"].insert(0, sidecar)
        api.replace_deployment(deployment)

        assert info_of(await make_provider(), "sided").env_max_inflight == "3"

    async def test_a_container_named_otherwise_is_read_as_faas_netes_reads_it_the_first(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_faas_netes_function("renamed")
        with_environment(api, "renamed", STACK_ENV)
        deployment = api.deployment("renamed")
        deployment["spec"]["template"]["spec"]["containers"][0]["name"] = "main"
        api.replace_deployment(deployment)

        assert info_of(await make_provider(), "renamed").env_max_inflight == "3"

    async def test_a_max_inflight_from_a_config_map_is_not_readable_and_counts_as_unset(
        self, api: FakeApiServer, make_provider: Callable[..., Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        api.add_faas_netes_function("indirect")
        ref_env = {"configMapKeyRef": {"name": "limits", "key": "indirect"}}
        with_environment(api, "indirect", [{"name": "max_inflight", "valueFrom": ref_env}])

        with caplog.at_level(logging.DEBUG, logger="autoscaler.providers.kubernetes._objects"):
            info = info_of(await make_provider(), "indirect")

        assert info.env_max_inflight is None
        assert "env max_inflight of container indirect is a valueFrom reference" in caplog.text
