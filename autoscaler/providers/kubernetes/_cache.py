"""The provider's memory of the cluster: functions, endpoints and readiness, kept by the watches.

`functions()`, `endpoints()` and `wait_ready()` are answered from here, so a tick or a proxied
request costs no API call. The watches (`_watch.Reflector`) feed it: a listing replaces what it
held for that namespace, an event changes one object, and every change of a function notifies the
provider's subscribers (how the loop hears of a wake-up). Objects of a namespace no longer followed
are ignored: its watches may deliver late. Per function it keeps a `FunctionInfo` (what the callers
read: labels, annotations less the big ones, replicas, owner), the Deployment's uid and the ready
endpoints' URLs, never the Deployment itself; the strings and maps functions have in common are kept
once (`_shared`), so 50,000 functions cost tens of MiB, not hundreds. A readiness event exists
only while someone waits for a function that has no ready endpoint, not one per function.

Every upkeep step costs what it changes, not what the cache holds: functions and EndpointSlices are
indexed by namespace (a namespace's listing replaces only its own) and slices by their Service (a
slice's change recomputes only that function's endpoints). A first start over 500 namespaces makes
1,000 listings; with a scan of everything per listing or per slice that was quadratic (10,000
functions: 38 s of the event loop for the slices alone, `bench/proxy_scale_bench.py`).

OpenFaaS rewrites a function's Deployment wholesale on every update (faas-netes
`pkg/handlers/update.go` replaces its annotations), wiping the last-active mark; the mark only ever
moves forward, so the cache keeps the newest one it had for the same object (same uid) until the
proxy's next mark writes it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys

from autoscaler.interfaces import FunctionInfo, FunctionRef
from autoscaler.providers._subscribers import Subscribers
from autoscaler.providers.kubernetes._objects import Obj, function_info, ref_of, slice_urls
from autoscaler.providers.kubernetes._shared import Shared


class FunctionCache:
    """What the watches of the `followed` namespaces last saw (the set is the provider's, shared)."""

    def __init__(self, followed: set[str]) -> None:
        self.followed = followed
        self.functions: dict[str, FunctionInfo] = {}
        self.subscribers = Subscribers()
        self._uids: dict[str, str] = {}
        self._keys: dict[str, set[str]] = {}  # namespace -> its functions' keys
        # namespace -> slice name -> (service, urls); (namespace, service) -> its slices' names
        self._slices: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {}
        self._by_service: dict[tuple[str, str], tuple[str, ...]] = {}
        self._endpoints: dict[str, tuple[str, ...]] = {}
        # Only for functions waited for while they had no endpoint; dropped once they have one.
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
                key = sys.intern(info.ref.key)  # one copy of the key for all the maps below
                uid = str(obj["metadata"].get("uid") or "")
                fresh[key] = self._carry_mark(info, uid)
                self._uids[key] = uid
        stale = {key: self.functions[key] for key in self._keys.pop(namespace, ())}
        for key in stale.keys() - fresh.keys():
            del self.functions[key]
            self._uids.pop(key, None)
        self.functions.update(fresh)
        if fresh:
            self._keys[namespace] = set(fresh)
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
                keys = self._keys.get(ref.namespace)
                if keys is not None:
                    keys.discard(ref.key)
                    if not keys:
                        del self._keys[ref.namespace]
                self.subscribers.notify(ref)
            return
        key = sys.intern(ref.key)
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        self.functions[key] = self._carry_mark(info, uid)
        self._uids[key] = uid
        self._keys.setdefault(info.ref.namespace, set()).add(key)
        self.subscribers.notify(ref)

    def sync_slices(self, namespace: str, items: list[Obj]) -> None:
        if namespace not in self.followed and items:
            return
        old = self._slices.pop(namespace, {})
        fresh = {}
        for obj in items:
            fresh[str(obj["metadata"]["name"])] = _slice(obj)
        if fresh:
            self._slices[namespace] = fresh
        grouped: dict[str, list[str]] = {}
        for name, (service, _) in fresh.items():
            grouped.setdefault(service, []).append(name)
        touched = {service for service, _ in old.values()} | grouped.keys()
        for service in touched:
            self._index(namespace, service, tuple(grouped.get(service, ())))
            self._refresh_endpoints(FunctionRef(name=service, namespace=namespace))

    def slice_event(self, kind: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if namespace not in self.followed:
            return
        slices = self._slices.setdefault(namespace, {})
        before = slices.pop(name, None)
        service, urls = _slice(obj)
        if kind != "DELETED":
            slices[name] = (service, urls)
        if not slices:
            del self._slices[namespace]
        for changed in {service, before[0] if before else service}:
            names = tuple(n for n in self._by_service.get((namespace, changed), ()) if n != name)
            if name in slices and slices[name][0] == changed:
                names += (name,)
            self._index(namespace, changed, names)
            self._refresh_endpoints(FunctionRef(name=changed, namespace=namespace))

    def _index(self, namespace: str, service: str, names: tuple[str, ...]) -> None:
        if names:
            self._by_service[(namespace, service)] = names
        else:
            self._by_service.pop((namespace, service), None)

    def _refresh_endpoints(self, ref: FunctionRef) -> None:
        slices = self._slices.get(ref.namespace, {})
        names = self._by_service.get((ref.namespace, ref.name), ())
        if len(names) == 1:
            urls = slices[names[0]][1]  # the usual case: one slice, its tuple kept once
        else:
            urls = tuple(sorted({url for name in names for url in slices[name][1]}))
        if urls:
            self._endpoints[sys.intern(ref.key)] = urls
        else:
            self._endpoints.pop(ref.key, None)
        ready = self._ready.get(ref.key)  # made by a waiter only
        if ready is not None and urls:
            ready.set()
            del self._ready[ref.key]  # its waiters are woken; a later wait finds the endpoints


def _slice(obj: Obj) -> tuple[str, tuple[str, ...]]:
    """(service, its ready URLs sorted and once each): what the cache keeps of an EndpointSlice."""
    service, urls = slice_urls(obj)
    return service, tuple(sorted(set(urls)))
