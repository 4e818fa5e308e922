"""Opening a function call's upstream request: which replica, and what is retried, for how long.

A request that never left the proxy (a refused or unopened connection) may go to another replica
or be tried again after a short back-off, whatever its method: the function has not seen it. A 429
from a function that declared no concurrency limit means it did not process the request either, so
it is retried on the function's other replicas, then after the function's Retry-After or the
back-off, until the request's deadline; with no time left the caller gets the function's 429. A
function that declares a limit gets its requests through `_slots` and never sees more than it
takes, so its 429s are passed on; so are they for a request with `X-Autoscaler-Busy: pass` (the
queue-worker's, which retries on its own schedule). Waits follow the project's one back-off rule
(`policies.backoff`), at most a second apart while the function answers 429.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from autoscaler.config import ProxySettings
from autoscaler.interfaces import BUSY_HEADER, Provider
from autoscaler.proxy._client import Connection
from autoscaler.proxy._forward import Forwarder, UpstreamConnectError, UpstreamError, request_headers
from autoscaler.proxy._hold import FunctionState
from autoscaler.proxy._slots import Slots
from autoscaler.proxy._tunnel import upgrade_of
from policies.backoff import Backoff

RETRY = Backoff(first=0.02, maximum=0.25)
# After a round of 429s: a function that is full gets one try a second per waiting request at most
# (at 0.25 s, a call waiting out a 30 s hold sent it 120).
BUSY = Backoff(first=0.1, maximum=1.0)


@dataclass(slots=True)
class _Miss:
    """A round over the replicas that opened nothing: the last connect error, or 429s."""

    error: UpstreamError | None
    throttled: bool  # a replica answered 429: the function is busy, not gone
    retry_after: float  # the longest Retry-After a replica asked for


class Opener:
    """Opens upstream requests for the proxy's functions, with the retries described above."""

    def __init__(self, *, settings: ProxySettings, provider: Provider, forwarder: Forwarder) -> None:
        self._settings = settings
        self._provider = provider
        self._forwarder = forwarder

    def slots(self, state: FunctionState) -> Slots:
        slots = state.slots
        if slots is None:
            ref = state.ref
            slots = state.slots = Slots(lambda: self._provider.endpoints(ref))
        return slots

    async def open(
        self,
        request: web.BaseRequest,
        state: FunctionState,
        path: str,
        body: bytes | None,
        *,
        endpoints: list[str] | None,
        retry_until: float,
        limit: int | None,
        deadline: float,
    ) -> tuple[Connection, str | None]:
        """The upstream request with the endpoint whose slot it holds (when limited); UpstreamError."""
        ref = state.ref
        headers = request_headers(request, trusted=self._settings.provider_url is not None)  # gateway
        # The caller retries a 429 itself: the first round's 429 is its answer (a slot is still waited for).
        busy = request.headers.get(BUSY_HEADER)  # absent on nearly every request: nothing more to do
        pass_busy = busy is not None and busy.strip().lower() == "pass"
        waits = 0
        while True:
            if endpoints is None:
                endpoints = self._provider.endpoints(ref)
            if endpoints:
                got = await self._round(
                    request, state, path, body, headers, endpoints, limit=limit, deadline=deadline,
                    waits=waits, pass_busy=pass_busy,
                )  # fmt: skip
                if not isinstance(got, _Miss):
                    return got
                delay = RETRY.delay(waits + 1)  # only once a round has missed: not per request
                error = got.error
                if got.throttled:  # every replica is full: back off and try again
                    error = None
                    delay = max(BUSY.delay(waits + 1), got.retry_after)
                    retry_until = max(retry_until, deadline)
            else:
                delay = RETRY.delay(waits + 1)
                error = UpstreamError(503, f"function {ref.key} has no ready endpoint; retry later")
            if asyncio.get_running_loop().time() + delay > retry_until:  # not per request: a retry
                raise error or UpstreamError(502, f"function {ref.key} kept answering 429")
            await asyncio.sleep(delay)
            waits += 1
            endpoints = None  # read them again: the replica set may have changed

    async def _round(
        self,
        request: web.BaseRequest,
        state: FunctionState,
        path: str,
        body: bytes | None,
        headers: list[tuple[str, str]],
        endpoints: list[str],
        *,
        limit: int | None,
        deadline: float,
        waits: int,
        pass_busy: bool,
    ) -> tuple[Connection, str | None] | _Miss:
        """Try each replica at most once; the last 429 is returned when no time is left to wait."""
        ref = state.ref
        error: UpstreamError | None = None
        throttled = False
        retry_after = 0.0
        upgrade = upgrade_of(request) is not None  # WebSocket: a 101 may answer (`_tunnel`)
        for _ in endpoints:
            slot: str | None = None
            if limit is not None:
                slot = endpoint = await self.slots(state).acquire(
                    key=ref.key, limit=limit, deadline=deadline, max_queue=self._settings.max_held,
                    hold_timeout=self._settings.hold_timeout,
                )  # fmt: skip
            else:
                state.rr += 1
                endpoint = endpoints[state.rr % len(endpoints)]
            try:
                upstream = await self._forwarder.open(
                    method=request.method, endpoint=endpoint, path=path, headers=headers, body=body,
                    key=ref.key, upgrade=upgrade,
                )  # fmt: skip
            except UpstreamConnectError as e:
                error = e  # another replica may answer
                if slot is not None:
                    self.slots(state).release(slot)
                continue
            except BaseException:
                if slot is not None:
                    self.slots(state).release(slot)
                raise
            if upstream.status != 429 or limit is not None or pass_busy:
                return upstream, slot
            throttled = True
            retry_after = max(retry_after, _retry_after(upstream))
            if asyncio.get_running_loop().time() + max(BUSY.delay(waits + 1), retry_after) > deadline:
                return upstream, slot  # no time left to wait as long as it asks: its 429
            self._forwarder.discard(upstream)  # another replica may have room
        return _Miss(error, throttled, retry_after)


def _retry_after(upstream: Connection) -> float:
    """Seconds a function's Retry-After asks for (0 when absent or given as a date)."""
    for name, value in upstream.headers:
        if name.lower() == "retry-after":
            return float(value) if value.isdigit() else 0.0
    return 0.0
