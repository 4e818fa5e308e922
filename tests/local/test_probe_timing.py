"""OpenFaaS's readiness-probe timing annotations in local mode, as kubelet applies them in a cluster.

`com.openfaas.ready.http.initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, `successThreshold`
and `failureThreshold` (docs.openfaas.com/reference/workloads) were read for the path only: a
function that needs its initial delay was probed from its first millisecond, and one whose readiness
failed later stayed in the endpoints. The fixture function's readiness follows the file READY_FILE.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from autoscaler.errors import ConfigError
from autoscaler.functionsfile import (
    PROBE_DELAY,
    PROBE_FAILURES,
    PROBE_PERIOD,
    PROBE_SUCCESSES,
    PROBE_TIMEOUT,
    ReadinessProbe,
    readiness_probe,
)
from tests.support.waiting import until

from .support import READY, REF, MakeProvider


async def test_the_first_probe_waits_for_the_initial_delay(make_provider: MakeProvider) -> None:
    started = time.monotonic()
    provider = await make_provider(annotations={READY: "/", PROBE_DELAY: "1", PROBE_PERIOD: "100ms"})
    assert await provider.wait_ready(REF, timeout=10)
    assert time.monotonic() - started >= 1.0  # the function answered at once; the probe waited


async def test_readiness_takes_the_success_threshold_of_passes_a_period_apart(
    make_provider: MakeProvider, tmp_path: Path
) -> None:
    ready_file = tmp_path / "ready"
    provider = await make_provider(
        env={"READY_FILE": str(ready_file)},
        annotations={READY: "/", PROBE_PERIOD: "400ms", PROBE_SUCCESSES: "3"},
    )
    await until(lambda: any(r.port for r in provider.replicas(REF)), within=10, what="a spawned replica")
    ready_file.touch()
    passing = time.monotonic()
    assert await provider.wait_ready(REF, timeout=10)
    assert time.monotonic() - passing >= 0.8  # three passes in a row: at least two periods


async def test_a_replica_that_fails_its_probe_leaves_the_endpoints_and_comes_back_when_it_passes(
    make_provider: MakeProvider, tmp_path: Path
) -> None:
    ready_file = tmp_path / "ready"
    ready_file.touch()
    provider = await make_provider(
        env={"READY_FILE": str(ready_file)},
        annotations={READY: "/", PROBE_PERIOD: "100ms", PROBE_FAILURES: "2"},
    )
    assert await provider.wait_ready(REF, timeout=10)
    [url] = provider.endpoints(REF)
    ready_file.unlink()
    await until(
        lambda: provider.endpoints(REF) == [], within=5, what="the failing replica out of the endpoints"
    )
    assert provider.get(REF).ready_replicas == 0
    ready_file.touch()
    await until(lambda: provider.endpoints(REF) == [url], within=5, what="the same replica back")


async def test_without_timing_annotations_a_ready_replica_is_not_probed_again(
    make_provider: MakeProvider, tmp_path: Path
) -> None:
    ready_file = tmp_path / "ready"
    ready_file.touch()
    provider = await make_provider(env={"READY_FILE": str(ready_file)}, annotations={READY: "/"})
    assert await provider.wait_ready(REF, timeout=10)
    ready_file.unlink()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        assert len(provider.endpoints(REF)) == 1  # the local pace: cold starts short, no probing after
        await asyncio.sleep(0.02)


def test_what_the_annotations_leave_out_is_the_openfaas_charts_probe() -> None:
    assert readiness_probe({}, where="f") == ReadinessProbe()
    assert readiness_probe({PROBE_DELAY: "2s"}, where="f") == ReadinessProbe(
        initial_delay=2.0, period=2.0, timeout=1.0, success_threshold=1, failure_threshold=3
    )
    # faas-netes CE gives the health probe's initial delay (a Go duration) to the readiness probe too.
    assert readiness_probe({"com.openfaas.health.http.initialDelay": "1m"}, where="f").initial_delay == 60.0


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        (PROBE_DELAY, "soon", "is not a number of seconds"),
        (PROBE_PERIOD, "0", "must be longer than 0"),
        (PROBE_TIMEOUT, "-1s", "is not a number of seconds"),
        (PROBE_SUCCESSES, "0", "is not a whole number of at least 1"),
        (PROBE_FAILURES, "2.5", "is not a whole number of at least 1"),
    ],
)
def test_a_timing_annotation_that_is_not_one_is_refused_by_name(key: str, value: str, says: str) -> None:
    expected = rf"^function 'f': field annotations\.{re.escape(key)}: '{re.escape(value)}' {says}"
    with pytest.raises(ConfigError, match=expected):
        readiness_probe({key: value}, where="function 'f'")
