"""Cluster-side behaviour of the fake API server: test helpers for objects, and simulated controllers.

Split from the HTTP layer (`tests/support/apiserver.py`): what a test does to the cluster (add,
change or delete a Deployment, point a function's EndpointSlice at a real host:port) and what the
cluster's own controllers would do (bump generation, fill Deployment status, make pods ready after a
delay once a function is scaled up, empty the EndpointSlice when it is scaled to zero).
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass

from tests.support._apiserver_store import ApiError, Kind, Obj, Store, merge_patch

DEPLOYMENTS = Kind("apps", "v1", "deployments", "Deployment")
ENDPOINT_SLICES = Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
EVENTS = Kind("", "v1", "events", "Event")
EVENTS_V1 = Kind("events.k8s.io", "v1", "events", "Event")
LEASES = Kind("coordination.k8s.io", "v1", "leases", "Lease")
KINDS = (DEPLOYMENTS, ENDPOINT_SLICES, EVENTS, EVENTS_V1, LEASES)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class Backend:
    host: str
    port: int
    ready_delay: float


class Cluster:
    """Mixed into FakeApiServer; holds the store and the simulated backends."""

    def __init__(self) -> None:
        self.store = Store()
        self._backends: dict[tuple[str, str], Backend] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ----- test-side object helpers ---------------------------------------------------------

    def add_deployment(
        self,
        name: str,
        *,
        namespace: str = "openfaas-fn",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        replicas: int = 1,
        ready_replicas: int | None = None,
    ) -> Obj:
        body: Obj = {
            "metadata": {"name": name, "labels": dict(labels or {}), "annotations": dict(annotations or {})},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"faas_function": name}},
                "template": {
                    "metadata": {"labels": {"faas_function": name}},
                    "spec": {"containers": [{"name": name, "image": f"example.com/{name}:latest"}]},
                },
            },
        }
        if ready_replicas is not None:
            body["status"] = {"readyReplicas": ready_replicas}
        return self._create_deployment(namespace, body, explicit_ready=ready_replicas is not None)

    def update_deployment(
        self,
        name: str,
        *,
        namespace: str = "openfaas-fn",
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
        replicas: int | None = None,
        ready_replicas: int | None = None,
    ) -> Obj:
        """Merge labels/annotations (None removes a key) and set replicas, as `kubectl` would."""
        patch: Obj = {"metadata": {"labels": labels or {}, "annotations": annotations or {}}}
        if replicas is not None:
            patch["spec"] = {"replicas": replicas}
        old = self.store.get(DEPLOYMENTS, namespace, name)
        new = merge_patch(old, patch)
        if ready_replicas is not None:
            new["status"] = dict(new.get("status") or {}, readyReplicas=ready_replicas)
        return self._save_deployment(new, old, explicit_ready=ready_replicas is not None)

    def delete_deployment(self, name: str, *, namespace: str = "openfaas-fn") -> None:
        self.store.delete(DEPLOYMENTS, namespace, name)

    def deployment(self, name: str, *, namespace: str = "openfaas-fn") -> Obj:
        return copy.deepcopy(self.store.get(DEPLOYMENTS, namespace, name))

    def replicas(self, name: str, *, namespace: str = "openfaas-fn") -> int:
        return int(self.store.get(DEPLOYMENTS, namespace, name)["spec"].get("replicas", 1))

    def objects(self, kind: Kind, *, namespace: str | None = None) -> list[Obj]:
        return self.store.list(kind, namespace, [])

    def events(self, *, namespace: str | None = None) -> list[Obj]:
        """Events written so far (core/v1 and events.k8s.io/v1), oldest first."""
        found = self.objects(EVENTS, namespace=namespace) + self.objects(EVENTS_V1, namespace=namespace)
        return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def set_backend(
        self, name: str, *, namespace: str = "openfaas-fn", host: str, port: int, ready_delay: float = 0.0
    ) -> None:
        """Simulate pods at host:port: once scaled up, after `ready_delay` the Deployment reports
        ready replicas and the function's EndpointSlice lists ready endpoints; at zero it empties."""
        self._backends[(namespace, name)] = backend = Backend(host, port, ready_delay)
        deployment = self.store.get(DEPLOYMENTS, namespace, name)
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        self.set_endpoints(name, namespace=namespace, port=port, endpoints=[(backend.host, True)] * ready)

    def set_endpoints(
        self, service: str, *, namespace: str = "openfaas-fn", port: int, endpoints: list[tuple[str, bool]]
    ) -> Obj:
        """Create or replace the Service's EndpointSlice with (address, ready) endpoints."""
        body: Obj = {
            "metadata": {
                "name": f"{service}-ep",
                "namespace": namespace,
                "labels": {SERVICE_NAME_LABEL: service},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": [address],
                    "conditions": {"ready": ready, "serving": ready, "terminating": False},
                    "targetRef": {"kind": "Pod", "name": f"{service}-pod-{i}", "namespace": namespace},
                }
                for i, (address, ready) in enumerate(endpoints)
            ],
        }
        try:
            old = self.store.get(ENDPOINT_SLICES, namespace, body["metadata"]["name"])
        except ApiError:
            return self.store.create(ENDPOINT_SLICES, namespace, body)
        new = copy.deepcopy(old) | {k: v for k, v in body.items() if k != "metadata"}
        return self.store.commit(ENDPOINT_SLICES, new, old=old)

    # ----- Deployment behaviour: generation, status, simulated readiness ---------------------

    def _prepare_deployment(self, new: Obj, old: Obj | None, *, namespace: str, explicit_ready: bool) -> bool:
        """Bump generation and fill status as the Deployment controller would; True when replicas changed."""
        meta, spec = new.setdefault("metadata", {}), new.setdefault("spec", {})
        replicas = int(spec.setdefault("replicas", 1))
        old_replicas = None if old is None else int(old["spec"].get("replicas", 1))
        if old is not None and old.get("spec") != spec:
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        status = new["status"] = dict(new.get("status") or {})
        status.update(replicas=replicas, observedGeneration=meta.get("generation", 1))
        changed = replicas != old_replicas and not explicit_ready
        if changed:
            # Without a simulated backend pods are ready at once; with one they become ready later.
            simulated = (namespace, meta["name"]) in self._backends
            ready = int(status.get("readyReplicas") or 0)
            status["readyReplicas"] = min(ready, replicas) if simulated else replicas
        status["availableReplicas"] = status.get("readyReplicas", 0)
        return changed

    def _after_deployment(self, saved: Obj, *, changed: bool) -> Obj:
        namespace, name = saved["metadata"]["namespace"], saved["metadata"]["name"]
        backend = self._backends.get((namespace, name))
        if backend is not None and changed:
            if saved["spec"]["replicas"] == 0:
                self.set_endpoints(name, namespace=namespace, port=backend.port, endpoints=[])
            else:
                task = asyncio.get_running_loop().create_task(self._become_ready(namespace, name, backend))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return saved

    def _create_deployment(self, namespace: str, body: Obj, *, explicit_ready: bool = False) -> Obj:
        body.setdefault("metadata", {})
        if not body["metadata"].get("name"):
            raise ApiError(422, "Deployment: metadata.name: Required value")
        changed = self._prepare_deployment(body, None, namespace=namespace, explicit_ready=explicit_ready)
        return self._after_deployment(self.store.create(DEPLOYMENTS, namespace, body), changed=changed)

    def _save_deployment(self, new: Obj, old: Obj, *, explicit_ready: bool = False) -> Obj:
        namespace = old["metadata"]["namespace"]
        changed = self._prepare_deployment(new, old, namespace=namespace, explicit_ready=explicit_ready)
        return self._after_deployment(self.store.commit(DEPLOYMENTS, new, old=old), changed=changed)

    async def _become_ready(self, namespace: str, name: str, backend: Backend) -> None:
        await asyncio.sleep(backend.ready_delay)
        try:
            old = self.store.get(DEPLOYMENTS, namespace, name)
        except ApiError:
            return
        replicas = int(old["spec"].get("replicas", 1))
        if replicas == 0:
            return
        new = copy.deepcopy(old)
        new["status"].update(readyReplicas=replicas, availableReplicas=replicas)
        self.store.commit(DEPLOYMENTS, new, old=old)
        self.set_endpoints(
            name, namespace=namespace, port=backend.port, endpoints=[(backend.host, True)] * replicas
        )
