"""Turn a raw request target into (function, upstream path), or refuse it.

The proxy must never become an open proxy (invariant 4): the function is taken only from the first
path segment after `/function/`, and the target is checked on its raw, undecoded form so that no
normalisation (`..`, `%2e`, `%2f`, backslashes) can move a request onto another function's route or
another host. The upstream host always comes from the provider's endpoints, never from the request.

Behind an OpenFaaS gateway every other target goes to the real provider (`--provider-url`), raw and
unchanged, but only in origin form and only when no normalisation could turn it into another route:
the provider's router cleans paths, so `/system/../function/NAME` would reach a function past the
hold and the counts that keep a busy function from being scaled to zero.
"""

from __future__ import annotations

import re

from autoscaler.errors import ConfigError
from autoscaler.interfaces import FunctionRef

PREFIX = "/function/"

# Kubernetes object names (DNS-1123 labels): what a Deployment name and a namespace can be.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Encoded '.', '/' and '\' let a client smuggle a path step past a check on the decoded path.
_ENCODED_STEP = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
# Parsed segments are looked up on every request: cache them, but never let names sent by clients
# grow the cache without bound (a cached name is still checked against the provider each time).
_CACHE_LIMIT = 4096


class RouteError(Exception):
    """The request target is not a function route; `status` and `message` go back to the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Router:
    """Parses `/function/NAME[.NAMESPACE][/rest][?query]` targets with a small cache of names."""

    __slots__ = ("_cache", "_default_namespace")

    def __init__(self, *, default_namespace: str) -> None:
        if not _DNS_LABEL.fullmatch(default_namespace):
            raise ConfigError(
                f"--default-namespace {default_namespace!r} is not a valid Kubernetes namespace name "
                "(lower-case letters, digits and '-', at most 63 characters)"
            )
        self._default_namespace = default_namespace
        self._cache: dict[str, FunctionRef] = {}

    def resolve(self, target: str) -> tuple[FunctionRef, str]:
        """Return the function and the path (with query) to send upstream, or raise RouteError."""
        if not target.startswith(PREFIX):
            raise RouteError(
                404,
                "no such route: functions are reached at /function/NAME/... or /function/NAME.NAMESPACE/...",
            )
        path, sep, query = target.partition("?")
        check_path(path)
        rest_at = path.find("/", len(PREFIX))
        if rest_at < 0:
            segment, rest = path[len(PREFIX) :], "/"
        else:
            segment, rest = path[len(PREFIX) : rest_at], path[rest_at:]
        ref = self._cache.get(segment)
        if ref is None:
            ref = self._parse(segment)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[segment] = ref
        return ref, rest + sep + query

    def _parse(self, segment: str) -> FunctionRef:
        if not segment:
            raise RouteError(404, "no function named: use /function/NAME/... or /function/NAME.NAMESPACE/...")
        name, dot, namespace = segment.partition(".")
        if not _DNS_LABEL.fullmatch(name) or (dot and not _DNS_LABEL.fullmatch(namespace)):
            raise RouteError(
                400,
                f"invalid function name {segment!r}: expected NAME or NAME.NAMESPACE, each made of "
                "lower-case letters, digits and '-' (at most 63 characters)",
            )
        return FunctionRef(name=name, namespace=namespace or self._default_namespace)


def passthrough_target(target: str) -> str:
    """The raw target to send to the provider as it came, or RouteError when it is not safe to pass."""
    if not target.startswith("/"):
        raise RouteError(
            400, "invalid request target: only paths (/...) are passed to the provider, not URLs or '*'"
        )
    path = target.partition("?")[0]
    check_path(path)
    if "//" in path:
        raise RouteError(400, "invalid path: empty segments ('//') are not allowed")
    return target


def check_path(path: str) -> None:
    """Refuse paths that could step outside their route once decoded or normalised."""
    if "\\" in path:
        raise RouteError(400, "invalid path: backslashes are not allowed")
    if "%" in path and _ENCODED_STEP.search(path):
        raise RouteError(400, "invalid path: encoded '.', '/' or '\\' (%2e, %2f, %5c) are not allowed")
    if "/." in path:
        for part in path.split("/"):
            if part in (".", ".."):
                raise RouteError(400, "invalid path: '.' and '..' segments are not allowed in a route")
