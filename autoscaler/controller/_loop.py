"""The control loop: observe -> decide -> act, once per tick, for every function.

A tick reads load once for all functions (a constant number of queries), runs the pure policy for
each function against its labels, and patches only what changed, with bounded concurrency. It never
dies of one bad function, one failed patch or a Prometheus outage: each becomes a decision that keeps
the current replicas, a log line, an Event and an error count. A wake-up from the proxy pokes the
loop for that one function: it is decided at once, alone, instead of waiting for the next tick.

At 50,000 functions most decisions repeat the last one. A function's decision is reused, not made
again, only where that is provably the same (`Memo`): the same labels, load figures, replicas,
activity mark and busy flag as the two decisions before, no replica change called for, and no timer
of the policy due (`policies.engine.next_change`); the idle timer still moves as `decide` moves it
(`policies.engine.observe`). Its FunctionView is reused with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry

from autoscaler.config import ControllerSettings
from autoscaler.controller._memo import TIMED, Entry, Inputs, Memo, Pass, TickReport
from autoscaler.errors import AutoscalerError, ProviderError, SpecError
from autoscaler.interfaces import FunctionInfo, FunctionRef, LoadReader, LoadSnapshot, Provider
from autoscaler.providers.kubernetes._budget import scale_priority
from autoscaler.spec import parse_labels, scaled_by_cpu, unknown_labels, unsupported
from autoscaler.tasks import Background, stoppable
from autoscaler.telemetry import ControllerMetrics, FunctionView, log_decision
from policies.engine import FunctionState, KeepAlivePolicy, decide, next_change, observe
from policies.model import Decision, KeepAlive, Load, Reason, ScalingSpec

log = logging.getLogger("autoscaler.controller")

_PATCH_CONCURRENCY = 16
_MIN_SPACING = 0.1  # seconds between ticks at the least, however often the loop is poked


class Controller:
    """Keeps every function at the replicas its labels and load call for."""

    def __init__(
        self,
        *,
        provider: Provider,
        reader: LoadReader,
        settings: ControllerSettings,
        registry: CollectorRegistry | None = None,
        busy: Callable[[str], bool] | None = None,
        may_patch: Callable[[], bool] | None = None,
        keepalive_factory: Callable[[FunctionRef, ScalingSpec], KeepAlivePolicy] | None = None,
        clock: Callable[[], float] = time.time,
        incremental: bool = True,
    ) -> None:
        self._provider = provider
        self._reader = reader
        self._settings = settings
        self._busy = busy or (lambda _key: False)
        self._may_patch = may_patch or (lambda: True)
        self._keepalive_factory = keepalive_factory
        self._clock = clock
        self._incremental = incremental  # reuse provably unchanged decisions (False: decide every one)
        self.reused = 0  # decisions the last tick reused rather than made
        self.metrics = ControllerMetrics(registry)
        self._entries: dict[str, Entry] = {}
        self._poked = asyncio.Event()
        self._full = False  # a full tick is asked for (poke without a function)
        self._pending: dict[str, FunctionRef] = {}  # functions poked since the last decision
        self._loads: Mapping[str, Load] = {}  # the last tick's load, for decisions in between
        self._marks: dict[str, float | None] = {}  # last-active marks seen (follow_wakes)
        self._waking: set[str] = set()  # woken at zero by a proxy whose scale is not yet seen
        self._background = Background()
        self.last_report: TickReport | None = None
        self.views: dict[str, FunctionView] = {}

    def state(self, key: str) -> FunctionState | None:
        """What the loop remembers of one function (idle timer, down window, keep-alive model)."""
        entry = self._entries.get(key)
        return None if entry is None else entry.state

    def poke(self, ref: FunctionRef | None = None) -> None:
        """Re-decide `ref` as soon as possible (every function, a full tick, when None).

        Safe to call from any callback. A poked function is decided alone, with the load of the last
        tick and the replicas of the provider's cache, by the same code as a tick.
        """
        if ref is None:
            self._full = True
        else:
            self._pending[ref.key] = ref
        self._poked.set()

    def follow_wakes(self) -> None:
        """Poke a function the proxy wakes, once its wake-up is visible in the provider's cache.

        A wake-up is a new last-active mark on a function at zero; the proxy then writes the scale
        itself. The poke waits for that scale to reach the cache, so the decision sees the replicas
        the proxy wrote and never writes them again: one writer of the scale per wake-up. Status churn,
        our own patches and the proxies' periodic marks on warm functions poke nothing.
        """
        self._marks = {key: info.last_active for key, info in self._provider.functions().items()}
        self._provider.subscribe(self._on_change)

    def _on_change(self, ref: FunctionRef) -> None:
        info = self._provider.get(ref)
        if info is None:
            self._marks.pop(ref.key, None)
            self._waking.discard(ref.key)
            return
        mark = info.last_active
        if mark is not None and mark != self._marks.get(ref.key) and info.replicas == 0:
            self._waking.add(ref.key)
        self._marks[ref.key] = mark
        if ref.key in self._waking and info.replicas > 0:
            self._waking.discard(ref.key)
            self.poke(ref)

    async def run(self, *, stop: asyncio.Event) -> None:
        """Tick every `interval` seconds until `stop` is set; decide a poked function alone at once.

        A poke without a function asks for a full tick at once (leadership just began)."""
        due = time.monotonic()
        while not stop.is_set():
            self._poked.clear()
            if self._full or time.monotonic() >= due:
                started = time.monotonic()
                self._full = False
                self._pending.clear()
                await self._stoppable(self.tick(now=self._clock()), stop)
                elapsed = time.monotonic() - started
                if elapsed < _MIN_SPACING:
                    await asyncio.sleep(_MIN_SPACING - elapsed)
                due = started + self._settings.interval
            else:
                pending, self._pending = self._pending, {}
                for ref in pending.values():
                    await self._stoppable(self.refresh(ref, now=self._clock()), stop)
            if self._pending or self._full:
                continue
            waiters = [asyncio.ensure_future(self._poked.wait()), asyncio.ensure_future(stop.wait())]
            try:
                remaining = max(0.0, due - time.monotonic())
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _stoppable(self, work: Awaitable[TickReport], stop: asyncio.Event) -> None:
        """Run one tick (or one function's refresh); `stop` cancels it in the middle.

        A tick that changes thousands of functions waits for the write budget (20 writes a second by
        default) for minutes; a leader told to stop must not keep the lease that long. The writes it
        had not made yet are no loss: the next tick, or the next leader's first, decides them again.
        """
        if not await stoppable(self._guarded(work, kind="tick"), stop):
            log.info("stopped in the middle of a tick: the writes not made are the next tick's to decide")

    async def _guarded(self, work: Awaitable[TickReport], *, kind: str) -> None:
        try:
            await work
        except Exception:  # the loop must outlive any single tick's failure
            log.exception("%s failed; the next tick will retry", kind)
            self.metrics.errors_total.labels(kind=kind).inc()

    async def _read(self, *, unused: frozenset[str]) -> LoadSnapshot:
        try:
            return await self._reader.read(unused=unused)
        except Exception as e:  # a reader bug or outage is "no data", never zero (invariant 1)
            return LoadSnapshot(loads={}, error=f"load read failed: {e}")

    def _entry(self, key: str, info: FunctionInfo) -> Entry:
        entry = self._entries.get(key)
        if entry is not None and entry.labels == info.labels:
            return entry
        state = entry.state if entry is not None else FunctionState()
        try:
            spec: ScalingSpec | None = parse_labels(info.labels)
            error = None
        except SpecError as e:
            spec, error = None, e
        if spec is not None and spec.keepalive is KeepAlive.ADAPTIVE and self._keepalive_factory is not None:
            if state.keepalive is None:
                state.keepalive = self._keepalive_factory(info.ref, spec)
        else:
            state.keepalive = None
        note = None if spec is None else unsupported(spec)
        notes = (() if note is None else (("UnsupportedScalingType", note),)) + tuple(
            ("UnknownScalingLabel", warning) for warning in unknown_labels(info.labels)
        )
        entry = Entry(labels=dict(info.labels), spec=spec, error=error, state=state, notes=notes)
        self._entries[key] = entry
        return entry

    async def tick(self, *, now: float) -> TickReport:
        """One pass over every known function; returns what it decided and did."""
        started = time.perf_counter()
        functions = self._provider.functions()
        snapshot = await self._read(unused=unused_figures(functions.values()))
        report = TickReport(queries=snapshot.queries, metrics_error=snapshot.error)
        if snapshot.error:
            log.warning(
                "no load data this tick: %s", snapshot.error, extra={"fields": {"event": "metrics_error"}}
            )
            self.metrics.errors_total.labels(kind="metrics").inc()
        self._loads = snapshot.loads
        self.reused = 0
        work = Pass()
        for key, info in functions.items():
            report.decisions[key] = self._decide(key, info, now=now, work=work)
        for key in self._entries.keys() - functions.keys():
            del self._entries[key]
        self.views = work.views
        self.metrics.functions.views = self.views
        await self._finish(work, report)
        report.seconds = time.perf_counter() - started
        self.metrics.tick_seconds.observe(report.seconds)
        report.finished_at = time.time()
        self.metrics.last_tick.set(report.finished_at)
        self.last_report = report
        return report

    async def refresh(self, ref: FunctionRef, *, now: float) -> TickReport:
        """Decide one function now, as a tick would, from the last tick's load and the cached replicas."""
        started = time.perf_counter()
        report = TickReport()
        info = self._provider.get(ref)
        if info is not None:
            work = Pass()
            report.decisions[ref.key] = self._decide(ref.key, info, now=now, work=work)
            self.views = {**self.views, **work.views}
            self.metrics.functions.views = self.views
            await self._finish(work, report)
        report.seconds = time.perf_counter() - started
        report.finished_at = time.time()
        return report

    def _decide(self, key: str, info: FunctionInfo, *, now: float, work: Pass) -> Decision:
        """The decision for one function; what it calls for (a patch, an Event) goes into `work`."""
        entry = self._entry(key, info)
        if entry.spec is None:
            assert entry.error is not None
            message = f"{entry.error}; replicas left alone"
            decision = Decision(info.replicas, info.replicas, Reason.INVALID_SPEC, message, False)
            if entry.reported_error != str(entry.error):
                entry.reported_error = str(entry.error)
                work.invalid.append((info, entry.error))
            work.views[key] = FunctionView(decision=decision, spec=None, load=None)
            return decision
        entry.reported_error = None
        notes = entry.notes
        if info.conflicts:
            notes = (*notes, *(("ConflictingScalingLabels", c) for c in info.conflicts))
        if notes != entry.reported_notes:
            entry.reported_notes = notes
            work.warned.extend((info, note) for note in notes)
        load = self._loads.get(key)
        inputs = (load, info.replicas, self._busy(key), info.last_active)
        memo = entry.memo
        if (
            memo is not None
            and memo.reuse is not None
            and memo.at <= now < memo.until
            and memo.inputs == inputs
        ):
            # Provably the decision `decide` would make (see `Memo`); the idle timer moves as it would.
            observe(state=entry.state, load=load, now=now, busy=inputs[2], last_wake=info.last_active)
            self.reused += 1
            work.views[key] = memo.reuse[1]
            return memo.reuse[0]
        decision = decide(
            spec=entry.spec,
            load=load,
            current=info.replicas,
            state=entry.state,
            now=now,
            busy=inputs[2],
            last_wake=info.last_active,
        )
        value = None if load is None else load.value(entry.spec.type)
        view = FunctionView(decision=decision, spec=entry.spec, load=value)
        work.views[key] = view
        if decision.changed:
            work.changes.append((info, decision))
        entry.memo = self._memo(
            entry, inputs, view, now=now, repeat=memo is not None and memo.inputs == inputs
        )
        return decision

    def _memo(self, entry: Entry, inputs: Inputs, view: FunctionView, *, now: float, repeat: bool) -> Memo:
        """What to remember of a decision just made: its inputs, and itself where `Memo` allows reuse."""
        decision = view.decision
        if not self._incremental or not repeat or decision.changed or decision.reason in TIMED:
            return Memo(inputs=inputs)
        if entry.spec is None:
            return Memo(inputs=inputs)
        until = next_change(spec=entry.spec, state=entry.state, now=now)
        return Memo(inputs, (decision, view), at=now, until=math.inf if until is None else until)

    async def _finish(self, work: Pass, report: TickReport) -> None:
        for info, error in work.invalid:
            self._report_invalid(info, error)
        for info, note in work.warned:
            self._report_note(info, note)
        if work.changes:
            await self._act(work.changes, report)

    def _report_invalid(self, info: FunctionInfo, error: SpecError) -> None:
        self.metrics.errors_total.labels(kind="spec").inc()
        log.warning(
            "%s: invalid scaling labels, replicas left at %d: %s",
            info.ref.key,
            info.replicas,
            error,
            extra={
                "fields": {
                    "event": "invalid_spec",
                    "function": info.ref.key,
                    "label": error.label,
                    "value": error.value,
                }
            },
        )
        self._background.spawn(
            self._provider.record_event(
                info.ref,
                reason="InvalidScalingLabels",
                message=f"{error}; replicas left at {info.replicas}",
                warning=True,
            ),
            name=f"event for {info.ref.key}",
        )

    def _report_note(self, info: FunctionInfo, note: tuple[str, str]) -> None:
        reason, message = note
        log.warning(
            "%s: %s",
            info.ref.key,
            message,
            extra={"fields": {"event": "spec_warning", "reason": reason, "function": info.ref.key}},
        )
        self._background.spawn(
            self._provider.record_event(info.ref, reason=reason, message=message, warning=True),
            name=f"event for {info.ref.key}",
        )

    async def _act(self, changes: list[tuple[FunctionInfo, Decision]], report: TickReport) -> None:
        dry_run = self._settings.dry_run
        gate = asyncio.Semaphore(_PATCH_CONCURRENCY)

        async def apply(info: FunctionInfo, decision: Decision) -> None:
            key = info.ref.key
            if dry_run or not self._may_patch():
                log_decision(key=key, decision=decision, dry_run=True, patched=False)
                return
            async with gate:
                if not self._may_patch():  # leadership can end while a patch waits for its turn
                    log_decision(key=key, decision=decision, dry_run=True, patched=False)
                    return
                try:
                    await self._provider.scale(info.ref, decision.desired)
                except (ProviderError, AutoscalerError) as e:
                    report.failed[key] = str(e)
                    self.metrics.errors_total.labels(kind="patch").inc()
                    log.error(
                        "%s: could not scale %d -> %d: %s",
                        key,
                        decision.current,
                        decision.desired,
                        e,
                        extra={"fields": {"event": "scale_failed", "function": key}},
                    )
                    return
                report.patched.append(key)
                self.metrics.scale_total.labels(function_name=key, reason=decision.reason.value).inc()
                log_decision(key=key, decision=decision, dry_run=False, patched=True)
            # Outside the gate and the tick: an Event waits behind every scale in the write budget.
            self._background.spawn(
                self._provider.record_event(
                    info.ref,
                    reason=decision.reason.value,
                    message=(
                        f"Scaled from {decision.current} to {decision.desired} replicas: {decision.message}"
                    ),
                ),
                name=f"event for {key}",
            )

        # Wake-ups first, then scale-ups, then scale-downs: the gate and the provider's write budget
        # serve them in this order when a tick changes more functions than they let through at once.
        ordered = sorted(changes, key=lambda change: scale_priority(change[1].current, change[1].desired))
        await asyncio.gather(*(apply(info, decision) for info, decision in ordered))

    async def close(self) -> None:
        """Wait for background Events still being written."""
        await self._background.wait()


CPU_ONLY = frozenset({"cpu"})


def unused_figures(functions: Iterable[FunctionInfo]) -> frozenset[str]:
    """The load figures no function is scaled by, which the reader need not ask for.

    Only CPU qualifies: every function's idleness reads its rps, in-flight, started and pending
    figures whatever its type, while CPU is read for `type=cpu` alone, and its query is the costliest
    of the five (at 50,000 functions 641 of the 1,478 ms Prometheus spends evaluating them).
    """
    return frozenset() if any(scaled_by_cpu(info.labels) for info in functions) else CPU_ONLY
