"""`autoscaler queue-worker`: takes queued calls off JetStream and invokes them through the wake-up proxy.

Function mode, as OpenFaaS Pro: each function with queued calls gets its own durable pull consumer and
its own concurrency limit, so a slow or failing function never starves another. Calls go through the
proxy's synchronous `/function/` route, the same path as every other call: a function at zero is held
and woken there, never failed, and the proxy's counts keep it from being scaled away mid-call.

Nothing is acknowledged before it is done. While a call runs (and while its callback is delivered) the
message's ack deadline is extended with in-progress acks; a worker that dies mid-call simply stops
extending it and JetStream hands the call to another worker, with the same `X-Call-Id` (a duplicate is
visible to the function). A retryable answer is a nak with the back-off delay `policies.retry` decides;
after the last attempt the call is copied to the dead-letter stream and only then acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import CollectorRegistry, Counter, Gauge
from yarl import URL

from autoscaler.config import QueueSettings, QueueWorkerSettings
from autoscaler.errors import reason
from autoscaler.interfaces import BUSY_HEADER, FunctionRef
from autoscaler.queue._callback import CALLBACK_CODES, FunctionResult, deliver
from autoscaler.queue._jetstream import NATS_ERRORS, UNAVAILABLE, NatsLink, consumed
from autoscaler.queue._message import (
    DEAD_REASON_HEADER,
    DEAD_STATUS_HEADER,
    MessageError,
    QueuedCall,
    dead_subject,
    durable,
    function_of,
    subject,
)
from autoscaler.queue._retry import policy_for
from autoscaler.tasks import Background
from policies.concurrency import Concurrency, after_call
from policies.retry import NO_ANSWER, RetryPolicy, decide

log = logging.getLogger("autoscaler.queue")

FETCH_WAIT = 1.0  # seconds one pull waits for messages (bounds how long a stop takes to be noticed)
RESUBSCRIBE_DELAY = 0.5
CONSUMERS_EVERY = 30.0  # seconds between listings of the durable consumers (256 per request)


@dataclass
class _Function:
    ref: FunctionRef
    concurrency: Concurrency
    inflight: int = 0
    changed: asyncio.Event | None = None


class WorkerMetrics:
    """OpenFaaS Pro's queue-worker names where they exist, `autoscaler_queue_*` for the rest."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending = Gauge(
            "queue_worker_pending_messages",
            "Queued calls not yet acknowledged (waiting, running or waiting for a retry)",
            ["function_name", "queue_name"],
            registry=registry,
        )
        self.inflight = Gauge(
            "queue_worker_function_invocation_inflight",
            "Calls being invoked right now",
            ["function_name"],
            registry=registry,
        )
        self.invocations = Counter(
            "autoscaler_queue_invocations",
            "Attempts to invoke a queued call, by the status it ended with (0: no answer)",
            ["function_name", "code"],
            registry=registry,
        )
        self.limit = Gauge(
            "autoscaler_queue_concurrency_limit",
            "Calls the worker lets run at once per function (adaptive: up on success, down on 429s)",
            ["function_name"],
            registry=registry,
        )
        self.retries = Counter(
            "autoscaler_queue_retries",
            "Calls put back for a later attempt",
            ["function_name"],
            registry=registry,
        )
        self.dead = Counter(
            "autoscaler_queue_dead_letters",
            "Calls copied to the dead-letter stream",
            ["function_name", "reason"],
            registry=registry,
        )
        self.callbacks = Counter(
            "autoscaler_queue_callbacks",
            "Callback deliveries by result",
            ["function_name", "result"],
            registry=registry,
        )


