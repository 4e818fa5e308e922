"""The function cache: a first listing, then a watch that follows the cluster through resyncs and drops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from autoscaler.config import ProviderSettings
from autoscaler.errors import ProviderError
from autoscaler.interfaces import FunctionRef
from autoscaler.providers.kubernetes import KubernetesProvider
from autoscaler.tasks import restarting
from tests.support.apiserver import FakeApiServer

from .support import FAST, eventually, fn_labels

DEPLOYMENTS = r"/apis/apps/v1/namespaces/openfaas-fn/deployments$"


def ref(name: str, namespace: str = "openfaas-fn") -> FunctionRef:
    return FunctionRef(name=name, namespace=namespace)


async def test_the_first_listing_holds_functions_and_nothing_else(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"), replicas=2, ready_replicas=1)
    api.add_deployment("scaled", labels={"com.openfaas.scale.min": "0"}, replicas=0)
    api.add_deployment("gateway", labels={"app": "gateway"})
    api.add_deployment("elsewhere", namespace="other", labels=fn_labels("elsewhere"))

    provider = await make_provider()

    assert sorted(provider.functions()) == ["echo.openfaas-fn", "scaled.openfaas-fn"]
    echo = provider.get(ref("echo"))
    assert echo is not None
    assert (echo.replicas, echo.ready_replicas, echo.labels["faas_function"]) == (2, 1, "echo")
    assert provider.get(ref("gateway")) is None
    assert provider.get(ref("elsewhere", "other")) is None


async def test_every_configured_namespace_is_listed_before_start_returns(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("a", namespace="team-a", labels=fn_labels("a"))
    api.add_deployment("b", namespace="team-b", labels=fn_labels("b"))
    api.add_deployment("c", namespace="team-c", labels=fn_labels("c"))

    provider = await make_provider(namespaces=["team-a", "team-b"])

    assert sorted(provider.functions()) == ["a.team-a", "b.team-b"]


async def test_watch_events_add_modify_and_remove_functions(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    provider = await make_provider()
    seen: list[str] = []
    provider.subscribe(lambda r: seen.append(r.key))

    api.add_deployment("late", labels=fn_labels("late"))
    await eventually(lambda: provider.get(ref("late")) is not None, what="ADDED")
    api.update_deployment("late", replicas=5, labels={"com.openfaas.scale.max": "9"})
    await eventually(lambda: getattr(provider.get(ref("late")), "replicas", 0) == 5, what="MODIFIED")
    info = provider.get(ref("late"))
    assert info is not None
    assert info.labels["com.openfaas.scale.max"] == "9"

    api.update_deployment("late", labels={"faas_function": None, "com.openfaas.scale.max": None})
    await eventually(lambda: provider.get(ref("late")) is None, what="no longer a function")
    api.add_deployment("gone", labels=fn_labels("gone"))
    await eventually(lambda: provider.get(ref("gone")) is not None, what="ADDED")
    api.delete_deployment("gone")
    await eventually(lambda: provider.get(ref("gone")) is None, what="DELETED")

    assert seen.count("late.openfaas-fn") >= 3
    assert seen.count("gone.openfaas-fn") >= 2


async def test_an_expired_resource_version_resyncs_without_losing_updates(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("kept", labels=fn_labels("kept"), replicas=1)
    api.add_deployment("removed", labels=fn_labels("removed"))
    provider = await make_provider()
    removed: list[str] = []
    provider.subscribe(lambda r: removed.append(r.key) if provider.get(r) is None else None)
    watches = api.count("GET", DEPLOYMENTS, watch=True)

    # The provider reconnects while the cluster changes and compacts its history.
    api.delay("GET", DEPLOYMENTS, seconds=0.3, watch=True)
    api.drop_watches()
    await eventually(lambda: api.count("GET", DEPLOYMENTS, watch=True) > watches, what="a new watch")
    api.update_deployment("kept", replicas=7)
    api.delete_deployment("removed")
    api.add_deployment("added", labels=fn_labels("added"))
    api.expire_resource_versions()

    await eventually(lambda: api.count("GET", DEPLOYMENTS, watch=False) == 2, what="a second listing")
    await eventually(lambda: provider.get(ref("added")) is not None, what="the resync")
    assert sorted(provider.functions()) == ["added.openfaas-fn", "kept.openfaas-fn"]
    assert provider.functions()["kept.openfaas-fn"].replicas == 7
    assert removed == ["removed.openfaas-fn"]


async def test_a_dropped_watch_reconnects_from_where_it_stopped(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"))
    provider = await make_provider()

    api.drop_watches()
    api.update_deployment("echo", replicas=3)

    await eventually(lambda: provider.functions()["echo.openfaas-fn"].replicas == 3, what="the update")
    assert api.count("GET", DEPLOYMENTS, watch=False) == 1  # replayed from its resourceVersion, no re-list
    assert api.count("GET", DEPLOYMENTS, watch=True) >= 2


async def test_a_failing_watch_backs_off_and_recovers(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"))
    provider = await make_provider()
    api.fail("GET", DEPLOYMENTS, status=500, times=3, watch=True)
    api.fail("GET", DEPLOYMENTS, status=429, times=1, watch=True)

    api.drop_watches()
    api.update_deployment("echo", replicas=4)

    await eventually(lambda: provider.functions()["echo.openfaas-fn"].replicas == 4, what="recovery")
    assert api.count("GET", DEPLOYMENTS, watch=True) >= 6  # first, 4 refused, then the one that worked


async def test_a_crashing_subscriber_does_not_stop_the_watch(
    api: FakeApiServer, make_provider: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    provider = await make_provider()

    def broken(_: FunctionRef) -> None:
        raise RuntimeError("subscriber bug")

    provider.subscribe(broken)
    api.add_deployment("one", labels=fn_labels("one"))
    api.add_deployment("two", labels=fn_labels("two"))

    await eventually(lambda: len(provider.functions()) == 2, what="both functions")
    assert "subscriber bug" in caplog.text


async def test_start_fails_with_a_clear_error_when_listing_is_forbidden(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.fail("GET", DEPLOYMENTS, status=403, times=1000, watch=False)
    provider = await make_provider(start=False, start_timeout=0.5)

    with pytest.raises(ProviderError, match=r"HTTP 403.*RBAC"):
        await provider.start()


async def test_the_start_timeout_setting_bounds_the_first_listing(
    api: FakeApiServer, api_client: ApiClient
) -> None:
    api.delay("GET", DEPLOYMENTS, seconds=3.0, times=100, watch=False)
    settings = ProviderSettings(namespaces=["openfaas-fn"], api_timeout=2.0, start_timeout=0.5)
    provider = KubernetesProvider(settings=settings, api_client=api_client, retry=FAST)

    with pytest.raises(ProviderError, match=r"no first listing from the Kubernetes API server within 0\.5s"):
        await provider.start()


async def test_a_watch_ended_by_the_server_timeout_resumes_from_its_bookmark(
    api: FakeApiServer, make_provider: Callable[..., Any]
) -> None:
    api.add_deployment("echo", labels=fn_labels("echo"))
    provider = await make_provider(watch_timeout=1)

    await eventually(lambda: api.count("GET", DEPLOYMENTS, watch=True) >= 2, what="a second watch", timeout=4)
    api.update_deployment("echo", replicas=6)

    await eventually(lambda: provider.functions()["echo.openfaas-fn"].replicas == 6, what="the update")
    second = [r for r in api.requests if r.path.endswith("/deployments") and r.query.get("watch")][1]
    assert int(second.query["resourceVersion"]) == api.store.rv - 1  # the bookmark's version, not the list's
    assert api.count("GET", DEPLOYMENTS, watch=False) == 1


async def test_a_crashed_background_loop_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    done = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("loop bug")
        done.set()
        await asyncio.Event().wait()

    task = restarting(flaky, name="watch flaky", restart_delay=0.01)
    await asyncio.wait_for(done.wait(), 2)
    task.cancel()

    assert runs == [0, 1]
    assert "watch flaky crashed; restarting" in caplog.text
    assert "loop bug" in caplog.text
