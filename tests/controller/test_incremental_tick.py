"""The incremental tick decides exactly what the full tick decides, on random workloads over many ticks.

The controller reuses a function's last decision where its inputs repeat and no policy timer is due
(`autoscaler.controller._memo.Memo`). These tests run two controllers side by side over the same random
world, one reusing decisions and one deciding every function at every tick, and require the same
decisions (messages included), patches, Events, per-function gauges and remembered state at every
tick. The workloads repeat their inputs often (that is when reuse happens) and mix in what breaks a
repeat: load changes, replica changes from outside, activity marks, busy functions, label changes,
pokes between ticks, failing patches and gaps that cross zero-durations, delays and burst windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from autoscaler import keepalive
from autoscaler.config import ControllerSettings
from autoscaler.controller import Controller, TickReport
from autoscaler.interfaces import FunctionRef
from policies.model import Load
from tests.support.memory import MemoryProvider, StaticReader

FUNCTIONS = [f"fn-{i}" for i in range(6)]
P = "com.openfaas.scale."
X = "autoscaler.dev/"

LABELS = st.fixed_dictionaries(
    {},
    optional={
        P + "min": st.sampled_from(["0", "1", "2", "abc"]),
        P + "max": st.sampled_from(["1", "2", "5", "20"]),
        P + "target": st.sampled_from(["1", "5", "50"]),
        P + "type": st.sampled_from(["rps", "capacity", "queue", "cpu", "custom-metric"]),
        P + "zero": st.sampled_from(["true", "false"]),
        P + "zero-duration": st.sampled_from(["10s", "30s", "1m"]),
        P + "down.window": st.sampled_from(["0s", "10s"]),
        X + "keepalive": st.sampled_from(["fixed", "adaptive"]),
        X + "scale-down-delay": st.sampled_from(["0s", "8s"]),
        X + "burst-threshold": st.sampled_from(["off", "200"]),
        X + "burst-window": st.sampled_from(["6s", "20s"]),
        X + "max-scale-up-rate": st.sampled_from(["off", "2"]),
        X + "max-scale-down-rate": st.sampled_from(["off", "2"]),
        X + "activation-threshold": st.sampled_from(["0", "1"]),
        X + "activation-scale": st.sampled_from(["1", "3"]),
    },
)
FIGURE = st.sampled_from([None, 0.0, 0.5, 3.0, 40.0, 400.0])
LOAD = st.one_of(
    st.none(),
    st.builds(
        Load,
        rps=FIGURE,
        inflight=st.sampled_from([None, 0.0, 0.0, 2.0]),
        cpu=FIGURE,
        started_total=st.sampled_from([None, 5.0, 5.0, 6.0]),
        pending=st.sampled_from([None, 0.0, 0.0, 3.0]),
    ),
)


@dataclass
class Step:
    """What happens before one tick: every field applies to both worlds alike."""

    gap: float
    loads: dict[str, Load | None]  # functions whose load changes (None: no data)
    replicas: dict[str, int]  # functions scaled from outside
    marks: list[str]  # functions whose activity mark moves to now
    busy: set[str]
    labels: dict[str, dict[str, str]]  # functions whose labels change
    failing: set[str]
    poke: list[str]  # refreshed between ticks, at now + 1


def steps() -> st.SearchStrategy[Step]:
    some = st.lists(st.sampled_from(FUNCTIONS), max_size=2, unique=True)
    return st.builds(
        Step,
        gap=st.sampled_from([2.0, 2.0, 2.0, 2.0, 7.0, 31.0, 61.0]),
        loads=st.dictionaries(st.sampled_from(FUNCTIONS), LOAD, max_size=2),
        replicas=st.dictionaries(st.sampled_from(FUNCTIONS), st.sampled_from([0, 1, 3]), max_size=1),
        marks=some,
        busy=st.sets(st.sampled_from(FUNCTIONS), max_size=1),
        labels=st.dictionaries(st.sampled_from(FUNCTIONS), LABELS, max_size=1),
        failing=st.sets(st.sampled_from(FUNCTIONS), max_size=1),
        poke=some,
    )


@dataclass
class World:
    incremental: bool
    provider: MemoryProvider = field(default_factory=MemoryProvider)
    reader: StaticReader = field(default_factory=StaticReader)
    busy: set[str] = field(default_factory=set)
    controller: Controller = field(init=False)

    def __post_init__(self) -> None:
        self.controller = Controller(
            provider=self.provider,
            reader=self.reader,
            settings=ControllerSettings(),
            busy=lambda key: key in self.busy,
            keepalive_factory=keepalive.factory({}, end=0.0),
            incremental=self.incremental,
        )

    def apply(self, step: Step, *, now: float, initial: dict[str, dict[str, str]]) -> None:
        items = self.provider.items
        for name, labels in {**initial, **step.labels}.items():
            key = f"{name}.openfaas-fn"
            old = items.get(key)
            replicas = 1 if old is None else old.replicas
            self.provider.add(name, labels=labels, replicas=replicas)
            if old is not None:
                items[key] = _with(items[key], last_active=old.last_active)
        for name, replicas in step.replicas.items():
            items[f"{name}.openfaas-fn"] = _with(items[f"{name}.openfaas-fn"], replicas=replicas)
        for name in step.marks:
            items[f"{name}.openfaas-fn"] = _with(items[f"{name}.openfaas-fn"], last_active=now)
        for name, load in step.loads.items():
            if load is None:
                self.reader.loads.pop(f"{name}.openfaas-fn", None)
            else:
                self.reader.loads[f"{name}.openfaas-fn"] = load
        self.busy = {f"{name}.openfaas-fn" for name in step.busy}
        self.provider.failing = {f"{name}.openfaas-fn" for name in step.failing}


def _with(info: Any, **changes: Any) -> Any:
    fields = {name: getattr(info, name) for name in info.__slots__}
    fields.update(changes)
    return type(info)(**fields)


def seen(world: World, report: TickReport) -> dict[str, Any]:
    """Everything a tick decided, did and remembered, in a form two worlds can be compared by."""
    states = {}
    for key in world.provider.items:
        state = world.controller.state(key)
        if state is not None:
            states[key] = {name: getattr(state, name) for name in state.__slots__ if name != "keepalive"} | {
                "recommendations": list(state.recommendations)
            }
    return {
        "decisions": report.decisions,
        "patched": sorted(report.patched),
        "failed": report.failed,
        "views": dict(world.controller.views),
        "states": states,
        "scaled": list(world.provider.scaled),
        "events": list(world.provider.events),
    }


# No example database: with `target` Hypothesis keeps a Pareto front of the best examples in it, and
# keeping it ordered was half this test's time (7 s of 15); a failure still prints its example.
@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(
    initial=st.fixed_dictionaries({name: LABELS for name in FUNCTIONS}),
    script=st.lists(steps(), min_size=5, max_size=60),
    quiet=st.lists(st.sampled_from([0, 1, 3, 8]), min_size=60, max_size=60),
)
async def test_the_incremental_tick_decides_what_the_full_tick_decides_at_every_tick(
    initial: dict[str, dict[str, str]], script: list[Step], quiet: list[int]
) -> None:
    worlds = [World(incremental=True), World(incremental=False)]
    now, reused = 1000.0, 0
    for i, step in enumerate(script):
        # Runs of ticks where nothing changes at all: where decisions are reused.
        for _ in range(quiet[i]):
            now += 2.0
            reports = [await w.controller.tick(now=now) for w in worlds]
            assert seen(worlds[0], reports[0]) == seen(worlds[1], reports[1])
            reused += worlds[0].controller.reused
        now += step.gap
        for world in worlds:
            world.apply(step, now=now, initial=initial if i == 0 else {})
        reports = [await w.controller.tick(now=now) for w in worlds]
        assert seen(worlds[0], reports[0]) == seen(worlds[1], reports[1])
        for name in step.poke:
            ref = FunctionRef(name, "openfaas-fn")
            reports = [await w.controller.refresh(ref, now=now + 1) for w in worlds]
            assert seen(worlds[0], reports[0]) == seen(worlds[1], reports[1])
    target(float(reused), label="decisions reused")  # steer the search to where reuse happens
    for world in worlds:
        await world.controller.close()


async def test_a_quiet_tick_reuses_the_decisions_of_functions_whose_inputs_repeat() -> None:
    provider, reader = MemoryProvider(), StaticReader()
    for i in range(10):
        provider.add(f"fn-{i}", replicas=2)
        reader.loads[f"fn-{i}.openfaas-fn"] = Load(rps=80.0, inflight=1.0, cpu=0.0, started_total=5.0)
    provider.add("idle", replicas=0, labels={P + "zero": "true"})
    loop = Controller(provider=provider, reader=reader, settings=ControllerSettings())
    for now in (0.0, 2.0, 4.0):
        await loop.tick(now=now)
    assert loop.reused == 11  # the function at zero too: it says since when it is idle, not for how long
    reader.loads["fn-3.openfaas-fn"] = Load(rps=200.0, inflight=1.0, cpu=0.0, started_total=6.0)
    report = await loop.tick(now=6.0)
    assert loop.reused == 10
    assert report.decisions["fn-3.openfaas-fn"].desired == 5


async def test_decisions_that_say_how_long_something_has_lasted_are_made_again_at_every_tick() -> None:
    held_by_delay = {X + "scale-down-delay": "30s"}
    held_by_burst = {X + "burst-threshold": "200", X + "burst-window": "30s"}
    worlds = [World(incremental=True), World(incremental=False)]
    for world in worlds:
        world.provider.add("delayed", replicas=4, labels=held_by_delay)
        world.provider.add("burst", replicas=1, labels=held_by_burst)
        world.reader.loads["delayed.openfaas-fn"] = Load(rps=10.0, inflight=0.0, cpu=0.0, started_total=5.0)
        world.reader.loads["burst.openfaas-fn"] = Load(rps=400.0, inflight=0.0, cpu=0.0, started_total=5.0)
    now = 0.0
    for _ in range(3):
        reports = [await w.controller.tick(now=now) for w in worlds]
        now += 2.0
    for world in worlds:  # the burst ends, its mode goes on for the burst window
        world.reader.loads["burst.openfaas-fn"] = Load(rps=10.0, inflight=0.0, cpu=0.0, started_total=5.0)
    for _ in range(6):
        reports = [await w.controller.tick(now=now) for w in worlds]
        assert seen(worlds[0], reports[0]) == seen(worlds[1], reports[1])
        now += 2.0
    messages = [d.message for d in reports[0].decisions.values()]
    assert any("scale-down delay (" in m for m in messages)
    assert any("burst mode (last triggered" in m for m in messages)


async def test_decisions_at_zero_are_reused_with_the_full_tick_s_message_until_something_happens() -> None:
    worlds = [World(incremental=True), World(incremental=False)]
    idle = Load(rps=0.0, inflight=0.0, cpu=0.0, started_total=5.0, pending=0.0)
    for world in worlds:
        world.provider.add("fixed", replicas=0, labels={P + "zero": "true", P + "zero-duration": "30s"})
        world.provider.add("learned", replicas=0, labels={P + "zero": "true", X + "keepalive": "adaptive"})
        world.provider.add("no-data", replicas=0)  # not allowed to zero, and no figure to wake it by
        for name in ("fixed", "learned"):
            world.reader.loads[f"{name}.openfaas-fn"] = idle
    now, reused = 1000.0, []
    for tick in range(40):
        if tick == 30:  # a call arrives for one of them: it wakes, in both worlds alike
            for world in worlds:
                world.reader.loads["fixed.openfaas-fn"] = Load(
                    rps=1.0, inflight=1.0, cpu=0.0, started_total=6.0
                )
        reports = [await w.controller.tick(now=now) for w in worlds]
        assert seen(worlds[0], reports[0]) == seen(worlds[1], reports[1])
        reused.append(worlds[0].controller.reused)
        now += 15.0
    assert reports[0].decisions["no-data.openfaas-fn"].message == "no rps data: keep 0 replicas"
    assert min(reused[4:30]) == 3  # every one reused while nothing happens, once its zero timers passed
    assert reused[30] == 2  # the woken one is decided
    first = reports[0].decisions["learned.openfaas-fn"].message
    assert first == "idle since 1970-01-01T00:16:40Z: stays at zero"  # when it began: 1000 s, UTC
