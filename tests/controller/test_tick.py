"""One tick of the control loop: what it patches, what it leaves alone, and what it says about it."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from prometheus_client import generate_latest

from autoscaler.config import ControllerSettings
from autoscaler.controller import Controller
from autoscaler.interfaces import FunctionRef, LoadSnapshot
from autoscaler.telemetry import JsonFormatter
from policies.model import Load, Reason
from tests.support.memory import MemoryProvider, StaticReader

ZERO = {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "60s"}


def load(rps: float, *, started: float = 0.0, inflight: float = 0.0) -> Load:
    return Load(rps=rps, inflight=inflight, cpu=0.0, started_total=started)


@pytest.fixture
def world() -> tuple[MemoryProvider, StaticReader]:
    return MemoryProvider(), StaticReader()


def controller(provider: MemoryProvider, reader: StaticReader, **settings: object) -> Controller:
    return Controller(provider=provider, reader=reader, settings=ControllerSettings(**settings))  # type: ignore[arg-type]


class TestActing:
    async def test_only_functions_whose_replicas_change_are_patched(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("busy")
        provider.add("steady", replicas=2)
        reader.loads = {"busy.openfaas-fn": load(200), "steady.openfaas-fn": load(80)}
        report = await controller(provider, reader).tick(now=0)
        assert provider.scaled == [("busy.openfaas-fn", 5)]
        assert report.patched == ["busy.openfaas-fn"]
        assert report.decisions["steady.openfaas-fn"].reason is Reason.STEADY

    async def test_wake_ups_are_written_before_scale_ups_and_scale_ups_before_scale_downs(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("shrinks", replicas=5)
        provider.add("grows")
        provider.add("wakes", labels=ZERO, replicas=0)
        reader.loads = {
            "shrinks.openfaas-fn": load(10),
            "grows.openfaas-fn": load(200),
            "wakes.openfaas-fn": load(40, started=1.0, inflight=1.0),
        }
        await controller(provider, reader).tick(now=0)
        assert [key for key, _ in provider.scaled] == [
            "wakes.openfaas-fn",
            "grows.openfaas-fn",
            "shrinks.openfaas-fn",
        ]

    async def test_every_patch_writes_an_event_saying_from_to_and_why(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("fn")
        reader.loads = {"fn.openfaas-fn": load(200)}
        await controller(provider, reader).tick(now=0)
        [(key, reason, message, warning)] = provider.events
        assert (key, reason, warning) == ("fn.openfaas-fn", "ScaleUp", False)
        assert message.startswith("Scaled from 1 to 5 replicas: rps load 200")

    async def test_every_patch_logs_one_structured_line(
        self, world: tuple[MemoryProvider, StaticReader], caplog: pytest.LogCaptureFixture
    ) -> None:
        provider, reader = world
        provider.add("fn")
        reader.loads = {"fn.openfaas-fn": load(200)}
        with caplog.at_level(logging.INFO):
            await controller(provider, reader).tick(now=0)
        lines = [
            json.loads(JsonFormatter().format(r))
            for r in caplog.records
            if getattr(r, "fields", {}).get("event") == "scale"
        ]
        assert len(lines) == 1
        assert {k: lines[0][k] for k in ("function", "from", "to", "reason", "patched")} == {
            "function": "fn.openfaas-fn",
            "from": 1,
            "to": 5,
            "reason": "ScaleUp",
            "patched": True,
        }

    async def test_dry_run_decides_and_logs_but_never_patches(
        self, world: tuple[MemoryProvider, StaticReader], caplog: pytest.LogCaptureFixture
    ) -> None:
        provider, reader = world
        provider.add("fn")
        reader.loads = {"fn.openfaas-fn": load(200)}
        with caplog.at_level(logging.INFO):
            report = await controller(provider, reader, dry_run=True).tick(now=0)
        assert provider.scaled == []
        assert report.decisions["fn.openfaas-fn"].desired == 5
        assert any(getattr(r, "fields", {}).get("dry_run") is True for r in caplog.records)

    async def test_a_follower_decides_but_never_patches(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("fn")
        reader.loads = {"fn.openfaas-fn": load(200)}
        loop = Controller(
            provider=provider, reader=reader, settings=ControllerSettings(), may_patch=lambda: False
        )
        report = await loop.tick(now=0)
        assert provider.scaled == []
        assert report.decisions["fn.openfaas-fn"].desired == 5

    async def test_a_failed_patch_is_counted_and_the_others_still_happen(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("broken")
        provider.add("fine")
        provider.failing.add("broken.openfaas-fn")
        reader.loads = {"broken.openfaas-fn": load(200), "fine.openfaas-fn": load(200)}
        loop = controller(provider, reader)
        report = await loop.tick(now=0)
        assert provider.scaled == [("fine.openfaas-fn", 5)]
        assert "injected failure" in report.failed["broken.openfaas-fn"]
        assert loop.metrics.registry.get_sample_value("autoscaler_errors_total", {"kind": "patch"}) == 1


class TestLeavingAlone:
    async def test_invalid_labels_keep_replicas_and_are_reported_once(
        self, world: tuple[MemoryProvider, StaticReader], caplog: pytest.LogCaptureFixture
    ) -> None:
        provider, reader = world
        provider.add("bad", replicas=3, labels={"com.openfaas.scale.min": "abc"})
        reader.loads = {"bad.openfaas-fn": load(500)}
        loop = controller(provider, reader)
        with caplog.at_level(logging.WARNING):
            for now in (0, 2, 4):
                report = await loop.tick(now=now)
        await loop.close()
        assert provider.scaled == []
        assert report.decisions["bad.openfaas-fn"].reason is Reason.INVALID_SPEC
        [(key, reason, message, warning)] = provider.events
        assert (key, reason, warning) == ("bad.openfaas-fn", "InvalidScalingLabels", True)
        assert "com.openfaas.scale.min='abc'" in message
        assert "left at 3" in message
        assert (
            len([r for r in caplog.records if getattr(r, "fields", {}).get("event") == "invalid_spec"]) == 1
        )

    async def test_fixed_labels_are_picked_up_on_the_next_tick(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("fn", labels={"com.openfaas.scale.min": "abc"})
        reader.loads = {"fn.openfaas-fn": load(200)}
        loop = controller(provider, reader)
        await loop.tick(now=0)
        provider.add("fn", labels={"com.openfaas.scale.min": "1"})
        await loop.tick(now=2)
        assert provider.scaled == [("fn.openfaas-fn", 5)]

    async def test_a_prometheus_outage_never_scales_down_or_to_zero(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("big", replicas=6)
        provider.add("idle", labels=ZERO)
        reader.error = "Prometheus at http://127.0.0.1:9/ unreachable"
        loop = controller(provider, reader)
        for now in range(0, 600, 2):
            report = await loop.tick(now=now)
        assert provider.scaled == []
        assert report.metrics_error == reader.error
        assert {d.reason for d in report.decisions.values()} == {Reason.NO_DATA}

    async def test_a_function_missing_from_the_metrics_keeps_its_replicas(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("seen")
        provider.add("unseen", replicas=4, labels=ZERO)
        reader.loads = {"seen.openfaas-fn": load(200)}
        loop = controller(provider, reader)
        for now in range(0, 300, 2):
            await loop.tick(now=now)
        assert provider.replicas("unseen.openfaas-fn") == 4


class TestScaleToZero:
    async def test_silence_scales_a_zero_function_to_zero_and_never_a_zero_false_one(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("zero", labels=ZERO)
        provider.add("warm")
        reader.loads = {"zero.openfaas-fn": load(0, started=5), "warm.openfaas-fn": load(0, started=5)}
        loop = controller(provider, reader)
        for now in range(0, 120, 2):
            await loop.tick(now=now)
        assert provider.scaled == [("zero.openfaas-fn", 0)]
        assert provider.events[-1][1] == "ScaleToZero"

    async def test_a_function_the_proxy_is_serving_is_never_scaled_to_zero(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("zero", labels=ZERO)
        reader.loads = {"zero.openfaas-fn": load(0, started=5)}
        loop = Controller(
            provider=provider, reader=reader, settings=ControllerSettings(), busy=lambda key: True
        )
        for now in range(0, 300, 2):
            await loop.tick(now=now)
        assert provider.scaled == []


class TestVisibility:
    async def test_per_function_gauges_follow_the_last_tick(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("fn")
        provider.add("gone")
        reader.loads = {"fn.openfaas-fn": load(200)}
        loop = controller(provider, reader)
        await loop.tick(now=0)
        registry = loop.metrics.registry
        assert (
            registry.get_sample_value("autoscaler_desired_replicas", {"function_name": "fn.openfaas-fn"}) == 5
        )
        assert registry.get_sample_value("autoscaler_replicas", {"function_name": "fn.openfaas-fn"}) == 1
        assert (
            registry.get_sample_value("autoscaler_load", {"function_name": "fn.openfaas-fn", "type": "rps"})
            == 200
        )
        assert (
            registry.get_sample_value("autoscaler_metrics_missing", {"function_name": "gone.openfaas-fn"})
            == 1
        )
        assert (
            registry.get_sample_value(
                "autoscaler_scale_total", {"function_name": "fn.openfaas-fn", "reason": "ScaleUp"}
            )
            == 1
        )
        del provider.items["gone.openfaas-fn"]
        await loop.tick(now=2)
        assert b"gone.openfaas-fn" not in generate_latest(registry)


class TestRunning:
    async def test_a_poke_makes_the_loop_tick_without_waiting_for_the_interval(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("fn")
        loop = controller(provider, reader, interval=3600)
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop=stop))
        await asyncio.wait_for(reader.read_event.wait(), 5)
        reader.read_event.clear()
        loop.poke()
        await asyncio.wait_for(reader.read_event.wait(), 5)
        assert reader.reads == 2
        stop.set()
        await asyncio.wait_for(task, 5)

    async def test_a_stop_ends_a_tick_that_is_still_waiting_to_write(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        for i in range(3):
            provider.add(f"fn-{i}")
        reader.loads = {f"fn-{i}.openfaas-fn": load(200) for i in range(3)}
        writing = asyncio.Event()
        blocked = asyncio.Event()  # never set: a write budget that has no token for minutes

        async def slow_scale(ref: FunctionRef, replicas: int) -> None:
            writing.set()
            await blocked.wait()

        provider.scale = slow_scale  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(controller(provider, reader).run(stop=stop))
        await asyncio.wait_for(writing.wait(), 5)
        stop.set()
        await asyncio.wait_for(task, 1)  # returns at once, the other writes left undone

    async def test_the_loop_survives_a_reader_that_raises(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, _reader = world
        provider.add("fn", replicas=3)

        class BrokenReader(StaticReader):
            async def read(self, *, unused: frozenset[str] = frozenset()) -> LoadSnapshot:
                raise RuntimeError("boom")

        report = await controller(provider, BrokenReader()).tick(now=0)
        assert report.metrics_error is not None
        assert "boom" in report.metrics_error
        assert provider.scaled == []


class TestScaleTypesTheLoopDoesNotMeasure:
    QUEUE = {"com.openfaas.scale.type": "queue", **ZERO}
    CUSTOM = {"com.openfaas.scale.type": "my-custom-metric", **ZERO}

    async def test_a_function_of_a_custom_type_keeps_its_replicas_and_says_why_once(
        self, world: tuple[MemoryProvider, StaticReader], caplog: pytest.LogCaptureFixture
    ) -> None:
        provider, reader = world
        provider.add("jobs", replicas=3, labels=self.CUSTOM)
        reader.loads = {"jobs.openfaas-fn": load(500, started=1, inflight=4)}
        loop = controller(provider, reader)
        with caplog.at_level(logging.WARNING, logger="autoscaler.controller"):
            for now in (0, 2, 4):
                reader.loads = {"jobs.openfaas-fn": load(500, started=1 + now, inflight=4)}
                report = await loop.tick(now=now)
        await loop.close()
        assert provider.scaled == []
        assert report.decisions["jobs.openfaas-fn"].reason is Reason.UNSUPPORTED_TYPE
        [(key, reason, message, warning)] = provider.events
        assert (key, reason, warning) == ("jobs.openfaas-fn", "UnsupportedScalingType", True)
        assert "com.openfaas.scale.type='my-custom-metric'" in message
        assert "scale to zero after 1m idle" in message
        lines = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "spec_warning"]
        assert len(lines) == 1

    async def test_a_misspelt_scaling_label_is_named_once_with_the_label_it_resembles(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        # `com.openfaas.scale.maxx` was ignored without a word: the function scaled to the default max.
        provider, reader = world
        provider.add("typo", replicas=1, labels={"com.openfaas.scale.maxx": "2"})
        loop = controller(provider, reader)
        for now in (0, 2, 4):
            reader.loads = {"typo.openfaas-fn": load(10, started=1 + now, inflight=0)}
            await loop.tick(now=now)
        await loop.close()
        [(key, reason, message, warning)] = provider.events
        assert (key, reason, warning) == ("typo.openfaas-fn", "UnknownScalingLabel", True)
        assert message == (
            "label com.openfaas.scale.maxx is not one this autoscaler reads, so it has no effect; "
            "did you mean com.openfaas.scale.max?"
        )

    @pytest.mark.parametrize("kind", ["queue", "my-custom-metric"])
    async def test_an_idle_function_of_such_a_type_still_goes_to_zero_after_its_zero_duration(
        self, world: tuple[MemoryProvider, StaticReader], kind: str
    ) -> None:
        provider, reader = world
        provider.add("jobs", replicas=2, labels={**self.QUEUE, "com.openfaas.scale.type": kind})
        reader.loads = {"jobs.openfaas-fn": load(0, started=7)}
        loop = controller(provider, reader)
        for now in range(0, 60, 2):
            await loop.tick(now=now)
        assert provider.scaled == []
        await loop.tick(now=60)
        assert provider.scaled == [("jobs.openfaas-fn", 0)]

    async def test_a_function_with_min_equal_to_max_still_goes_to_zero_when_idle_and_wakes_on_traffic(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        labels = {**ZERO, "com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1"}
        provider.add("single", replicas=1, labels=labels)
        reader.loads = {"single.openfaas-fn": load(0, started=7)}
        loop = controller(provider, reader)
        for now in range(0, 60, 2):  # decisions the incremental tick may reuse until the zero timer
            await loop.tick(now=now)
        assert provider.scaled == []
        await loop.tick(now=60)
        assert provider.scaled == [("single.openfaas-fn", 0)]
        reader.loads = {"single.openfaas-fn": load(2, started=9)}
        await loop.tick(now=70)
        assert provider.scaled == [("single.openfaas-fn", 0), ("single.openfaas-fn", 1)]

    async def test_traffic_wakes_such_a_function_from_zero(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("jobs", replicas=0, labels=self.QUEUE)
        reader.loads = {"jobs.openfaas-fn": load(0, started=3)}
        loop = controller(provider, reader)
        await loop.tick(now=0)
        reader.loads = {"jobs.openfaas-fn": load(0, started=4, inflight=1)}
        report = await loop.tick(now=2)
        assert provider.scaled == [("jobs.openfaas-fn", 1)]
        assert report.decisions["jobs.openfaas-fn"].reason is Reason.WAKE


class TestLabelConflicts:
    async def test_a_conflict_between_template_and_deployment_labels_is_told_once_and_again_when_it_changes(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        said = "com.openfaas.scale.max: pod template '5', Deployment '9'; using the pod template's '5'"
        provider.add("fn", labels={"com.openfaas.scale.max": "5"}, conflicts=(said,))
        reader.loads = {"fn.openfaas-fn": load(0)}
        loop = controller(provider, reader)
        for now in (0, 2, 4):
            await loop.tick(now=now)
        provider.add("fn", labels={"com.openfaas.scale.max": "5"}, conflicts=(said.replace("9", "7"),))
        await loop.tick(now=6)
        await loop.close()
        warnings = [(reason, message) for _, reason, message, warning in provider.events if warning]
        assert warnings == [
            ("ConflictingScalingLabels", said),
            ("ConflictingScalingLabels", said.replace("9", "7")),
        ]


class TestWhatIsRead:
    async def test_cpu_is_not_asked_for_until_a_function_is_scaled_by_it(
        self, world: tuple[MemoryProvider, StaticReader]
    ) -> None:
        provider, reader = world
        provider.add("web", labels={"com.openfaas.scale.type": "capacity"})
        provider.add("plain")
        loop = controller(provider, reader)
        await loop.tick(now=0)
        assert reader.unused == frozenset({"cpu"})

        provider.add("crunch", labels={"com.openfaas.scale.type": " CPU "})  # as the label parser reads it
        await loop.tick(now=2)
        assert reader.unused == frozenset()