class QueueWorker:
    """Consumes every function's queued calls; `start`, then `drain` and `stop` (or `close`)."""

    def __init__(
        self,
        *,
        queue: QueueSettings,
        settings: QueueWorkerSettings,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._queue = queue
        self._settings = settings
        self._clock = clock
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        self._link = NatsLink(settings=queue, name="autoscaler-queue-worker")
        self._functions: dict[str, _Function] = {}
        self._loops = Background()
        self._calls = Background()
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._default = RetryPolicy(
            attempts=settings.retry_attempts,
            min_wait=settings.retry_min_wait,
            max_wait=max(settings.retry_max_wait, settings.retry_min_wait),
            codes=settings.codes(),
        )
        self._callback_policy = RetryPolicy(
            attempts=settings.callback_attempts,
            min_wait=settings.callback_min_wait,
            max_wait=max(settings.callback_max_wait, settings.callback_min_wait),
            codes=CALLBACK_CODES,
        )
        self.completed = 0  # calls acknowledged (done, final failure or dead-lettered)
        self.subscriptions = 0  # pull subscriptions made (again after each reconnection to NATS)
        self._consumed: set[str] = set()  # functions with a durable consumer, as last listed
        self._listed = -math.inf  # monotonic time of that listing

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        await self._link.start()
        self._loops.spawn(self._discover(), name="queue discover")

    def ready(self) -> bool:
        return self._link.connected() and not self._stopping.is_set()

    def state(self) -> str:
        if self._stopping.is_set():
            return "draining"
        if not self._link.connected():
            return f"waiting for NATS at {self._link.where}"
        return f"consuming {len(self._functions)} function(s)"

    async def drain(self, *, grace: float) -> None:
        """Stop taking calls; let running ones finish for up to `grace` s (the rest is redelivered)."""
        self._stopping.set()
        await self._loops.close()
        if len(self._calls):
            log.info("draining: waiting up to %g s for %d call(s)", grace, len(self._calls))
            left = await self._calls.wait(timeout=grace)
            if left:
                # Counted before `close` cancels them (a cancelled wait had cancelled them: "0 calls").
                log.warning(
                    "drain grace is over; %d call(s) still running are stopped, unacknowledged: "
                    "JetStream redelivers them",
                    left,
                )

    async def close(self) -> None:
        self._stopping.set()
        await self._loops.close()
        await self._calls.close()
        await self._link.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- finding functions -----------------------------------------------------------------------

    async def _discover(self) -> None:
        """Every `discover_interval`: which functions have queued calls; a consumer loop for each."""
        queue = self._queue.queue_name
        problem = ""
        while not self._stopping.is_set():
            try:
                if await self._link.wait_connected(self._settings.discover_interval):
                    await self._link.ensure_streams()
                    js = self._link.jetstream()
                    info = await js.stream_info(queue, subjects_filter=f"{queue}.*.*")
                    counts = info.state.subjects or {}
                    seen: set[str] = set()
                    for name, count in counts.items():
                        ref = function_of(queue, name)
                        if ref is None:
                            continue
                        seen.add(ref.key)
                        self.metrics.pending.labels(ref.key, queue).set(count)
                        if ref.key not in self._functions:
                            self._functions[ref.key] = _Function(
                                ref=ref, concurrency=self._initial_concurrency(), changed=asyncio.Event()
                            )
                            self.metrics.limit.labels(ref.key).set(self._functions[ref.key].concurrency.limit)
                            self._loops.spawn(
                                self._consume(self._functions[ref.key]), name=f"consume {ref.key}"
                            )
                    # Nothing on the stream for them: 0 pending, a figure the loop can scale down on.
                    if time.monotonic() - self._listed >= CONSUMERS_EVERY:
                        self._consumed = {ref.key for ref in await consumed(js, queue)}
                        self._listed = time.monotonic()
                    idle = self._consumed | self._functions.keys()
                    for key in idle - seen:
                        self.metrics.pending.labels(key, queue).set(0)
                    problem = ""
            except UNAVAILABLE as e:
                self._link.forget_streams()
                if str(e) != problem:
                    log.warning("looking for queued calls: %s", e)
                problem = str(e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._settings.discover_interval)

    # -- one function's calls --------------------------------------------------------------------

    async def _consume(self, fn: _Function) -> None:
        queue = self._queue.queue_name
        settings = self._settings
        assert fn.changed is not None
        config = ConsumerConfig(
            durable_name=durable(fn.ref),
            filter_subject=subject(queue, fn.ref),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait,
            max_deliver=-1,  # the worker counts attempts itself (num_delivered) and dead-letters
            max_ack_pending=-1,  # calls waiting for a retry are pending too; never pause the consumer
        )
        while not self._stopping.is_set():
            try:
                js = self._link.jetstream()
                generation = self._link.generation
                sub = await js.pull_subscribe(
                    subject(queue, fn.ref), durable=durable(fn.ref), stream=queue, config=config
                )
                self.subscriptions += 1
                try:
                    while not self._stopping.is_set() and self._link.generation == generation:
                        free = fn.concurrency.limit - fn.inflight
                        if free <= 0:
                            fn.changed.clear()
                            await fn.changed.wait()
                            continue
                        try:
                            messages = await sub.fetch(batch=free, timeout=FETCH_WAIT)
                        except TimeoutError:
                            # Nothing came in the wait. nats-py raises its own TimeoutError for a
                            # batch of one and a bare asyncio one for larger batches (_fetch_n): the
                            # bare one was taken for a lost link ("consuming X: ; again in 0.5s").
                            continue
                        for msg in messages:
                            fn.inflight += 1
                            self.metrics.inflight.labels(fn.ref.key).set(fn.inflight)
                            self._calls.spawn(self._handle(fn, msg), name=f"call {fn.ref.key}")
                finally:
                    try:
                        await sub.unsubscribe()
                    except NATS_ERRORS as e:
                        log.debug("unsubscribing %s: %r", fn.ref.key, e)
            except UNAVAILABLE as e:
                log.warning("consuming %s: %s; again in %gs", fn.ref.key, reason(e), RESUBSCRIBE_DELAY)
                await asyncio.sleep(RESUBSCRIBE_DELAY)

    def _initial_concurrency(self) -> Concurrency:
        settings = self._settings
        return Concurrency(limit=1 if settings.adaptive_concurrency else settings.max_inflight)

    def _adapt(self, fn: _Function, status: int) -> None:
        if not self._settings.adaptive_concurrency:
            return
        before = fn.concurrency.limit
        fn.concurrency = after_call(
            fn.concurrency, status=status, ceiling=self._settings.max_inflight, busy=fn.inflight
        )
        if fn.concurrency.limit != before:
            log.info(
                "function %s: concurrency %d -> %d (status %d)",
                fn.ref.key,
                before,
                fn.concurrency.limit,
                status,
            )
            self.metrics.limit.labels(fn.ref.key).set(fn.concurrency.limit)

    def _release(self, fn: _Function) -> None:
        fn.inflight -= 1
        self.metrics.inflight.labels(fn.ref.key).set(fn.inflight)
        assert fn.changed is not None
        fn.changed.set()

    async def _handle(self, fn: _Function, msg: Msg) -> None:
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(msg), name="in-progress")
        released = False
        try:
            try:
                call = QueuedCall.decode(msg.headers, msg.data)
            except MessageError as e:
                self._release(fn)
                released = True
                log.error("unreadable message on %s: %s; moved to the dead letters", msg.subject, e)
                await self._dead(fn.ref, msg, reason=f"unreadable: {e}", status=NO_ANSWER, kind="unreadable")
                return
            attempt = msg.metadata.num_delivered
            policy = policy_for(call.retry, self._default, function=fn.ref.key)
            result = await self._invoke(call)
            self._adapt(fn, result.status)
            self._release(fn)
            released = True
            self.metrics.invocations.labels(fn.ref.key, str(result.status)).inc()
            decision = decide(policy, attempt=attempt, status=result.status, now=self._clock())
            log.info(
                "call %s for %s attempt %d: %s in %.3fs; %s",
                call.call_id, fn.ref.key, attempt, result.status or "no answer", result.duration,
                decision.reason,
            )  # fmt: skip
            if decision.retry:
                self.metrics.retries.labels(fn.ref.key).inc()
                await msg.nak(delay=decision.delay)
                return
            retried_out = result.status == NO_ANSWER or result.status in policy.codes
            if retried_out:
                await self._dead(
                    fn.ref, msg, reason=decision.reason, status=result.status, kind="attempts", ack=False
                )
            await self._call_back(fn, msg, call, result, dead_already=retried_out)
            await msg.ack_sync(timeout=self._queue.publish_timeout)
            self.completed += 1
        except UNAVAILABLE as e:
            # Not acknowledged: JetStream redelivers the call after the ack wait.
            log.warning("call on %s not acknowledged (%s); it will be redelivered", msg.subject, e)
        finally:
            heartbeat.cancel()
            if not released:
                self._release(fn)

    async def _call_back(
        self, fn: _Function, msg: Msg, call: QueuedCall, result: FunctionResult, *, dead_already: bool
    ) -> None:
        """Post the result to the caller's X-Callback-Url, if any; a failed delivery is a dead letter."""
        if call.callback_url is None or self._session is None:
            return
        outcome = await deliver(
            self._session,
            call=call,
            result=result,
            policy=self._callback_policy,
            timeout=self._settings.callback_timeout,
            clock=self._clock,
        )
        self.metrics.callbacks.labels(fn.ref.key, "delivered" if outcome.delivered else "failed").inc()
        if outcome.delivered:
            return
        log.error(
            "callback for call %s to %s failed after %d attempt(s): %s; kept as a dead letter",
            call.call_id, call.callback_url, outcome.attempts, outcome.detail,
        )  # fmt: skip
        if not dead_already:
            reason = f"callback failed after {outcome.attempts} attempt(s): {outcome.detail}"
            await self._dead(fn.ref, msg, reason=reason, status=result.status, kind="callback", ack=False)

    async def _heartbeat(self, msg: Msg) -> None:
        """Extend the ack deadline every third of it while the call (or its callback) is running."""
        every = self._settings.ack_wait / 3
        while True:
            await asyncio.sleep(every)
            try:
                await msg.in_progress()
            except NATS_ERRORS as e:
                log.debug("in-progress ack failed: %r", e)

    async def _invoke(self, call: QueuedCall) -> FunctionResult:
        """One synchronous call through the proxy's /function/ route; NO_ANSWER when none came."""
        assert self._session is not None
        target = f"{self._settings.proxy_url}/function/{call.ref.key}{call.path}"
        if call.query:
            target += f"?{call.query}"
        headers: CIMultiDict[str] = CIMultiDict(call.headers)
        headers["X-Call-Id"] = call.call_id
        headers[BUSY_HEADER] = "pass"  # a 429 comes back at once: the call's own retry policy waits
        started = time.monotonic()
        try:
            async with self._session.request(
                call.method,
                URL(target, encoded=True),
                data=call.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._settings.invoke_timeout),
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return FunctionResult(
                    status=response.status,
                    body=body,
                    headers=tuple(response.headers.items()),
                    duration=time.monotonic() - started,
                )
        except (aiohttp.ClientError, TimeoutError) as e:
            if isinstance(e, TimeoutError):
                why = f"none within --invoke-timeout {self._settings.invoke_timeout:g}s"
            else:
                why = reason(e)
            log.warning("call %s for %s: no answer from the proxy (%s)", call.call_id, call.ref.key, why)
            return FunctionResult(status=NO_ANSWER, body=b"", headers=(), duration=time.monotonic() - started)

    async def _dead(
        self, ref: FunctionRef, msg: Msg, *, reason: str, status: int, kind: str, ack: bool = True
    ) -> None:
        """Copy the call to the dead-letter stream (then ack it when `ack`); raises when not stored."""
        queue = self._queue.queue_name
        # The publish's own Nats-* headers (message id, expected stream) belong to the queue stream.
        headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
        headers[DEAD_REASON_HEADER] = reason.replace("\r", " ").replace("\n", " ")[:500]
        headers[DEAD_STATUS_HEADER] = str(status)
        js = self._link.jetstream()
        await js.publish(
            dead_subject(queue, ref), msg.data, timeout=self._queue.publish_timeout, headers=headers
        )
        self.metrics.dead.labels(ref.key, kind).inc()
        if ack:
            await msg.ack_sync(timeout=self._queue.publish_timeout)
            self.completed += 1
