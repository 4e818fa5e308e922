"""Connecting from a kubeconfig, and API_CALLS matching exactly the requests the provider makes."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autoscaler.config import ProviderSettings
from autoscaler.errors import ConfigError
from autoscaler.interfaces import FunctionRef
from autoscaler.providers.kubernetes import API_CALLS, KubernetesProvider
from tests.support.apiserver import FakeApiServer
from tests.support.waiting import until

from .support import fn_labels

ECHO = FunctionRef(name="echo", namespace="openfaas-fn")
_ROUTE = re.compile(
    r"^/apis?/(?:(?P<group>[^/]+)/)?v1/namespaces/[^/]+/(?P<resource>[^/]+)(?P<item>/[^/]+)?(?P<sub>/[^/]+)?$"
)
_CLUSTER_ROUTE = re.compile(r"^/api/v1/(?P<resource>namespaces)(?P<item>/[^/]+)?$")
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def api_call(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str]:
    """(api group, resource, verb) of one request, as an RBAC rule names it."""
    match = _ROUTE.match(path) or _CLUSTER_ROUTE.match(path)
    assert match is not None, f"unexpected request path {path}"
    group = "" if path.startswith("/api/") else match["group"]
    resource = match["resource"] + ((match.groupdict().get("sub")) or "")
    if method == "GET":
        verb = "get" if match["item"] else ("watch" if query.get("watch") == "True" else "list")
    else:
        verb = _VERBS[method]
    return group, resource, verb


async def test_create_connects_through_a_kubeconfig_file(api: FakeApiServer, tmp_path: Path) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"))
    kubeconfig = api.write_kubeconfig(tmp_path / "config")

    provider = await KubernetesProvider.create(settings=ProviderSettings(kubeconfig=str(kubeconfig)))
    try:
        await provider.start()
        assert list(provider.functions()) == ["echo.openfaas-fn"]
    finally:
        await provider.close()


async def test_a_provider_from_a_kubeconfig_follows_more_namespaces_than_the_clients_default_pool(
    api: FakeApiServer, tmp_path: Path
) -> None:
    # Two watches per namespace stay open: 60 namespaces hold 120 connections, past the client's
    # default pool of 100, and the listings and writes must still get through.
    namespaces = [f"team-{i:02d}" for i in range(60)]
    for namespace in namespaces:
        api.add_deployment("echo", namespace=namespace, labels=fn_labels("echo"))
    settings = ProviderSettings(
        kubeconfig=str(api.write_kubeconfig(tmp_path / "config")), namespaces=namespaces
    )

    provider = await KubernetesProvider.create(settings=settings, start_timeout=20.0)
    try:
        await provider.start()
        await until(lambda: api.open_watches >= 120, within=10.0, what="120 watches")
        await provider.scale(FunctionRef(name="echo", namespace="team-59"), 3)
        assert len(provider.functions()) == 60
        assert api.replicas("echo", namespace="team-59") == 3
    finally:
        await provider.close()


async def test_create_without_a_usable_configuration_says_how_to_fix_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"

    with pytest.raises(
        ConfigError, match=rf"--kubeconfig {missing}: no such file; give the path of a kubeconfig"
    ):
        await KubernetesProvider.create(settings=ProviderSettings(kubeconfig=str(missing)))


async def test_api_calls_names_exactly_the_requests_the_provider_makes(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=0)
    api.set_backend("echo", host="127.0.0.1", port=18080)
    api.add_namespace("team-a", annotations={"openfaas": "1"})
    provider = await make_provider(namespaces_annotated="openfaas=1")
    assert provider.followed_namespaces() == ["openfaas-fn", "team-a"]

    await provider.scale(ECHO, 1)
    assert await provider.wait_ready(ECHO, 3.0)
    await provider.mark_active(ECHO, 1_700_000_000.0)
    await provider.record_event(ECHO, reason="ScaledUp", message="from 0 to 1")
    await provider.record_event(ECHO, reason="ScaledUp", message="from 0 to 1")

    made = {api_call(r.method, r.path, r.query) for r in api.requests}
    assert made == set(API_CALLS)
    assert len(API_CALLS) == len(set(API_CALLS))
