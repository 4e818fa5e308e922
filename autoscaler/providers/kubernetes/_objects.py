"""Reading and writing the Kubernetes objects the provider deals in, as plain wire-format dicts.

Kept free of I/O so the rules are easy to see and to test: which Deployments are functions, how a
Deployment becomes a FunctionInfo (labels, replicas, ready replicas, last-active annotation), which
EndpointSlice endpoints can take traffic, and what a core/v1 Event about a function looks like.

Functions come in the shapes OpenFaaS makes them, so the rules follow its source:
- faas-netes (`pkg/handlers/deploy.go`, `makeDeploymentSpec`) puts only `faas_function` on the
  Deployment's metadata and the user's labels, scaling labels included, on the pod template; it reads
  them back from there (`pkg/k8s/function_status.go`) and replaces them there on every update
  (`pkg/handlers/update.go`);
- the Function CRD's operator (`pkg/controller/deployment.go`, before faas-netes ff4f40bd) left the
  metadata without labels, owned the Deployment through an ownerReference to an `openfaas.com`
  `Function`, and kept that Function's spec as JSON in the `com.openfaas.function.spec` annotation;
- a hand-written Deployment may carry its labels on its own metadata.
So a Deployment is a function when `faas_function` is on either label map, an openfaas.com Function
owns it, or it has a `com.openfaas.scale.*` label; labels are read from both maps, the pod template
winning (it is what OpenFaaS writes and reads) and the metadata filling in what it lacks.

Of the function's environment only `max_inflight` is kept (the watchdog's concurrency limit, which the
proxy honours): faas-netes writes stack.yml's `environment:` as `{"name": K, "value": V}` entries of
the one container it makes, named after the function (`buildEnvVars`, `makeDeploymentSpec`), and reads
them back from `containers[0]` (`pkg/k8s/function_status.go`); so the container named after the
Deployment, else the first one.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import CoreV1Event, V1EventSource, V1ObjectMeta, V1ObjectReference

from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionInfo, FunctionRef
from autoscaler.providers.kubernetes._shared import Shared
from autoscaler.spec import MAX_INFLIGHT_ENV

log = logging.getLogger(__name__)

Obj = dict[str, Any]

FUNCTION_LABEL = "faas_function"  # the label faas-netes puts on a function's Deployment and pods
SCALE_LABEL_PREFIX = "com.openfaas.scale."
EXTENSION_PREFIX = "autoscaler.dev/"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
EVENT_MESSAGE_LIMIT = 1024  # the API server rejects longer Event messages
OWNER_GROUP = "openfaas.com"  # the Function CRD's group (v1; the old operator's v1alpha2 too)
OWNER_KIND = "Function"
SPEC_ANNOTATION = "com.openfaas.function.spec"
# Annotations never kept in the cache: the spec is kept parsed, and kubectl's copy of the whole
# applied object would only cost memory.
_DROPPED_ANNOTATIONS = (SPEC_ANNOTATION, "kubectl.kubernetes.io/last-applied-configuration")

TEMPLATE, DEPLOYMENT, BOTH = "template", "deployment", "both"


def is_function(labels: Mapping[str, str], *, owner: str | None = None) -> bool:
    """A Deployment is a function when OpenFaaS labelled or owns it, or it carries scaling labels."""
    return (
        owner is not None
        or FUNCTION_LABEL in labels
        or any(key.startswith(SCALE_LABEL_PREFIX) for key in labels)
    )


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()} if isinstance(value, dict) else {}


def function_owner(meta: Mapping[str, Any]) -> str | None:
    """`Function/NAME` when an openfaas.com Function owns the object (the CRD operator's shape)."""
    for owner in meta.get("ownerReferences") or []:
        if not isinstance(owner, dict):
            continue
        group = str(owner.get("apiVersion", "")).partition("/")[0]
        if group == OWNER_GROUP and owner.get("kind") == OWNER_KIND and owner.get("name"):
            return f"{OWNER_KIND}/{owner['name']}"
    return None


def _is_scaling(key: str) -> bool:
    return key.startswith((SCALE_LABEL_PREFIX, EXTENSION_PREFIX))


def merge_labels(
    template: Mapping[str, str], metadata: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str], tuple[str, ...]]:
    """(labels, where each came from, conflicts): the pod template wins, the metadata fills in.

    A conflict is a scaling label (`com.openfaas.scale.*`, `autoscaler.dev/*`) both maps hold with
    different values; other labels (`app`, faas-netes' per-update `uid`) are not worth a warning.
    """
    labels = dict(metadata) | dict(template)
    sources = {
        key: BOTH if key in template and key in metadata else TEMPLATE if key in template else DEPLOYMENT
        for key in labels
    }
    conflicts = tuple(
        f"label {key}: the pod template says {template[key]!r}, the Deployment's metadata "
        f"{metadata[key]!r}; using the pod template's {template[key]!r}"
        for key in sorted(template.keys() & metadata.keys())
        if _is_scaling(key) and template[key] != metadata[key]
    )
    return labels, sources, conflicts


