"""The fake API server itself: the wire behaviour other tests (leader election) rely on."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio.client import (
    ApiClient,
    ApiException,
    CoordinationV1Api,
    V1Lease,
    V1LeaseSpec,
    V1ObjectMeta,
)

from tests.support.apiserver import LEASES, FakeApiServer


async def test_a_lease_update_with_a_stale_resource_version_is_a_409_status(
    api: FakeApiServer, api_client: ApiClient
) -> None:
    leases = CoordinationV1Api(api_client)
    body = V1Lease(metadata=V1ObjectMeta(name="lock"), spec=V1LeaseSpec(holder_identity="a"))
    created = await leases.create_namespaced_lease("openfaas", body)
    created.spec.holder_identity = "b"
    await leases.replace_namespaced_lease("lock", "openfaas", created)  # carries the current version

    created.spec.holder_identity = "c"
    with pytest.raises(ApiException) as caught:
        await leases.replace_namespaced_lease("lock", "openfaas", created)  # now stale

    status = json.loads(caught.value.body or b"{}")
    assert (caught.value.status, status["kind"], status["reason"], status["code"]) == (
        409,
        "Status",
        "Conflict",
        409,
    )
    (stored,) = api.objects(LEASES, namespace="openfaas")
    assert stored["spec"]["holderIdentity"] == "b"


async def test_creating_an_existing_lease_is_already_exists(
    api: FakeApiServer, api_client: ApiClient
) -> None:
    leases = CoordinationV1Api(api_client)
    body = V1Lease(metadata=V1ObjectMeta(name="lock"), spec=V1LeaseSpec(holder_identity="a"))
    await leases.create_namespaced_lease("openfaas", body)

    with pytest.raises(ApiException) as caught:
        await leases.create_namespaced_lease("openfaas", body)

    assert caught.value.status == 409
    assert json.loads(caught.value.body or b"{}")["reason"] == "AlreadyExists"
