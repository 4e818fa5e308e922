"""The admin port: liveness, readiness and Prometheus metrics, apart from the function traffic.

Keeping these off the data port means a scrape or a probe never competes with a route a function
could own, and the data port can stop accepting on shutdown while probes still answer (readiness
turns 503 first, so the load balancer stops sending before the listener closes).

With `--workers N` each worker answers its supervisor on a private Unix socket (`worker_app`): the
same routes plus `/registry`, its registry's families as JSON. The supervisor's one admin port
sums them (`merge`) and writes one set of series, as Prometheus would see one process: counters,
histograms and gauges such as in-flight requests add up over the workers, while the families that
describe the cluster rather than the traffic (`gateway_service_*`, from each worker's copy of the
provider's cache) are taken from one worker, not multiplied. Merging what the workers already
count keeps their hot path as it is (prometheus_client's multiprocess mode would need its own
metric objects, a lock and a file write per count, and cannot carry the Go-named families).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from autoscaler.proxy._metrics import Families, GoFamily, exposition
from autoscaler.routes import error_response

__all__ = ["Snapshot", "admin_app", "error_response", "exposition_of", "merge", "snapshot", "worker_app"]

_TEXT = "text/plain; charset=utf-8"
# Families that describe the functions (the provider's cache), the same in every worker: not summed.
SHARED_PREFIX = "gateway_service_"
# Families whose values only grow: a dead worker's last counts are kept so that the sums never drop.
_GROWING = frozenset({"counter", "histogram", "summary"})
_CREATED = "_created"  # prometheus_client's sample of when a counter or histogram series began

Snapshot = list[dict[str, Any]]


def admin_app(*, ready: Callable[[], bool], registry: CollectorRegistry) -> web.Application:
    """`/healthz` (the process answers), `/readyz` (started, not draining), `/metrics`."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n", content_type="text/plain")

    async def readyz(_request: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n", content_type="text/plain")
        return web.Response(status=503, text="not ready: starting or draining\n", content_type="text/plain")

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=exposition(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


def worker_app(*, ready: Callable[[], bool], registry: CollectorRegistry) -> web.Application:
    """A worker's routes for its supervisor: the admin routes plus `/registry` (see `snapshot`)."""

    async def families(_request: web.Request) -> web.Response:
        return web.json_response(snapshot(registry))

    app = admin_app(ready=ready, registry=registry)
    app.router.add_get("/registry", families)
    return app


def snapshot(registry: Collector) -> Snapshot:
    """Every family of `registry` as plain data: its head, its Go name and type if any, its samples."""
    out: Snapshot = []
    for family in registry.collect():
        go = None
        if isinstance(family, GoFamily):
            go = [family.go_name, family.go_type, list(family.label_names)]
        out.append(
            {
                "name": family.name,
                "documentation": family.documentation,
                "type": family.type,
                "unit": family.unit,
                "go": go,
                "samples": [[s.name, s.labels, s.value] for s in family.samples],
            }
        )
    return out


def _key(family: dict[str, Any]) -> str:
    return str(family["go"][0] if family["go"] else family["name"])


def growing(snap: Snapshot) -> Snapshot:
    """The families of `snap` that only grow (counters, histograms): what a dead worker leaves."""
    return [f for f in snap if (f["go"][1] if f["go"] else f["type"]) in _GROWING]


def merge(snaps: Iterable[Snapshot]) -> Snapshot:
    """One snapshot: each sample summed over `snaps`, the shared families from the first that has any
    (and a series' `_created` time, the earliest).

    Families keep the order they first appear in; a Go family's series are sorted by label values,
    as Go's registry writes them (a series keeps its samples' order: buckets, sum, count).
    """
    heads: dict[str, dict[str, Any]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for snap in snaps:
        for family in snap:
            key = _key(family)
            if key not in heads:
                heads[key], values[key] = family, {}
            summed = values[key]
            if key.startswith(SHARED_PREFIX) and summed:
                continue
            for name, labels, value in family["samples"]:
                sample = (name, tuple(sorted(labels.items())))
                if sample not in summed:
                    summed[sample] = value
                elif name.endswith(_CREATED):  # when a series began: the earliest worker's, not a sum
                    summed[sample] = min(summed[sample], value)
                else:
                    summed[sample] += value
    out: Snapshot = []
    for key, head in heads.items():
        samples: list[list[Any]] = [[n, dict(labels), v] for (n, labels), v in values[key].items()]
        if head["go"]:
            names = head["go"][2]
            samples.sort(key=lambda s: tuple(s[1].get(n, "") for n in names))
        out.append({**head, "samples": samples})
    return out


def families(snap: Snapshot) -> list[Metric]:
    """The metric families of a snapshot, Go families as GoFamily so that `exposition` writes them as Go."""
    out: list[Metric] = []
    for family in snap:
        metric: Metric
        if family["go"]:
            go_name, go_type, labels = family["go"]
            metric = GoFamily(go_name, family["documentation"], go_type, labels)
        else:
            metric = Metric(family["name"], family["documentation"], family["type"], family["unit"])
        metric.samples = [Sample(name, labels, value) for name, labels, value in family["samples"]]
        out.append(metric)
    return out


def exposition_of(snap: Snapshot) -> bytes:
    """The text a scrape gets for a (merged) snapshot, written as one process's `exposition`."""
    return exposition(Families(families(snap)))
