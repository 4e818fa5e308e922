"""Cluster-side behaviour of the fake API server: test helpers for objects, and simulated controllers.

Split from the HTTP layer (`tests/support/apiserver.py`): what a test does to the cluster (add,
change or delete a Deployment or a Namespace, point a function's EndpointSlice at a real host:port),
what OpenFaaS itself writes (function Deployments in the shapes faas-netes and the Function CRD's
operator make them, and faas-netes' wholesale update), and what the cluster's own controllers would
do (bump generation, fill Deployment status, make pods ready after a delay once a function is scaled
up, empty the EndpointSlice when it is scaled to zero, empty a namespace being deleted).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import dataclass
from typing import Any

from tests.support._apiserver_store import ApiError, Kind, Obj, Store, merge_patch, now_rfc3339

DEPLOYMENTS = Kind("apps", "v1", "deployments", "Deployment")
ENDPOINT_SLICES = Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
EVENTS = Kind("", "v1", "events", "Event")
EVENTS_V1 = Kind("events.k8s.io", "v1", "events", "Event")
LEASES = Kind("coordination.k8s.io", "v1", "leases", "Lease")
KINDS = (DEPLOYMENTS, ENDPOINT_SLICES, EVENTS, EVENTS_V1, LEASES)  # namespaced
NAMESPACES = Kind("", "v1", "namespaces", "Namespace", namespaced=False)
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
        """A hand-written Deployment: `labels` on its own metadata only, a pod template labelled
        `app: NAME` (for OpenFaaS's own shapes see `add_faas_netes_function` and `add_crd_function`)."""
        body: Obj = {
            "metadata": {"name": name, "labels": dict(labels or {}), "annotations": dict(annotations or {})},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
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

    def replace_deployment(self, obj: Obj) -> Obj:
        """Store `obj` as its Deployment's next version, as `kubectl replace` would."""
        meta = obj["metadata"]
        old = self.store.get(DEPLOYMENTS, meta["namespace"], meta["name"])
        return self._save_deployment(copy.deepcopy(obj), old)

    def delete_deployment(self, name: str, *, namespace: str = "openfaas-fn") -> None:
        self.store.delete(DEPLOYMENTS, namespace, name)

    # ----- functions in the shapes OpenFaaS writes them ---------------------------------------

    def add_faas_netes_function(
        self,
        name: str,
        *,
        namespace: str = "openfaas-fn",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        image: str | None = None,
        replicas: int | None = None,
        ready_replicas: int | None = None,
    ) -> Obj:
        """A function as `faas-cli deploy` makes it through faas-netes.

        Transcribed from openfaas/faas-netes 03477885, `pkg/handlers/deploy.go` (`makeDeploymentSpec`,
        `buildAnnotations`, `getMinReplicaCount`): metadata labels `{faas_function}` only, the user's
        labels (scaling labels included) plus `faas_function` on the pod template, the same annotations
        (with `prometheus.io.scrape: "false"` unless given) on the Deployment and the pod template,
        selector `{faas_function}`, and 1 replica or `com.openfaas.scale.min` when it is above 0.
        """
        template_labels = {"faas_function": name, **(labels or {})}
        body: Obj = {
            "metadata": {
                "name": name,
                "labels": {"faas_function": name},
                "annotations": _faas_netes_annotations(annotations),
            },
            "spec": {
                "replicas": replicas if replicas is not None else _initial_replicas(labels),
                "selector": {"matchLabels": {"faas_function": name}},
                "revisionHistoryLimit": 10,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {
                        "name": name,
                        "labels": template_labels,
                        "annotations": _faas_netes_annotations(annotations),
                    },
                    "spec": _function_pod(name, image or f"example.com/{name}:latest", named_port=True),
                },
            },
        }
        if ready_replicas is not None:
            body["status"] = {"readyReplicas": ready_replicas}
        return self._create_deployment(namespace, body, explicit_ready=ready_replicas is not None)

    def faas_netes_update(
        self,
        name: str,
        *,
        namespace: str = "openfaas-fn",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        image: str | None = None,
    ) -> Obj:
        """What faas-netes does on `faas-cli deploy` of an existing function (a get, then a full update).

        Transcribed from openfaas/faas-netes 03477885, `pkg/handlers/update.go` (`updateDeploymentSpec`):
        the container's image replaced; the pod template's labels replaced by `{faas_function, uid:
        <nanoseconds>}` plus the request's labels; the Deployment's and the pod template's annotations
        replaced by the request's (so annotations others wrote, like a last-active mark, are gone);
        replicas set to `com.openfaas.scale.min` when it is above 0; the Deployment's own labels kept.
        """
        old = self.store.get(DEPLOYMENTS, namespace, name)
        new = copy.deepcopy(old)
        spec = new["spec"]
        container = spec["template"]["spec"]["containers"][0]
        container.update(image=image or container.get("image"), imagePullPolicy="Always")
        spec["template"]["metadata"]["labels"] = {
            "faas_function": name,
            "uid": str(time.time_ns() % 1_000_000_000),
            **(labels or {}),
        }
        if (minimum := _initial_replicas(labels, default=None)) is not None:
            spec["replicas"] = minimum
        new["metadata"]["annotations"] = _faas_netes_annotations(annotations)
        spec["template"]["metadata"]["annotations"] = _faas_netes_annotations(annotations)
        return self._save_deployment(new, old)

    def add_crd_function(
        self,
        name: str,
        *,
        namespace: str = "openfaas-fn",
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        image: str | None = None,
        replicas: int = 1,
        ready_replicas: int | None = None,
        function_uid: str = "0c6a3f5e-0000-4000-8000-000000000001",
    ) -> Obj:
        """A function as the Function CRD's operator made it from `kind: Function` (openfaas.com/v1).

        Transcribed from openfaas/faas-netes 0598356e, `pkg/controller/deployment.go` (`newDeployment`,
        `makeLabels`, `makeAnnotations`; the operator was removed at ff4f40bd): no metadata labels, an
        ownerReference (controller) to the Function, selector `{app, controller}`, pod template labels
        `{faas_function, app, controller}` plus the spec's labels, and annotations
        `prometheus.io.scrape: "false"` plus the spec's plus the whole spec as JSON in
        `com.openfaas.function.spec`, on the Deployment and the pod template.
        """
        image = image or f"example.com/{name}:latest"
        function_spec: Obj = {"name": name, "image": image, "readOnlyRootFilesystem": False}
        if labels:
            function_spec["labels"] = dict(labels)
        if annotations:
            function_spec["annotations"] = dict(annotations)
        made = {
            "prometheus.io.scrape": "false",
            **(annotations or {}),
            "com.openfaas.function.spec": json.dumps(function_spec, separators=(",", ":")),
        }
        body: Obj = {
            "metadata": {
                "name": name,
                "annotations": dict(made),
                "ownerReferences": [
                    {
                        "apiVersion": "openfaas.com/v1",
                        "kind": "Function",
                        "name": name,
                        "uid": function_uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name, "controller": name}},
                "revisionHistoryLimit": 5,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {
                        "labels": {"faas_function": name, "app": name, "controller": name, **(labels or {})},
                        "annotations": dict(made),
                    },
                    "spec": _function_pod(name, image, named_port=False),
                },
            },
        }
        if ready_replicas is not None:
            body["status"] = {"readyReplicas": ready_replicas}
        return self._create_deployment(namespace, body, explicit_ready=ready_replicas is not None)

    # ----- namespaces -------------------------------------------------------------------------

    def add_namespace(
        self, name: str, *, annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None
    ) -> Obj:
        body: Obj = {
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
                "annotations": dict(annotations or {}),
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        return self.store.create(NAMESPACES, "", body)

    def annotate_namespace(self, name: str, annotations: dict[str, str | None]) -> Obj:
        """Merge annotations (None removes one), as `kubectl annotate namespace NAME k=v` / `k-` do."""
        old = self.store.get(NAMESPACES, "", name)
        new = merge_patch(old, {"metadata": {"annotations": annotations}})
        return self.store.commit(NAMESPACES, new, old=old)

    def delete_namespace(self, name: str) -> None:
        """As the namespace controller does: Terminating first, then everything in it, then the namespace."""
        old = self.store.get(NAMESPACES, "", name)
        terminating = merge_patch(
            old, {"metadata": {"deletionTimestamp": now_rfc3339()}, "status": {"phase": "Terminating"}}
        )
        self.store.commit(NAMESPACES, terminating, old=old)
        for kind, namespace, item in list(self.store.objects):
            if kind.namespaced and namespace == name:
                self.store.delete(kind, namespace, item)
        self.store.delete(NAMESPACES, "", name)

    def namespace(self, name: str) -> Obj:
        return copy.deepcopy(self.store.get(NAMESPACES, "", name))

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


def _faas_netes_annotations(given: dict[str, str] | None) -> dict[str, str]:
    """`buildAnnotations` (faas-netes `pkg/handlers/deploy.go`): the request's, scraping off by default."""
    annotations = dict(given or {})
    annotations.setdefault("prometheus.io.scrape", "false")
    return annotations


def _initial_replicas(labels: dict[str, str] | None, *, default: int | None = 1) -> int | None:
    """`getMinReplicaCount` (faas-netes `pkg/handlers/deploy.go`): the min label when it is above 0."""
    try:
        minimum = int((labels or {}).get("com.openfaas.scale.min", ""))
    except ValueError:
        return default
    return minimum if minimum > 0 else default


def _function_pod(name: str, image: str, *, named_port: bool) -> dict[str, Any]:
    port: Obj = {"containerPort": 8080, "protocol": "TCP"}
    if named_port:
        port["name"] = "http"
    return {
        "containers": [{"name": name, "image": image, "ports": [port], "imagePullPolicy": "Always"}],
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
    }
