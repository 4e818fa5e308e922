"""`--namespaces-annotated`: namespaces followed as they gain and lose the annotation, as OpenFaaS does.

OpenFaaS (faas-netes `pkg/handlers/namespaces.go`, docs `reference/namespaces.md`) serves functions in
every namespace annotated `openfaas` (`kubectl annotate namespace NAME openfaas=1`), next to its default
one. The provider follows them through a watch of namespaces, with the fake API server playing the
cluster: namespaces annotated, un-annotated and deleted while the provider runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from autoscaler.interfaces import FunctionRef
from tests.support.apiserver import FakeApiServer

from .support import eventually

ANNOTATED = "openfaas=1"


def ref(name: str, namespace: str) -> FunctionRef:
    return FunctionRef(name=name, namespace=namespace)


def watches_of(api: FakeApiServer, namespace: str) -> int:
    return sum(1 for w in api.store.watchers if w.namespace == namespace)


class TestAtStart:
    async def test_annotated_namespaces_are_listed_before_start_returns(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_namespace("dev", annotations={"openfaas": "1"})
        api.add_namespace("plain")
        api.add_faas_netes_function("a", namespace="dev")
        api.add_faas_netes_function("b", namespace="plain")
        api.add_faas_netes_function("c")

        provider = await make_provider(namespaces_annotated=ANNOTATED)

        assert provider.followed_namespaces() == ["dev", "openfaas-fn"]
        assert sorted(provider.functions()) == ["a.dev", "c.openfaas-fn"]

    async def test_without_the_flag_namespaces_are_never_listed(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_namespace("dev", annotations={"openfaas": "1"})
        api.add_faas_netes_function("a", namespace="dev")

        provider = await make_provider()

        assert provider.functions() == {}
        assert api.count(None, r"^/api/v1/namespaces$") == 0

    async def test_only_annotated_namespaces_may_be_followed_with_no_configured_one(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_namespace("dev", annotations={"openfaas": "1"})
        api.add_faas_netes_function("a", namespace="dev")
        api.add_faas_netes_function("c")

        provider = await make_provider(namespaces=[], namespaces_annotated=ANNOTATED)

        assert sorted(provider.functions()) == ["a.dev"]


class TestWhileRunning:
    async def test_a_namespace_annotated_later_is_followed(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_namespace("staging")
        api.add_faas_netes_function("late", namespace="staging")
        provider = await make_provider(namespaces_annotated=ANNOTATED)
        assert provider.get(ref("late", "staging")) is None

        api.annotate_namespace("staging", {"openfaas": "1"})

        await eventually(lambda: provider.get(ref("late", "staging")) is not None, what="late.staging")
        api.add_faas_netes_function("later", namespace="staging")
        await eventually(lambda: provider.get(ref("later", "staging")) is not None, what="later.staging")
        api.set_endpoints("later", namespace="staging", port=8080, endpoints=[("10.0.0.9", True)])
        assert await provider.wait_ready(ref("later", "staging"), 3.0)
        assert provider.endpoints(ref("later", "staging")) == ["http://10.0.0.9:8080"]

    async def test_losing_the_annotation_drops_the_namespace_and_closes_its_watches(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_namespace("dev", annotations={"openfaas": "1"})
        api.add_faas_netes_function("a", namespace="dev")
        api.set_endpoints("a", namespace="dev", port=8080, endpoints=[("10.0.0.1", True)])
        provider = await make_provider(namespaces_annotated=ANNOTATED)
        assert provider.endpoints(ref("a", "dev")) == ["http://10.0.0.1:8080"]
        gone: list[str] = []
        provider.subscribe(lambda r: gone.append(r.key))

        api.annotate_namespace("dev", {"openfaas": None})

        await eventually(lambda: provider.get(ref("a", "dev")) is None, what="a.dev dropped")
        assert provider.endpoints(ref("a", "dev")) == []
        assert "a.dev" in gone
        assert provider.followed_namespaces() == ["openfaas-fn"]
        await eventually(lambda: watches_of(api, "dev") == 0, what="the watches of dev to close")
        api.add_faas_netes_function("b", namespace="dev")
        assert provider.get(ref("b", "dev")) is None

    async def test_a_deleted_namespace_is_dropped(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_namespace("dev", annotations={"openfaas": "1"})
        api.add_faas_netes_function("a", namespace="dev")
        provider = await make_provider(namespaces_annotated=ANNOTATED)

        api.delete_namespace("dev")

        await eventually(lambda: provider.followed_namespaces() == ["openfaas-fn"], what="dev unfollowed")
        assert provider.get(ref("a", "dev")) is None

    async def test_a_namespace_annotated_again_is_followed_again(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_namespace("dev", annotations={"openfaas": "1"})
        api.add_faas_netes_function("a", namespace="dev")
        provider = await make_provider(namespaces_annotated=ANNOTATED)
        api.annotate_namespace("dev", {"openfaas": None})
        await eventually(lambda: provider.get(ref("a", "dev")) is None, what="a.dev dropped")

        api.annotate_namespace("dev", {"openfaas": "1"})

        await eventually(lambda: provider.get(ref("a", "dev")) is not None, what="a.dev back")
        await eventually(lambda: watches_of(api, "dev") == 2, what="exactly two watches of dev")

    async def test_an_annotation_gained_during_a_dropped_namespace_watch_is_seen_on_resync(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_namespace("dev")
        api.add_faas_netes_function("a", namespace="dev")
        provider = await make_provider(namespaces_annotated=ANNOTATED)

        api.expire_resource_versions()
        api.drop_watches()
        api.annotate_namespace("dev", {"openfaas": "1"})

        await eventually(lambda: provider.get(ref("a", "dev")) is not None, what="a.dev after the re-list")

    async def test_a_configured_namespace_stays_followed_whatever_its_annotations(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_namespace("openfaas-fn", annotations={"openfaas": "1"})
        api.add_faas_netes_function("c")
        provider = await make_provider(namespaces_annotated=ANNOTATED)

        api.annotate_namespace("openfaas-fn", {"openfaas": None})
        api.add_namespace("marker", annotations={"openfaas": "1"})  # an event after the one that matters
        await eventually(lambda: "marker" in provider.followed_namespaces(), what="the marker namespace")

        assert provider.get(ref("c", "openfaas-fn")) is not None


class TestWhichAnnotationsCount:
    async def test_another_value_is_not_followed_and_the_log_says_how_to_follow_any(
        self, api: FakeApiServer, make_provider: Callable[..., Any], caplog: pytest.LogCaptureFixture
    ) -> None:
        api.add_namespace("dev", annotations={"openfaas": "true"})
        api.add_namespace("labelled", labels={"openfaas": "1"})  # a label is not the annotation

        with caplog.at_level(logging.INFO):
            provider = await make_provider(namespaces_annotated=ANNOTATED)

        assert provider.followed_namespaces() == ["openfaas-fn"]
        assert "namespace dev has annotation openfaas='true', not '1'" in caplog.text
        assert "--namespaces-annotated openfaas=* does too" in caplog.text

    async def test_a_star_follows_the_annotation_with_any_value_as_openfaas_does(
        self, api: FakeApiServer, make_provider: Callable[..., Any]
    ) -> None:
        api.add_namespace("dev", annotations={"openfaas": "true"})
        api.add_namespace("prod", annotations={"openfaas": ""})
        api.add_namespace("kube-system", annotations={"openfaas": "1"})

        provider = await make_provider(namespaces_annotated="openfaas=*")

        assert provider.followed_namespaces() == ["dev", "openfaas-fn", "prod"]
