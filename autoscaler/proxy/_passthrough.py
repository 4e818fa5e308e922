"""Requests for the real provider: behind an OpenFaaS gateway, everything that is not a function call.

The gateway sends its provider `/system/...`, `/healthz` and the rest; with `--provider-url` the proxy
passes them to faas-netes as they came (the raw target, checked by `_routing.passthrough_target` so
that no normalisation can turn one into a function route), bodies streamed both ways: they may be
large and are never held, so they take nothing from the function bodies' buffers. A WebSocket (or
other `Upgrade`) request is spliced to the provider after its 101, as function calls are (`_tunnel`).
"""

from __future__ import annotations

from aiohttp import web

from autoscaler.proxy._admin import error_response
from autoscaler.proxy._client import StreamBody
from autoscaler.proxy._forward import Forwarder, UpstreamError, request_headers
from autoscaler.proxy._routing import RouteError, passthrough_target
from autoscaler.proxy._tunnel import upgrade_of


async def pass_through(
    request: web.BaseRequest, *, forwarder: Forwarder, origin: str, base: str, what: str
) -> web.StreamResponse:
    """Send a non-function request to the provider at `origin` (+ `base` path); stream both bodies."""
    try:
        target = passthrough_target(request.raw_path)
    except RouteError as e:
        return error_response(e.status, e.message)
    try:
        body: StreamBody | None = None
        if request.body_exists:
            if request.headers.get("Expect", "").lower() == "100-continue":
                # The client waits for this before it sends the body (the provider's own
                # 100 Continue, if any, is an interim answer the upstream client skips).
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = StreamBody(read=request.content.readany, length=request.content_length)
        upstream = await forwarder.open(
            method=request.method, endpoint=origin, path=base + target,
            headers=request_headers(request, trusted=True), body=body, key="provider", what=what,
            upgrade=upgrade_of(request) is not None,  # a WebSocket to the provider is spliced too
        )  # fmt: skip
        return await forwarder.relay(request, upstream, key="provider", what=what)
    except UpstreamError as e:
        response = error_response(e.status, str(e))
        if request.body_exists:
            response.force_close()  # the rest of the request body may still be on its way
        return response
