"""A fake Kubernetes API server that speaks the real wire format, for tests of the kubernetes provider.

No machine here can run a real API server, and patching the client library would test nothing, so
this aiohttp server answers the unmodified kubernetes-asyncio client on a free loopback port: real
paths, JSON lists with `metadata.resourceVersion`, chunked watch streams of JSON lines, 410 ERROR
events for compacted versions, 409 on stale writes and `Status` error bodies. Tests drive it from
Python: add/modify/delete Deployments, simulate pods becoming ready behind an EndpointSlice, inject
failures and delays, drop watches, expire versions, and count requests per route.

Served: apps/v1 deployments (+ /scale), discovery.k8s.io/v1 endpointslices, core/v1 events,
events.k8s.io/v1 events and coordination.k8s.io/v1 leases (list, watch, create, get, put, patch, delete),
and the cluster-scoped core/v1 namespaces (the same verbs; a delete removes what the namespace holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes_asyncio.client import Configuration

from tests.support._apiserver_cluster import (
    DEPLOYMENTS,
    ENDPOINT_SLICES,
    EVENTS,
    EVENTS_V1,
    KINDS,
    LEASES,
    NAMESPACES,
    SERVICE_NAME_LABEL,
    Cluster,
)
from tests.support._apiserver_store import (
    ApiError,
    Change,
    Kind,
    Obj,
    Watcher,
    merge_patch,
    parse_selector,
    status_body,
)
from tests.support.waiting import until

__all__ = [
    "DEPLOYMENTS",
    "ENDPOINT_SLICES",
    "EVENTS",
    "EVENTS_V1",
    "LEASES",
    "NAMESPACES",
    "SERVICE_NAME_LABEL",
    "FakeApiServer",
    "Kind",
    "status_body",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Fault:
    method: str | None
    path: re.Pattern[str]
    watch: bool | None
    remaining: int
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0

    def matches(self, request: web.Request) -> bool:
        is_watch = _flag(request.query.get("watch"))
        return (
            self.remaining > 0
            and (self.method is None or self.method == request.method)
            and (self.watch is None or self.watch == is_watch)
            and self.path.search(request.path) is not None
        )


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str


def _flag(value: str | None) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (the client sends `True`)."""
    return value in ("1", "t", "T", "true", "True", "TRUE")


