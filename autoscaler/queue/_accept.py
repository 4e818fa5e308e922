"""The accept side of asynchronous calls: `POST|PUT /async-function/NAME[.NAMESPACE]/...` on the proxy.

A 202 is a promise that the call will be invoked, so it is answered only after JetStream acknowledged
the publish (the message is then stored on the server); any doubt is a 503 with a body that says
nothing was queued, never a silent drop. As the OpenFaaS gateway's queue proxy does, the whole request
is kept (method, path after the function, query, headers, body, callback URL) and the caller's
`X-Call-Id` is kept too, so a caller can correlate its callback and a function can spot a duplicate.

Only functions the provider knows are queued (invariant 4: no open proxy, also not later through a
queue), and paths that could step outside the function's route are refused here already, before the
proxy's own router refuses them at invocation time.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping

import nats.js.errors
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

from autoscaler.config import QueueSettings
from autoscaler.interfaces import FunctionInfo, FunctionRef, Provider
from autoscaler.queue._jetstream import DUPLICATE_WINDOW, NATS_ERRORS, NatsLink, QueueUnavailable
from autoscaler.queue._message import QueuedCall, subject
from autoscaler.routes import RouteError, check_path, error_response, not_found, parse_function, split

log = logging.getLogger("autoscaler.queue")

ASYNC_PREFIX = "/async-function/"
RETRY_LABEL_PREFIX = "com.openfaas.retry."
# Headers that describe one hop, not the call; the worker's own request sets them afresh.
HOP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Expect", "X-Call-Id",
    )
)  # fmt: skip
HEADER_ROOM = 4096  # bytes kept free for the NATS header block beyond the encoded call
_CALL_ID = re.compile(r"[\x21-\x7e]{1,128}")  # visible ASCII: it goes into headers and logs
_REASONS = {400: "bad_request", 404: "not_found", 405: "method", 413: "too_large", 503: "unavailable"}


# What leaves the queue's size unknown: NATS down or slow, or no link to it.
_UNKNOWN: tuple[type[Exception], ...] = (*NATS_ERRORS, QueueUnavailable)


def message_id(call: QueuedCall) -> str:
    """JetStream's de-duplication id of a call: one message per id within its duplicate window.

    The same call is the same `X-Call-Id` for the same function with the same body: a publish retried
    here, or a caller resending after a 503, is queued once. The call id alone is not enough: a
    callback that chains one asynchronous function to another carries the first call's id, and so
    would a caller reusing its id for two functions; either second call was dropped as a duplicate.
    """
    digest = hashlib.blake2b(call.body, digest_size=12).hexdigest()
    return f"{call.ref.key}/{call.call_id}/{digest}"


class AsyncAcceptor:
    """Queues asynchronous calls on JetStream; `accept(request)` is the proxy's hook."""

    def __init__(
        self,
        *,
        settings: QueueSettings,
        provider: Provider,
        default_namespace: str,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._settings = settings
        # On the proxy's admin port when the proxy's registry is given (autoscaler proxy does).
        self._accepted = Counter(
            "autoscaler_async_accepted",
            "Asynchronous calls stored on JetStream and answered 202 (duplicates not counted)",
            ["function_name"],
            registry=registry,
        )
        self._rejected = Counter(
            "autoscaler_async_rejected",
            "Asynchronous calls refused at accept, by reason (nothing was queued)",
            ["reason"],
            registry=registry,
        )
        self._provider = provider
        self._default_namespace = default_namespace
        self._clock = clock
        self._link = NatsLink(settings=settings, name="autoscaler-proxy")

    async def start(self, *, wait: float = 0.0) -> None:
        """Start connecting to NATS; wait up to `wait` seconds for it (never fails: 503s until then)."""
        await self._link.start()
        if wait > 0 and await self._link.wait_connected(wait):
            try:
                await self._link.ensure_streams()
            except QueueUnavailable as e:
                log.warning("%s", e)

    async def close(self) -> None:
        await self._link.close()

    async def stored(self) -> int | None:
        """Calls on the queue not yet acknowledged (waiting or being invoked); None if unknown."""
        try:
            info = await self._link.jetstream().stream_info(self._settings.queue_name)
        except _UNKNOWN:
            return None
        return int(info.state.messages)

    def ready(self) -> bool:
        return self._link.connected()

    async def accept(self, request: web.BaseRequest) -> web.StreamResponse:
        response = await self._accept(request)
        if response.status >= 400:
            self._rejected.labels(_REASONS.get(response.status, str(response.status))).inc()
        return response

    def accepted(self, function: str) -> float:
        """Calls of `function` (NAME.NAMESPACE) queued so far."""
        return float(self._accepted.labels(function)._value.get())

    def rejected(self, reason: str) -> float:
        """Calls refused so far for `reason` (bad_request, not_found, method, too_large, unavailable)."""
        return float(self._rejected.labels(reason)._value.get())

    async def _accept(self, request: web.BaseRequest) -> web.StreamResponse:
        screened = self._screen(request)
        if isinstance(screened, web.Response):
            return screened
        ref, path, query, info, callback, call_id = screened
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body
        call = QueuedCall(
            ref=ref,
            method=request.method,
            path=path,
            query=query,
            headers=tuple((k, v) for k, v in request.headers.items() if k.lower() not in HOP_HEADERS),
            call_id=call_id,
            callback_url=callback,
            accepted_at=self._clock(),
            body=body,
            retry=_retry_labels(info.labels, info.annotations),
        )
        headers = call.nats_headers()
        room = self._link.max_payload - HEADER_ROOM - sum(len(k) + len(v) for k, v in headers.items())
        if len(body) > room:
            return _too_large(
                f"this call does not fit in one NATS message: the server takes {self._link.max_payload} "
                f"bytes per message, headers included (body {len(body)} bytes); raise the server's "
                "max_payload or send less"
            )
        try:
            duplicate = await self._publish(call, headers)
        except QueueUnavailable as e:
            log.warning("async call %s for %s refused: %s", call_id, ref.key, e)
            return error_response(503, str(e), headers={"Retry-After": "5"})
        if duplicate:
            # JetStream already holds a call with this id (a resend after a 503, or a reused id):
            # it is not queued twice, and the caller is told so rather than left to believe it was.
            log.info("async call %s for %s is a duplicate of a queued call", call_id, ref.key)
            return web.Response(
                status=202,
                text=f"already queued: a call with X-Call-Id {call_id} was accepted within the last "
                f"{DUPLICATE_WINDOW:g}s; this one is not queued again (use a new X-Call-Id for a new call)\n",
                headers={"X-Call-Id": call_id, "X-Duplicate": "true"},
            )
        self._accepted.labels(ref.key).inc()
        return web.Response(
            status=202,
            text=f"accepted: call {call_id} for {ref.key} is queued\n",
            headers={"X-Call-Id": call_id},
        )

    def _screen(
        self, request: web.BaseRequest
    ) -> web.Response | tuple[FunctionRef, str, str, FunctionInfo, str | None, str]:
        """The call's function, path, query, callback and id, or the answer refusing it."""
        if request.method not in ("POST", "PUT"):
            return error_response(
                405,
                f"asynchronous calls are POST or PUT (got {request.method}): the result goes to "
                "X-Callback-Url, there is nothing to GET",
                headers={"Allow": "POST, PUT"},
            )
        try:
            ref, path, query = self._route(request.raw_path)
            info = self._provider.get(ref)
            if info is None:
                raise not_found(ref)
        except RouteError as e:
            return error_response(e.status, e.message)
        if len(request.headers.getall("X-Callback-Url", ())) > 1:
            return error_response(400, "more than one X-Callback-Url: give the one receiver of the result")
        callback = request.headers.get("X-Callback-Url")
        if callback is not None and (wrong := _callback_problem(callback)) is not None:
            return error_response(400, f"invalid X-Callback-Url {callback[:200]!r}: {wrong}")
        call_id = request.headers.get("X-Call-Id") or str(uuid.uuid4())
        if not _CALL_ID.fullmatch(call_id):
            return error_response(400, "invalid X-Call-Id: expected 1 to 128 visible ASCII characters")
        return ref, path, query, info, callback, call_id

    def _route(self, target: str) -> tuple[FunctionRef, str, str]:
        """(function, path after it, raw query), by the proxy's rules; RouteError otherwise."""
        raw_path, _, query = target.partition("?")
        segment, path = split(raw_path, ASYNC_PREFIX)
        ref = parse_function(segment, prefix=ASYNC_PREFIX, default_namespace=self._default_namespace)
        check_path(path)
        return ref, path, query

    async def _read_body(self, request: web.BaseRequest) -> bytes | web.Response:
        limit = self._settings.async_max_body
        length = request.content_length
        if length is not None and length > limit:
            return _too_large(
                f"request body too large for an asynchronous call: the limit is {limit} bytes "
                f"(got {length} bytes); send less, or a reference to the data"
            )
        if request.headers.get("Expect", "").lower() == "100-continue":
            # The client (curl, for bodies over 1 KiB) waits for this before it sends the body.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                return _too_large(
                    f"request body too large for an asynchronous call: the limit is {limit} bytes; "
                    "send less, or a reference to the data"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _publish(self, call: QueuedCall, headers: dict[str, str]) -> bool:
        """Publish and wait for JetStream's ack (True: it was a duplicate, stored before);
        QueueUnavailable when it is not certain."""
        link = self._link
        headers = {**headers, "Nats-Msg-Id": message_id(call)}
        for attempt in (1, 2):
            await link.ensure_streams()
            js = link.jetstream()
            try:
                ack = await js.publish(
                    subject(self._settings.queue_name, call.ref),
                    call.body,
                    timeout=self._settings.publish_timeout,
                    stream=self._settings.queue_name,
                    headers=headers,
                )
                return bool(ack.duplicate)
            except nats.js.errors.NoStreamResponseError as e:
                link.forget_streams()  # the stream was deleted under us: create it again, once
                if attempt == 2:
                    raise QueueUnavailable(
                        f"the queue is unavailable: JetStream at {link.where} has no stream "
                        f"{self._settings.queue_name!r} answering; nothing was queued, retry later"
                    ) from e
            except NATS_ERRORS as e:
                raise QueueUnavailable(
                    f"the queue is unavailable: JetStream at {link.where} did not acknowledge the call "
                    f"within {self._settings.publish_timeout:g}s ({type(e).__name__}); it may or may "
                    "not be queued, retry later with the same X-Call-Id"
                ) from e
        raise AssertionError("unreachable: the second attempt returns or raises")


def _callback_problem(value: str) -> str | None:
    """What is wrong with a callback URL, or None when it will do."""
    expected = (
        "expected an absolute http:// or https:// URL with a host, e.g. http://receiver.example:8888/results"
    )
    try:
        url = URL(value)
    except ValueError:
        return expected
    if url.scheme not in ("http", "https") or not url.host:
        return expected
    if url.user is not None:
        # They would be stored on the queue and logged with the call: credentials go in a header.
        return "it carries credentials (user:password@); give the receiver's URL without them"
    return None


def _retry_labels(labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, str]:
    """The function's `com.openfaas.retry.*` settings; an annotation wins over a label."""
    found = {k: v for k, v in labels.items() if k.startswith(RETRY_LABEL_PREFIX)}
    found.update({k: v for k, v in annotations.items() if k.startswith(RETRY_LABEL_PREFIX)})
    return found


def _too_large(message: str) -> web.Response:
    response = error_response(413, message)
    response.force_close()  # the rest of the body may still be on its way
    return response
