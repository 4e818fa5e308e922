"""Object storage, resourceVersions and watch fan-out for the fake Kubernetes API server.

Kept apart from the HTTP layer (`tests/support/apiserver.py`) so the semantics that the provider
depends on (one global resourceVersion counter as in etcd, a bounded event history that can be
compacted so old versions answer 410, label selectors that turn MODIFIED into ADDED/DELETED for a
watcher whose selector starts or stops matching) are in one small, readable place.
"""

from __future__ import annotations

import asyncio
import copy
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(code: int, message: str, *, reason: str | None = None, details: Obj | None = None) -> Obj:
    """A `Status` object as the API server sends in error bodies and watch ERROR events."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or STATUS_REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Kind:
    """One resource type the fake server serves."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True  # False: cluster-scoped (Namespace), stored under namespace ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


class ApiError(Exception):
    """Raised inside the store; the HTTP layer turns it into a Status response."""

    def __init__(self, code: int, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


_SELECTOR_TERM = re.compile(r"^\s*(!?)([A-Za-z0-9./_-]+)\s*(?:(==|!=|=)\s*([A-Za-z0-9._-]*))?\s*$")


def parse_selector(text: str | None) -> list[tuple[str, str, str | None]]:
    """`a=b,c!=d,e,!f` -> [(op, key, value)]; set-based `in (...)` answers 400 as unsupported here."""
    terms: list[tuple[str, str, str | None]] = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        match = _SELECTOR_TERM.match(part)
        if match is None:
            raise ApiError(
                400, f"unable to parse requirement: {part!r} (this fake supports =, ==, !=, key, !key)"
            )
        negate, key, op, value = match.groups()
        if negate:
            terms.append(("!", key, None))
        elif op is None:
            terms.append(("exists", key, None))
        else:
            terms.append(("!=" if op == "!=" else "=", key, value))
    return terms


def selector_matches(terms: list[tuple[str, str, str | None]], obj: Obj) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for op, key, value in terms:
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also used for strategic merge on maps, which is all the provider sends)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(slots=True)
class Change:
    rv: int
    kind: Kind
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    old: Obj | None


@dataclass(eq=False, slots=True)
class Watcher:
    kind: Kind
    namespace: str | None
    selector: list[tuple[str, str, str | None]]
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)

    def translate(self, change: Change) -> str | None:
        """The event type this watcher sees for `change`, or None when it is not in its view."""
        if change.kind != self.kind:
            return None
        if self.namespace is not None and change.obj["metadata"].get("namespace") != self.namespace:
            return None
        now = selector_matches(self.selector, change.obj)
        before = change.old is not None and selector_matches(self.selector, change.old)
        if change.type == "MODIFIED":
            if now and before:
                return "MODIFIED"
            if now:
                return "ADDED"
            return "DELETED" if before else None
        return change.type if now else None


class Store:
    """Every object, keyed by (kind, namespace, name), with one resourceVersion counter."""

    def __init__(self, *, history: int = 2000) -> None:
        self.objects: dict[tuple[Kind, str, str], Obj] = {}
        # The names of each (kind, namespace): a namespaced list costs what the namespace holds, as
        # a real API server's does, not a sort of every object (1,000 listings of 500 namespaces).
        self._names: dict[tuple[Kind, str], set[str]] = {}
        self.rv = 1
        self.compacted_before = 0  # watches from a version below this answer 410
        self.log: deque[Change] = deque(maxlen=history)
        self.watchers: set[Watcher] = set()

    def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            raise ApiError(404, f'{kind.plural}.{kind.group or "core"} "{name}" not found')
        return obj

    def list(
        self, kind: Kind, namespace: str | None, selector: list[tuple[str, str, str | None]]
    ) -> list[Obj]:
        if namespace is not None:
            found = (
                self.objects[(kind, namespace, name)]
                for name in sorted(self._names.get((kind, namespace), ()))
            )
            return [copy.deepcopy(obj) for obj in found if selector_matches(selector, obj)]
        return [
            copy.deepcopy(obj)
            for (k, _, _), obj in sorted(self.objects.items(), key=lambda item: item[0][1:])
            if k == kind and selector_matches(selector, obj)
        ]

    def create(self, kind: Kind, namespace: str, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422, f"{kind.kind}: metadata.name: Required value: name or generateName is required"
                )
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if (kind, namespace, meta["name"]) in self.objects:
            raise ApiError(409, f'{kind.plural} "{meta["name"]}" already exists', reason="AlreadyExists")
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
        if kind.namespaced:
            meta["namespace"] = namespace
        meta.setdefault("generation", 1)
        obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
        return self.commit(kind, obj, old=None)

    def commit(self, kind: Kind, obj: Obj, *, old: Obj | None) -> Obj:
        """Store a new version of an object and tell every watcher."""
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        namespace = meta.get("namespace", "")
        self.objects[(kind, namespace, meta["name"])] = obj
        self._names.setdefault((kind, namespace), set()).add(meta["name"])
        self._publish(Change(self.rv, kind, "ADDED" if old is None else "MODIFIED", copy.deepcopy(obj), old))
        return copy.deepcopy(obj)

    def delete(self, kind: Kind, namespace: str, name: str) -> Obj:
        obj = self.get(kind, namespace, name)
        del self.objects[(kind, namespace, name)]
        self._names[(kind, namespace)].discard(name)
        self.rv += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._publish(Change(self.rv, kind, "DELETED", gone, None))
        return gone

    def check_version(self, current: Obj, given: Obj) -> None:
        wanted = (given.get("metadata") or {}).get("resourceVersion")
        have = current["metadata"]["resourceVersion"]
        if wanted and wanted != have:
            name = current["metadata"]["name"]
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {current["kind"].lower()}s "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )

    def too_old(self, rv: int) -> bool:
        oldest = self.log[0].rv if len(self.log) == self.log.maxlen else 0
        return rv < self.compacted_before or rv < oldest - 1

    def expire(self) -> None:
        """Compact history: any watch from a version seen so far answers 410 Gone."""
        self.rv += 1
        self.compacted_before = self.rv

    def drop_watches(self) -> None:
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(None)

    def _publish(self, change: Change) -> None:
        self.log.append(change)
        for watcher in list(self.watchers):
            if watcher.translate(change) is not None:
                watcher.queue.put_nowait(change)
