"""The demo's scripted load: a cold start, a burst, asynchronous calls, an idle period back to zero.

Every request goes through the proxy over loopback with aiohttp, exactly as a caller's would, and is
counted by what came back: a 2xx is served, anything else (or no answer) is lost. The summary is
the demo's verdict: a cold start must be a delay, never an error, so "requests lost" must be 0. When
the stack has a queue (an embedded nats-server), a step posts calls to `/async-function/`: each must
be accepted (202) and then invoked by the queue-worker, or the summary says how many were not. They
go to a `type=queue` function when there is one, which the loop then scales on its backlog.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from autoscaler.demo.stack import LocalStack
from autoscaler.demo.view import View
from autoscaler.interfaces import FunctionRef
from autoscaler.spec import ZERO, parse_labels
from policies.model import ScaleType

BURST_RPS = 40.0
BURST_SECONDS = 6.0
TRICKLE_RPS = 2.0
COLD_REQUESTS = 5
ASYNC_CALLS = 30
ASYNC_LIMIT = 20.0  # seconds for the queue-worker to invoke the asynchronous calls
IDLE_LIMIT = 25.0  # seconds to wait for the idle period to settle before summing up anyway


@dataclass(slots=True)
class Tally:
    """What the callers saw."""

    sent: int = 0
    served: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    slowest_cold: float = 0.0
    async_accepted: int | None = None  # None: the stack has no queue
    async_invoked: int = 0

    @property
    def lost(self) -> int:
        return self.sent - self.served


@dataclass(frozen=True, slots=True)
class Summary:
    tally: Tally
    cold_starts: int
    held: int
    peaks: dict[str, int]
    final: dict[str, int]
    seconds: float

    def lines(self) -> list[str]:
        out = [
            "Summary",
            f"  cold starts:     {self.cold_starts} "
            f"(slowest held request answered after {self.tally.slowest_cold:.2f}s)",
            f"  requests sent:   {self.tally.sent}",
            f"  requests held:   {self.held} (waited for a replica to start, then forwarded)",
            f"  requests served: {self.tally.served}",
            f"  requests lost:   {self.tally.lost}",
        ]
        for reason, count in sorted(self.tally.failures.items()):
            out.append(f"    {count} x {reason}")
        if self.tally.async_accepted is not None:
            out.append(
                f"  async calls:     {self.tally.async_accepted} accepted (202), "
                f"{self.tally.async_invoked} invoked by the queue-worker"
            )
        for name, peak in self.peaks.items():
            out.append(f"  {name}: peak {peak} replica(s), {self.final.get(name, 0)} at the end")
        out.append(f"  took {self.seconds:.1f}s")
        return out


class Script:
    """Drives the load against a started stack while the view refreshes."""

    def __init__(self, *, stack: LocalStack, view: View) -> None:
        self._stack = stack
        self._view = view
        self.tally = Tally()
        warm = [fn for fn in stack.functions.functions if fn.labels.get(ZERO, "").lower() != "true"]
        cold = [fn for fn in stack.functions.functions if fn.labels.get(ZERO, "").lower() == "true"]
        self._warm = warm[0].name if warm else stack.functions.functions[0].name
        self._cold = cold[0].name if cold else None
        queued = [fn for fn in stack.functions.functions if parse_labels(fn.labels).type is ScaleType.QUEUE]
        self._queued = queued[0].name if queued else None

    async def _call(self, session: aiohttp.ClientSession, name: str, *, cold: bool = False) -> None:
        self.tally.sent += 1
        started = time.monotonic()
        try:
            async with session.post(
                f"{self._stack.url}/function/{name}", data=b"the quick brown fox jumps over the lazy dog"
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    self.tally.served += 1
                else:
                    self.tally.failures[f"HTTP {response.status} from {name}"] += 1
        except (aiohttp.ClientError, TimeoutError) as e:
            self.tally.failures[f"{type(e).__name__} calling {name}"] += 1
        if cold:
            self.tally.slowest_cold = max(self.tally.slowest_cold, time.monotonic() - started)

    async def _steady(self, session: aiohttp.ClientSession, name: str, *, rps: float, seconds: float) -> None:
        calls = []
        start = time.monotonic()
        for n in range(int(rps * seconds)):
            await asyncio.sleep(max(0.0, start + n / rps - time.monotonic()))
            calls.append(asyncio.create_task(self._call(session, name)))
        await asyncio.gather(*calls)

    async def _async_calls(self, session: aiohttp.ClientSession, name: str) -> None:
        """POST ASYNC_CALLS calls to /async-function/; wait until the queue-worker has invoked them."""
        worker = self._stack.worker
        assert worker is not None
        before = worker.completed
        accepted = 0
        for index in range(ASYNC_CALLS):
            try:
                async with session.post(
                    f"{self._stack.url}/async-function/{name}", data=f"async call {index}".encode()
                ) as response:
                    await response.read()
                    if response.status == 202:
                        accepted += 1
                    else:
                        self.tally.failures[f"async HTTP {response.status} from {name}"] += 1
            except (aiohttp.ClientError, TimeoutError) as e:
                self.tally.failures[f"{type(e).__name__} queueing a call to {name}"] += 1
        self.tally.async_accepted = accepted
        deadline = time.monotonic() + ASYNC_LIMIT
        while time.monotonic() < deadline:
            if worker.completed - before >= accepted:
                break
            await asyncio.sleep(0.1)
        self.tally.async_invoked = worker.completed - before

    async def _settle(self) -> None:
        """Wait until every function is back at its resting replicas (zero for zero=true)."""
        deadline = time.monotonic() + IDLE_LIMIT
        while time.monotonic() < deadline:
            resting = True
            for fn in self._stack.functions.functions:
                info = self._stack.provider.get(FunctionRef(fn.name, self._stack.functions.namespace))
                spec = parse_labels(fn.labels)
                rest = 0 if spec.zero else spec.min_replicas
                if info is None or info.replicas != rest or info.ready_replicas != rest:
                    resting = False
            if resting:
                return
            await asyncio.sleep(0.2)
        self._view.say(f"(the idle period did not settle within {IDLE_LIMIT:.0f}s; summing up anyway)")

    async def run(self) -> Summary:
        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=200)
        timeout = aiohttp.ClientTimeout(total=self._stack.settings.hold_timeout + 10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            steps = 4 if self._stack.worker is not None else 3
            if self._cold is not None:
                self._view.phase(
                    f"1/{steps} cold start: {COLD_REQUESTS} requests to {self._cold}, which has 0 replicas"
                )
                await asyncio.gather(
                    *(self._call(session, self._cold, cold=True) for _ in range(COLD_REQUESTS))
                )
            self._view.phase(
                f"2/{steps} burst: {BURST_RPS:.0f} req/s to {self._warm} for {BURST_SECONDS:.0f}s"
            )
            burst = [self._steady(session, self._warm, rps=BURST_RPS, seconds=BURST_SECONDS)]
            if self._cold is not None:
                burst.append(self._steady(session, self._cold, rps=TRICKLE_RPS, seconds=BURST_SECONDS))
            await asyncio.gather(*burst)
            if self._stack.worker is not None:
                target = self._queued or self._cold or self._warm
                scaled = " (type=queue: scaled on its backlog)" if self._queued else ""
                self._view.phase(
                    f"3/{steps} async: {ASYNC_CALLS} calls to /async-function/{target}{scaled}, queued "
                    "on JetStream and invoked by the queue-worker"
                )
                await self._async_calls(session, target)
        self._view.phase(f"{steps}/{steps} idle: no traffic; scaling back down, and to zero where allowed")
        await self._settle()
        provider = self._stack.provider
        self._view.refresh()
        return Summary(
            tally=self.tally,
            cold_starts=sum(provider.cold_starts(ref) for ref in self._stack.refs),
            held=int(
                sum(
                    self._stack.sample(ref.key, "autoscaler_cold_start_seconds_count")
                    for ref in self._stack.refs
                )
            ),
            peaks=dict(self._view.peaks),
            final={
                ref.name: info.replicas for ref in self._stack.refs if (info := provider.get(ref)) is not None
            },
            seconds=time.monotonic() - started,
        )
