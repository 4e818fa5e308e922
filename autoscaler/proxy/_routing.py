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

from autoscaler.errors import ConfigError
from autoscaler.interfaces import DNS_LABEL, FunctionRef
from autoscaler.routes import RouteError, check_path, parse_function, split

__all__ = ["PREFIX", "RouteError", "Router", "check_path", "passthrough_target"]

PREFIX = "/function/"
# Parsed segments are looked up on every request: cache them, but never let names sent by clients
# grow the cache without bound (a cached name is still checked against the provider each time).
_CACHE_LIMIT = 4096


class Router:
    """Parses `/function/NAME[.NAMESPACE][/rest][?query]` targets with a small cache of names."""

    __slots__ = ("_cache", "_default_namespace")

    def __init__(self, *, default_namespace: str) -> None:
        if not DNS_LABEL.fullmatch(default_namespace):
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
        segment, rest = split(path, PREFIX)
        ref = self._cache.get(segment)
        if ref is None:
            ref = parse_function(segment, prefix=PREFIX, default_namespace=self._default_namespace)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[segment] = ref
        return ref, rest + sep + query


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