def parse_function_spec(value: str | None, *, where: str) -> dict[str, Any] | None:
    """The Function spec from the CRD operator's annotation; bad JSON is logged and ignored."""
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as e:
        log.warning("%s: annotation %s is not JSON (%s); ignoring it", where, SPEC_ANNOTATION, e)
        return None
    if not isinstance(parsed, dict):
        log.warning("%s: annotation %s is not a JSON object; ignoring it", where, SPEC_ANNOTATION)
        return None
    return parsed


def ref_of(obj: Obj) -> FunctionRef:
    meta = obj.get("metadata") or {}
    return FunctionRef(name=str(meta.get("name", "")), namespace=str(meta.get("namespace", "")))


def parse_last_active(value: str | None, *, where: str) -> float | None:
    """Unix seconds from the last-active annotation; a bad value is logged and ignored."""
    if value is None or value == "":
        return None
    try:
        parsed = float(value)
    except ValueError:
        parsed = math.nan
    if not math.isfinite(parsed) or parsed < 0:
        log.warning(
            "%s: annotation %s=%r is not unix seconds; ignoring it", where, LAST_ACTIVE_ANNOTATION, value
        )
        return None
    return parsed


def format_last_active(when: float) -> str:
    return f"{when:.3f}"


def env_max_inflight(pod: Mapping[str, Any], *, name: str) -> str | None:
    """The raw `max_inflight` of the function container's env, or None when unset or not readable.

    A `valueFrom` entry (a ConfigMap or Secret key, a field reference) cannot be read from the
    Deployment: it counts as unset, and a debug line says so.
    """
    containers = [c for c in pod.get("containers") or [] if isinstance(c, dict)]
    container = next((c for c in containers if c.get("name") == name), containers[0] if containers else None)
    if container is None:
        return None
    for entry in container.get("env") or []:
        if not isinstance(entry, dict) or entry.get("name") != MAX_INFLIGHT_ENV:
            continue
        value = entry.get("value")
        if value is not None:
            return str(value)
        if entry.get("valueFrom"):
            log.debug(
                "%s: env %s of container %s is a valueFrom reference, not readable here; no limit from it",
                name,
                MAX_INFLIGHT_ENV,
                container.get("name"),
            )
            return None
        return ""  # `value` omitted is the empty string in the API (EnvVar.value defaults to "")
    return None