def _json(body: Obj, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


def _error(e: ApiError) -> web.Response:
    return _json(status_body(e.code, str(e), reason=e.reason), status=e.code)


JSON_PATCH = "application/json-patch+json"


class FakeApiServer(Cluster):
    """Start with `async with FakeApiServer() as api:`; point the client at `api.configuration()`."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeApiServer:
        app = web.Application(middlewares=[self._middleware])
        for kind in KINDS:
            base = f"{kind.prefix}/namespaces/{{namespace}}/{kind.plural}"
            app.router.add_route("GET", f"{kind.prefix}/{kind.plural}", self._bind(self._collection, kind))
            app.router.add_route("*", base, self._bind(self._collection, kind))
            app.router.add_route("*", base + "/{name}", self._bind(self._item, kind))
        app.router.add_route(
            "*", DEPLOYMENTS.prefix + "/namespaces/{namespace}/deployments/{name}/scale", self._scale
        )
        # Cluster-scoped: /api/v1/namespaces and /api/v1/namespaces/{name}.
        namespaces = f"{NAMESPACES.prefix}/{NAMESPACES.plural}"
        app.router.add_route("*", namespaces, self._bind(self._collection, NAMESPACES))
        app.router.add_route("*", namespaces + "/{name}", self._bind(self._item, NAMESPACES))
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.store.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    # ----- client configuration -------------------------------------------------------------

    def configuration(self) -> Configuration:
        config = Configuration(host=self.url)
        config.verify_ssl = False
        return config

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "test-token"}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                        }
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path

    # ----- fault injection and observation (test side) --------------------------------------

    def fail(
        self,
        method: str | None,
        path: str,
        *,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        watch: bool | None = None,
    ) -> None:
        """Answer the next `times` requests matching method and path regex with a `status` Status."""
        self.faults.append(
            Fault(method, re.compile(path), watch, times, status=status, retry_after=retry_after)
        )

    def delay(
        self, method: str | None, path: str, *, seconds: float, times: int = 1, watch: bool | None = None
    ) -> None:
        """Hold the next `times` matching requests for `seconds` before answering them normally."""
        self.faults.append(Fault(method, re.compile(path), watch, times, delay=seconds))

    def drop_watches(self) -> None:
        """Cut every open watch stream (the connection closes without a final chunk)."""
        self.store.drop_watches()

    def expire_resource_versions(self) -> None:
        """Compact history: the next watch from any version seen so far gets a 410 ERROR event."""
        self.store.expire()

    def count(self, method: str | None = None, path: str = "", *, watch: bool | None = None) -> int:
        """Requests seen so far matching method, path regex and (optionally) watch or not."""
        pattern = re.compile(path)
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and pattern.search(r.path)
            and (watch is None or _flag(r.query.get("watch")) == watch)
        )

    def replica_writes(self, name: str | None = None) -> int:
        """Writes of a Deployment's replicas (of `name`, or any): PATCH or PUT of its scale
        subresource, and the JSON patch of the Deployment a wake-up sends (conditional on zero)."""
        deployment = re.escape(name) if name is not None else "[^/]+"
        scale = re.compile(rf"/deployments/{deployment}/scale$")
        whole = re.compile(rf"/deployments/{deployment}$")
        return sum(
            1
            for r in self.requests
            if (r.method in ("PATCH", "PUT") and scale.search(r.path))
            or (r.method == "PATCH" and r.content_type == JSON_PATCH and whole.search(r.path))
        )

    async def wait_events(
        self, match: Callable[[Obj], bool], *, timeout: float = 5.0, what: str = "matching"
    ) -> list[Obj]:
        """The Events that `match`, once there is one: a controller writes its Event just after the
        scale it reports, so a test that has seen the new replica count must wait for it."""
        found: list[Obj] = []

        def arrived() -> bool:
            found[:] = [e for e in self.events() if match(e)]
            return bool(found)

        def so_far() -> str:
            return f"a {what} Event; Events so far: {[(e['reason'], e['message']) for e in self.events()]}"

        await until(arrived, within=timeout, what=so_far)
        return found

    @property
    def open_watches(self) -> int:
        return len(self.store.watchers)

    # ----- HTTP ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append(Request(request.method, request.path, dict(request.query), request.content_type))
        for fault in self.faults:
            if fault.matches(request):
                fault.remaining -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status is not None:
                    headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                    body = status_body(fault.status, f"injected failure {fault.status}")
                    return _json(body, status=fault.status, headers=headers)
                break
        try:
            return await handler(request)
        except ApiError as e:
            return _error(e)

    @staticmethod
    def _bind(method: Callable[[Kind, web.Request], Awaitable[web.StreamResponse]], kind: Kind) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await method(kind, request)

        return handler

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _error(ApiError(404, f"the server could not find the requested resource ({request.path})"))

    async def _body(self, request: web.Request) -> Obj:
        try:
            body = await request.json()
        except json.JSONDecodeError as e:
            raise ApiError(400, f"invalid JSON body: {e}") from e
        return body  # type: ignore[no-any-return]

    async def _collection(self, kind: Kind, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info.get("namespace")
        if request.method == "POST" and (namespace is not None or not kind.namespaced):
            body = await self._body(request)
            if kind == DEPLOYMENTS and namespace is not None:
                return _json(self._create_deployment(namespace, body), status=201)
            return _json(self.store.create(kind, namespace or "", body), status=201)
        if request.method != "GET":
            raise ApiError(405, f"method {request.method} is not allowed on {request.path}")
        selector = parse_selector(request.query.get("labelSelector"))
        if _flag(request.query.get("watch")):
            return await self._watch(kind, namespace, selector, request)
        items = self.store.list(kind, namespace, selector)
        return _json(
            {
                "kind": f"{kind.kind}List",
                "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": items,
            }
        )

    async def _watch(
        self,
        kind: Kind,
        namespace: str | None,
        selector: list[tuple[str, str, str | None]],
        request: web.Request,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def send(type_: str, obj: Obj) -> None:
            await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

        since = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        deadline = asyncio.get_running_loop().time() + timeout
        if since not in ("", "0") and self.store.too_old(int(since)):
            message = f"too old resource version: {since} ({self.store.compacted_before})"
            await send("ERROR", status_body(410, message, reason="Expired"))
            await response.write_eof()
            return response
        watcher = Watcher(kind, namespace, selector)
        self.store.watchers.add(watcher)
        sent = 0
        try:
            if since in ("", "0"):
                for obj in self.store.list(kind, namespace, selector):
                    await send("ADDED", obj)
                sent = self.store.rv
            else:
                sent = int(since)
                for change in list(self.store.log):
                    if change.rv > sent and (type_ := watcher.translate(change)) is not None:
                        await send(type_, change.obj)
                        sent = change.rv
            while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    # Wake now and then to notice a client that went away, as the real server
                    # forgets a watch whose connection closed.
                    item: Change | None = await asyncio.wait_for(watcher.queue.get(), min(remaining, 0.2))
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        return response
                    continue
                if item is None:  # dropped: cut the connection without the final chunk
                    if request.transport is not None:
                        request.transport.close()
                    return response
                if item.rv > sent and (type_ := watcher.translate(item)) is not None:
                    await send(type_, item.obj)
                    sent = item.rv
            if _flag(request.query.get("allowWatchBookmarks")):
                await send(
                    "BOOKMARK",
                    {
                        "kind": kind.kind,
                        "apiVersion": kind.api_version,
                        "metadata": {"resourceVersion": str(self.store.rv)},
                    },
                )
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except ConnectionError:
            pass
        finally:
            self.store.watchers.discard(watcher)
        return response

    async def _item(self, kind: Kind, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info.get("namespace", ""), request.match_info["name"]
        if request.method == "GET":
            return _json(copy.deepcopy(self.store.get(kind, namespace, name)))
        if request.method == "DELETE":
            if kind == NAMESPACES:
                self.delete_namespace(name)
            else:
                self.store.delete(kind, namespace, name)
            return _json({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200})
        old = self.store.get(kind, namespace, name)
        if request.method == "PUT":
            body = await self._body(request)
            self.store.check_version(old, body)
            new = copy.deepcopy(body)
            new["metadata"] = dict(new.get("metadata") or {}) | {
                k: old["metadata"][k]
                for k in ("uid", "creationTimestamp", "namespace", "name")
                if k in old["metadata"]
            }
            new["kind"], new["apiVersion"] = kind.kind, kind.api_version
        elif request.method == "PATCH":
            new = self._apply_patch(old, await self._body(request), request.content_type)
        else:
            raise ApiError(405, f"method {request.method} is not allowed on {request.path}")
        if kind == DEPLOYMENTS:
            return _json(self._save_deployment(new, old))
        return _json(self.store.commit(kind, new, old=old))

    def _apply_patch(self, old: Obj, patch: Any, content_type: str) -> Obj:
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise ApiError(400, "a merge patch must be a JSON object")
            self.store.check_version(old, patch)
            new: Obj = merge_patch(old, patch)
            return new
        if content_type == "application/json-patch+json":
            new = copy.deepcopy(old)
            for op in patch:
                *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
                target = new
                for part in parents:
                    target = target.setdefault(part, {})
                if op["op"] == "test":
                    # kube-apiserver (handlers/patch.go interpretJSONPatchError, since 1.12): a failed
                    # test is 422 Invalid with evanphx/json-patch's message, and nothing is applied.
                    if last not in target or target[last] != op["value"]:
                        raise ApiError(422, f"Testing value {op['path']} failed", reason="Invalid")
                elif op["op"] in ("add", "replace"):
                    target[last] = op["value"]
                elif op["op"] == "remove":
                    target.pop(last, None)
                else:
                    raise ApiError(422, f"json patch op {op['op']!r} is not supported by this fake")
            return new
        raise ApiError(415, f"the body of the request was in an unknown format: {content_type}")

    async def _scale(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        old = self.store.get(DEPLOYMENTS, namespace, name)
        if request.method in ("PUT", "PATCH"):
            body = await self._body(request)
            if request.method == "PUT":
                self.store.check_version(old, body)
                scale = body
            else:
                scale = self._apply_patch(self._scale_of(old), body, request.content_type)
            replicas = (scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise ApiError(
                    422, f"Scale.spec.replicas: Invalid value: {replicas!r}: must be an integer >= 0"
                )
            new = copy.deepcopy(old)
            new["spec"]["replicas"] = replicas
            old = self.store.get(DEPLOYMENTS, namespace, name)
            self._save_deployment(new, old)
        elif request.method != "GET":
            raise ApiError(405, f"method {request.method} is not allowed on {request.path}")
        return _json(self._scale_of(self.store.get(DEPLOYMENTS, namespace, name)))

    @staticmethod
    def _scale_of(deployment: Obj) -> Obj:
        meta = deployment["metadata"]
        labels = deployment["spec"]["selector"].get("matchLabels", {})
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": deployment["spec"].get("replicas", 1)},
            "status": {
                "replicas": (deployment.get("status") or {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
            },
        }
