"""The control loop: observe -> decide -> act, once per tick, for every function.

A tick reads load once for all functions (a constant number of queries), runs the pure policy for
each function against its labels, and patches only what changed, with bounded concurrency. It never
dies of one bad function, one failed patch or a Prometheus outage: each becomes a decision that keeps
the current replicas, a log line, an Event and an error count. A wake-up from the proxy pokes the
loop so that it ticks at once instead of waiting for the interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from autoscaler.config import ControllerSettings
from autoscaler.errors import AutoscalerError, ProviderError, SpecError
from autoscaler.interfaces import FunctionInfo, FunctionRef, LoadReader, LoadSnapshot, Provider
from autoscaler.spec import parse_labels, unsupported
from autoscaler.tasks import Background
from autoscaler.telemetry import ControllerMetrics, FunctionView, log_decision
from policies.engine import FunctionState, KeepAlivePolicy, decide
from policies.model import Decision, KeepAlive, Reason, ScalingSpec

log = logging.getLogger("autoscaler.controller")

_PATCH_CONCURRENCY = 16
_MIN_SPACING = 0.1  # seconds between ticks at the least, however often the loop is poked


@dataclass(slots=True)
class TickReport:
    """What one tick saw and did."""

    decisions: dict[str, Decision] = field(default_factory=dict)
    patched: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> error text for patches that failed
    queries: int = 0
    seconds: float = 0.0
    finished_at: float = 0.0  # unix time the tick ended
    metrics_error: str | None = None


@dataclass(slots=True)
class _Entry:
    labels: Mapping[str, str]
    spec: ScalingSpec | None
    error: SpecError | None
    state: FunctionState
    reported_error: str | None = None
    notes: tuple[tuple[str, str], ...] = ()  # (Event reason, message) the labels call for, once parsed
    reported_notes: tuple[tuple[str, str], ...] = ()  # (reason, message) warnings already told


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
    ) -> None:
        self._provider = provider
        self._reader = reader
        self._settings = settings
        self._busy = busy or (lambda _key: False)
        self._may_patch = may_patch or (lambda: True)
        self._keepalive_factory = keepalive_factory
        self._clock = clock
        self.metrics = ControllerMetrics(registry)
        self._entries: dict[str, _Entry] = {}
        self._poked = asyncio.Event()
        self._background = Background()
        self.last_report: TickReport | None = None
        self.views: dict[str, FunctionView] = {}

    def state(self, key: str) -> FunctionState | None:
        """What the loop remembers of one function (idle timer, down window, keep-alive model)."""
        entry = self._entries.get(key)
        return None if entry is None else entry.state

    def poke(self, ref: FunctionRef | None = None) -> None:
        """Tick as soon as possible (a cold start is waiting); safe to call from any callback."""
        self._poked.set()

    async def run(self, *, stop: asyncio.Event) -> None:
        """Tick every `interval` seconds (or at once when poked) until `stop` is set."""
        interval = self._settings.interval
        while not stop.is_set():
            started = time.monotonic()
            self._poked.clear()
            try:
                await self.tick(now=self._clock())
            except Exception:  # the loop must outlive any single tick's failure
                log.exception("tick failed; the next tick will retry")
                self.metrics.errors_total.labels(kind="tick").inc()
            elapsed = time.monotonic() - started
            if elapsed < _MIN_SPACING:
                await asyncio.sleep(_MIN_SPACING - elapsed)
            remaining = max(0.0, interval - (time.monotonic() - started))
            waiters = [asyncio.ensure_future(self._poked.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _read(self) -> LoadSnapshot:
        try:
            return await self._reader.read()
        except Exception as e:  # a reader bug or outage is "no data", never zero (invariant 1)
            return LoadSnapshot(loads={}, error=f"load read failed: {e}")

    def _entry(self, key: str, info: FunctionInfo) -> _Entry:
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
        notes = () if note is None else (("UnsupportedScalingType", note),)
        entry = _Entry(labels=dict(info.labels), spec=spec, error=error, state=state, notes=notes)
        self._entries[key] = entry
        return entry

    async def tick(self, *, now: float) -> TickReport:
        """One pass over every known function; returns what it decided and did."""
        started = time.perf_counter()
        snapshot = await self._read()
        report = TickReport(queries=snapshot.queries, metrics_error=snapshot.error)
        if snapshot.error:
            log.warning(
                "no load data this tick: %s", snapshot.error, extra={"fields": {"event": "metrics_error"}}
            )
            self.metrics.errors_total.labels(kind="metrics").inc()
        functions = self._provider.functions()
        views: dict[str, FunctionView] = {}
        changes: list[tuple[FunctionInfo, Decision]] = []
        invalid: list[tuple[FunctionInfo, SpecError]] = []
        warned: list[tuple[FunctionInfo, tuple[str, str]]] = []
        for key, info in functions.items():
            entry = self._entry(key, info)
            load = snapshot.loads.get(key)
            if entry.spec is None:
                assert entry.error is not None
                decision = Decision(
                    info.replicas,
                    info.replicas,
                    Reason.INVALID_SPEC,
                    f"{entry.error}; replicas left alone",
                    False,
                )
                if entry.reported_error != str(entry.error):
                    entry.reported_error = str(entry.error)
                    invalid.append((info, entry.error))
                views[key] = FunctionView(decision=decision, spec=None, load=None)
            else:
                entry.reported_error = None
                notes = entry.notes
                if info.conflicts:
                    notes = (*notes, *(("ConflictingScalingLabels", c) for c in info.conflicts))
                if notes != entry.reported_notes:
                    entry.reported_notes = notes
                    warned.extend((info, note) for note in notes)
                decision = decide(
                    spec=entry.spec,
                    load=load,
                    current=info.replicas,
                    state=entry.state,
                    now=now,
                    busy=self._busy(key),
                    last_wake=info.last_active,
                )
                value = None if load is None else load.value(entry.spec.type)
                views[key] = FunctionView(decision=decision, spec=entry.spec, load=value)
                if decision.changed:
                    changes.append((info, decision))
            report.decisions[key] = decision
        for key in self._entries.keys() - functions.keys():
            del self._entries[key]
        self.views = views
        self.metrics.functions.views = views
        for info, error in invalid:
            self._report_invalid(info, error)
        for info, note in warned:
            self._report_note(info, note)
        if changes:
            await self._act(changes, report)
        report.seconds = time.perf_counter() - started
        self.metrics.tick_seconds.observe(report.seconds)
        report.finished_at = time.time()
        self.metrics.last_tick.set(report.finished_at)
        self.last_report = report
        return report

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
                await self._provider.record_event(
                    info.ref,
                    reason=decision.reason.value,
                    message=(
                        f"Scaled from {decision.current} to {decision.desired} replicas: {decision.message}"
                    ),
                )

        await asyncio.gather(*(apply(info, decision) for info, decision in changes))

    async def close(self) -> None:
        """Wait for background Events still being written."""
        await self._background.wait()
