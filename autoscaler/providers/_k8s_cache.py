"""The provider's memory of the cluster: functions, endpoints and readiness, kept by the watches.

`functions()`, `endpoints()` and `wait_ready()` are answered from here, so a tick or a proxied
request costs no API call. The watches (`_k8s_watch.Reflector`) feed it: a listing replaces what it
held for that namespace, an event changes one object, and every change of a function notifies the
provider's subscribers (how the loop hears of a wake-up). Objects of a namespace no longer followed
are ignored: its watches may deliver late. Per function it keeps a `FunctionInfo` (what the callers
read: labels, annotations less the big ones, replicas, owner), the Deployment's uid and the ready
endpoints' URLs, never the Deployment itself; the strings and maps functions have in common are kept
once (`_k8s_shared`), so 50,000 functions cost tens of MiB, not hundreds.

OpenFaaS rewrites a function's Deployment wholesale on every update (faas-netes
`pkg/handlers/update.go` replaces its annotations), wiping the last-active mark; the mark only ever
moves forward, so the cache keeps the newest one it had for the same object (same uid) until the
proxy's next mark writes it again.
"""

from __future__ import annotations

import asyncio
import dataclasses

from autoscaler.interfaces import FunctionInfo, FunctionRef
from autoscaler.providers._k8s_objects import Obj, function_info, ref_of, slice_urls
from autoscaler.providers._k8s_shared import Shared
from autoscaler.providers._subscribers import Subscribers


class FunctionCache:
    """What the watches of the `followed` namespaces last saw (the set is the provider's, shared)."""

    def __init__(self, followed: set[str]) -> None:
        self.followed = followed
        self.functions: dict[str, FunctionInfo] = {}
        self.subscribers = Subscribers()
        self._uids: dict[str, str] = {}
        # (namespace, slice name) -> (service, urls)
        self._slices: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
        self._endpoints: dict[str, tuple[str, ...]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._shared = Shared()

    # ----- reads -----------------------------------------------------------------------------

    def uid(self, ref: FunctionRef) -> str | None:
        return self._uids.get(ref.key)

    def last_active(self, ref: FunctionRef) -> float | None:
        info = self.functions.get(ref.key)
        return info.last_active if info is not None else None

    def endpoints(self, ref: FunctionRef) -> list[str]:
        return list(self._endpoints.get(ref.key, ()))

    async def wait_ready(self, ref: FunctionRef, timeout: float) -> bool:
        """True once the function's EndpointSlices list a ready endpoint; False after `timeout`."""
        if self._endpoints.get(ref.key):
            return True
        ready = self._ready.setdefault(ref.key, asyncio.Event())
        try:
            await asyncio.wait_for(ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # ----- upkeep (called by the watches) ----------------------------------------------------

    def forget(self, namespace: str) -> None:
        """Drop every function and endpoint of a namespace no longer followed."""
        self.sync_deployments(namespace, [])
        self.sync_slices(namespace, [])

    def _carry_mark(self, info: FunctionInfo, uid: str) -> FunctionInfo:
        """Keep the newest last-active mark the cache had for this same object (see the docstring)."""
        cached = self.functions.get(info.ref.key)
        if cached is None or cached.last_active is None or self._uids.get(info.ref.key) != uid:
            return info
        if info.last_active is not None and info.last_active >= cached.last_active:
            return info
        return dataclasses.replace(info, last_active=cached.last_active)

    def sync_deployments(self, namespace: str, items: list[Obj]) -> None:
        if namespace not in self.followed and items:
            return  # a late listing of a namespace no longer followed
        fresh = {}
        for obj in items:
            obj.setdefault("metadata", {}).setdefault("namespace", namespace)
            info = function_info(obj, self._shared)
            if info is not None:
                uid = str(obj["metadata"].get("uid") or "")
                fresh[info.ref.key] = self._carry_mark(info, uid)
                self._uids[info.ref.key] = uid
        stale = {key: info for key, info in self.functions.items() if info.ref.namespace == namespace}
        for key in stale.keys() - fresh.keys():
            del self.functions[key]
            self._uids.pop(key, None)
        self.functions.update(fresh)
        for key in stale.keys() | fresh.keys():
            if stale.get(key) != fresh.get(key):
                info = fresh.get(key) or stale[key]
                self.subscribers.notify(info.ref)

    def deployment_event(self, kind: str, obj: Obj) -> None:
        ref = ref_of(obj)
        if ref.namespace not in self.followed:
            return  # a late event of a namespace no longer followed
        info = None if kind == "DELETED" else function_info(obj, self._shared)
        if info is None:
            # Deleted, or no longer labelled as a function: either way it leaves the cache.
            if self.functions.pop(ref.key, None) is not None:
                self._uids.pop(ref.key, None)
                self.subscribers.notify(ref)
            return
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        self.functions[ref.key] = self._carry_mark(info, uid)
        self._uids[ref.key] = uid
        self.subscribers.notify(ref)

    def sync_slices(self, namespace: str, items: list[Obj]) -> None:
        if namespace not in self.followed and items:
            return
        touched = {service for (ns, _), (service, _) in self._slices.items() if ns == namespace}
        self._slices = {key: value for key, value in self._slices.items() if key[0] != namespace}
        for obj in items:
            service, urls = slice_urls(obj)
            self._slices[(namespace, str(obj["metadata"]["name"]))] = (service, urls)
            touched.add(service)
        for service in touched:
            self._refresh_endpoints(FunctionRef(name=service, namespace=namespace))

    def slice_event(self, kind: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if namespace not in self.followed:
            return
        before = self._slices.pop((namespace, name), None)
        service, urls = slice_urls(obj)
        if kind != "DELETED":
            self._slices[(namespace, name)] = (service, urls)
        for changed in {service, before[0] if before else service}:
            self._refresh_endpoints(FunctionRef(name=changed, namespace=namespace))

    def _refresh_endpoints(self, ref: FunctionRef) -> None:
        urls = sorted(
            {
                url
                for (ns, _), (service, found) in self._slices.items()
                if (ns, service) == (ref.namespace, ref.name)
                for url in found
            }
        )
        if urls:
            self._endpoints[ref.key] = tuple(urls)
        else:
            self._endpoints.pop(ref.key, None)
        ready = self._ready.setdefault(ref.key, asyncio.Event())
        if urls:
            ready.set()
        else:
            ready.clear()
