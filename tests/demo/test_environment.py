"""The demo reads the `AUTOSCALER_*` variables it validates, and says which ones it sets itself.

Its stack shortens some clocks (a 0.5 s tick, a 30 s hold) so that a run fits in a minute; a variable a
user sets wins over those defaults, as it does in a cluster. Before, the demo validated
`AUTOSCALER_HOLD_TIMEOUT` and then built its proxy with its own 30 s: a request queued behind a
function's concurrency limit waited 12 s with the variable at 5.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import aiohttp
import pytest

from autoscaler.demo.stack import LocalStack, StackSettings
from autoscaler.functionsfile import FunctionsFile, load_builtin
from autoscaler.spec import MAX, MAX_INFLIGHT, MIN


def one_slot_hello() -> FunctionsFile:
    """The built-in functions with hello at exactly one replica taking one request at a time."""
    functions = load_builtin()
    changed = tuple(
        dataclasses.replace(fn, labels={**fn.labels, MIN: "1", MAX: "1", MAX_INFLIGHT: "1"})
        if fn.name == "hello"
        else fn
        for fn in functions.functions
    )
    return dataclasses.replace(functions, functions=changed)


@pytest.mark.slow
async def test_a_request_queued_behind_the_concurrency_limit_gets_504_at_the_environments_hold_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTOSCALER_HOLD_TIMEOUT", "1")
    stack = LocalStack(functions=one_slot_hello(), settings=StackSettings(embedded_nats=False))
    try:
        await stack.start()
        url = f"{stack.url}/function/hello?ms=3000"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            first = asyncio.create_task(session.get(url))
            await asyncio.sleep(0.3)  # the first holds the one slot for 3 s
            started = time.monotonic()
            async with session.get(url) as response:
                waited = time.monotonic() - started
                status = response.status
            (await first).release()
    finally:
        await stack.close()
    assert status == 504
    assert waited < 2.5  # the 1 s hold timeout, not the 3 s the slot stays taken nor the demo's 30 s


async def test_the_demos_own_clocks_apply_where_the_environment_gives_none() -> None:
    stack = LocalStack(
        functions=load_builtin(),
        settings=StackSettings(hold_timeout=7.0, drain_grace=2.0, embedded_nats=False),
    )
    assert (stack.proxy_settings.hold_timeout, stack.proxy_settings.shutdown_grace) == (7.0, 2.0)
    assert stack.notes() == []


async def test_a_variable_for_a_setting_the_demo_fixes_is_named_as_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTOSCALER_PORT", "9999")
    monkeypatch.setenv("AUTOSCALER_ADMIN_PORT", "9998")
    monkeypatch.setenv("AUTOSCALER_SHUTDOWN_GRACE", "3")
    stack = LocalStack(functions=load_builtin(), settings=StackSettings(embedded_nats=False))
    assert stack.proxy_settings.port == 0  # the demo's --port, not the variable
    assert stack.proxy_settings.shutdown_grace == 3.0  # read
    [note] = stack.notes()
    assert "AUTOSCALER_ADMIN_PORT, AUTOSCALER_PORT" in note  # each named once, though two models read it
    assert "SHUTDOWN_GRACE" not in note
