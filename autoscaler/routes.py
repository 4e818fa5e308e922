"""Function routes in request targets, and the errors a caller gets back: one rule for every entry.

`/function/NAME[.NAMESPACE]/...` (the proxy) and `/async-function/NAME[.NAMESPACE]/...` (the async
accept) must resolve names the same way and refuse the same tricks, or one of them becomes the way
around the other (invariant 4: no open proxy, no path out of a function's route). The target is
checked on its raw, undecoded form, so no normalisation (`..`, `%2e`, `%2f`, backslashes) can move a
request onto another function's route.
"""

from __future__ import annotations

import re

from aiohttp import web

from autoscaler.interfaces import DNS_LABEL, FunctionRef

# Kubernetes object names (DNS-1123 labels): what a Deployment name and a namespace can be.
# Encoded '.', '/' and '\' let a client smuggle a path step past a check on the decoded path.
_ENCODED_STEP = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)


class RouteError(Exception):
    """The request target is not a function route; `status` and `message` go back to the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def split(path: str, prefix: str) -> tuple[str, str]:
    """(`NAME[.NAMESPACE]` segment, the rest of the path from its `/`) of a path under `prefix`."""
    rest_at = path.find("/", len(prefix))
    if rest_at < 0:
        return path[len(prefix) :], "/"
    return path[len(prefix) : rest_at], path[rest_at:]


def parse_function(segment: str, *, prefix: str, default_namespace: str) -> FunctionRef:
    """The function a route's first segment names, or RouteError (404 empty, 400 not a name)."""
    if not segment:
        raise RouteError(404, f"no function named: use {prefix}NAME/... or {prefix}NAME.NAMESPACE/...")
    name, dot, namespace = segment.partition(".")
    if not DNS_LABEL.fullmatch(name) or (dot and not DNS_LABEL.fullmatch(namespace)):
        raise RouteError(
            400,
            f"invalid function name {segment[:100]!r}: expected NAME or NAME.NAMESPACE, each made of "
            "lower-case letters, digits and '-' (at most 63 characters)",
        )
    return FunctionRef(name=name, namespace=namespace or default_namespace)


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


def not_found(ref: FunctionRef) -> RouteError:
    """The 404 for a function the provider does not know."""
    return RouteError(
        404,
        f"function {ref.key} not found: no such function is deployed in namespace "
        f"{ref.namespace!r} (check the name, the namespace and that the function is opted in)",
    )


def error_response(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """A plain-text error the caller can read: what went wrong and what to do."""
    response = web.Response(status=status, text=message + "\n", headers=headers)
    response.content_type = "text/plain"
    response.charset = "utf-8"
    return response
