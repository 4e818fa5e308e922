"""Reading and writing the Kubernetes objects the provider deals in, as plain wire-format dicts.

Kept free of I/O so the rules are easy to see and to test: which Deployments are functions, how a
Deployment becomes a FunctionInfo (labels, replicas, ready replicas, last-active annotation), which
EndpointSlice endpoints can take traffic, and what a core/v1 Event about a function looks like.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import CoreV1Event, V1EventSource, V1ObjectMeta, V1ObjectReference

from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION, FunctionInfo, FunctionRef

log = logging.getLogger(__name__)

Obj = dict[str, Any]

FUNCTION_LABEL = "faas_function"
SCALE_LABEL_PREFIX = "com.openfaas.scale."
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
EVENT_MESSAGE_LIMIT = 1024  # the API server rejects longer Event messages


def is_function(labels: Mapping[str, str]) -> bool:
    """A Deployment is a function when OpenFaaS labelled it or it carries scaling labels."""
    return FUNCTION_LABEL in labels or any(key.startswith(SCALE_LABEL_PREFIX) for key in labels)


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


def function_info(obj: Obj) -> FunctionInfo | None:
    """The cache entry for a Deployment, or None when it is not a function."""
    meta = obj.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    if not is_function(labels):
        return None
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    ref = ref_of(obj)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    replicas = spec.get("replicas")
    return FunctionInfo(
        ref=ref,
        labels=labels,
        replicas=1 if replicas is None else int(replicas),  # the API's default when unset
        ready_replicas=int(status.get("readyReplicas") or 0),
        annotations=annotations,
        last_active=parse_last_active(annotations.get(LAST_ACTIVE_ANNOTATION), where=ref.key),
    )


def slice_urls(obj: Obj) -> tuple[str, tuple[str, ...]]:
    """(service name, base URLs of the ready endpoints) of one EndpointSlice."""
    meta = obj.get("metadata") or {}
    service = str((meta.get("labels") or {}).get(SERVICE_NAME_LABEL, ""))
    ports = [p for p in obj.get("ports") or [] if p.get("port")]
    if not ports:
        return service, ()
    port = next((p for p in ports if p.get("name") == "http"), ports[0])["port"]
    urls = []
    for endpoint in obj.get("endpoints") or []:
        # An unset `ready` means unknown, which consumers are told to treat as ready.
        if (endpoint.get("conditions") or {}).get("ready") is False:
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