def function_info(obj: Obj, shared: Shared | None = None) -> FunctionInfo | None:
    """The cache entry for a Deployment, or None when it is not a function.

    With `shared`, the entry's strings and common maps are the cache's one copy (`_shared`).
    """
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    template = ((spec.get("template") or {}).get("metadata")) or {}
    labels, sources, conflicts = merge_labels(_strings(template.get("labels")), _strings(meta.get("labels")))
    owner = function_owner(meta)
    if not is_function(labels, owner=owner):
        return None
    annotations = _strings(meta.get("annotations"))
    ref = ref_of(obj)
    owner_spec = None
    if owner is not None:
        owner_spec = parse_function_spec(annotations.get(SPEC_ANNOTATION), where=ref.key)
    for key in _DROPPED_ANNOTATIONS:
        annotations.pop(key, None)
    replicas = spec.get("replicas")
    env = env_max_inflight((spec.get("template") or {}).get("spec") or {}, name=ref.name)
    if shared is not None:
        ref = FunctionRef(name=ref.name, namespace=sys.intern(ref.namespace))
        env = None if env is None else sys.intern(env)
        labels, sources, annotations = (
            shared.strings(labels),
            shared.map(sources),
            shared.map(annotations),
        )
    return FunctionInfo(
        ref=ref,
        labels=labels,
        replicas=1 if replicas is None else int(replicas),  # the API's default when unset
        ready_replicas=int(status.get("readyReplicas") or 0),
        annotations=annotations,
        last_active=parse_last_active(annotations.get(LAST_ACTIVE_ANNOTATION), where=ref.key),
        label_sources=sources,
        conflicts=conflicts,
        owner=owner,
        owner_spec=owner_spec,
        env_max_inflight=env,
    )


def takes_new_requests(conditions: Mapping[str, Any]) -> bool:
    """Whether an EndpointSlice endpoint may get new requests, from its `conditions`.

    discovery.k8s.io/v1 `EndpointConditions`, each field a `*bool` whose nil has a meaning:
    - `ready`: ready to receive traffic; nil is to be read as true (older docs: "unknown, in most
      cases treat as ready"); never true for a terminating endpoint unless the Service publishes
      not-ready addresses;
    - `serving`: like `ready` but set regardless of terminating (a terminating pod still passing
      its readiness probe is `serving: true, ready: false`); nil is true (older docs: defer to ready);
    - `terminating`: the endpoint is terminating; nil is false.
    A new request goes only to an endpoint that is ready, serving and not terminating: one that is
    shutting down finishes what it has and gets nothing new, even where a controller left `ready`
    unset or set it true. (kube-proxy falls back to serving terminating endpoints when none is ready;
    the proxy holds the request and wakes the function instead.)
    """
    return (
        conditions.get("ready") is not False
        and conditions.get("serving") is not False
        and conditions.get("terminating") is not True
    )


def slice_urls(obj: Obj) -> tuple[str, tuple[str, ...]]:
    """(service name, base URLs of the endpoints that take new requests) of one EndpointSlice."""
    meta = obj.get("metadata") or {}
    service = str((meta.get("labels") or {}).get(SERVICE_NAME_LABEL, ""))
    ports = [p for p in obj.get("ports") or [] if p.get("port")]
    if not ports:
        return service, ()
    port = next((p for p in ports if p.get("name") == "http"), ports[0])["port"]
    urls = []
    for endpoint in obj.get("endpoints") or []:
        if not takes_new_requests(endpoint.get("conditions") or {}):
            continue
        addresses = endpoint.get("addresses") or []
        if addresses:
            host = str(addresses[0])
            urls.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
    return service, tuple(urls)


def rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_body(
    ref: FunctionRef,
    *,
    uid: str | None,
    reason: str,
    message: str,
    warning: bool,
    component: str,
    instance: str,
    now: float,
) -> CoreV1Event:
    """A new core/v1 Event about a function's Deployment (count 1)."""
    stamp = datetime.fromtimestamp(now, UTC)
    return CoreV1Event(
        # Named as client-go names them: object name plus a hex nanosecond timestamp.
        metadata=V1ObjectMeta(name=f"{ref.name}.{int(now * 1e9):x}", namespace=ref.namespace),
        involved_object=V1ObjectReference(
            kind="Deployment", api_version="apps/v1", name=ref.name, namespace=ref.namespace, uid=uid or None
        ),
        reason=reason,
        message=message[:EVENT_MESSAGE_LIMIT],
        type="Warning" if warning else "Normal",
        source=V1EventSource(component=component),
        reporting_component=component,
        reporting_instance=instance,
        count=1,
        first_timestamp=stamp,
        last_timestamp=stamp,
    )
