"""The demo's stack with an embedded nats-server: asynchronous calls on one machine, and nothing left behind.

`LocalStack(embedded_nats=True)` starts a real nats-server (temporary store, free port) next to the
local functions, the proxy and the loop; the scripted load gains an async step whose calls must each
be accepted (202) and invoked by the in-process queue-worker; closing the stack stops the server and
deletes its store. Without the binary the stack runs without asynchronous calls and says how to get
them. In this local mode (no Prometheus) the queue-worker's backlog is the loop's pending figure, so a
`type=queue` function is woken and scaled on it, then goes back to zero once it is drained.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from pathlib import Path

import aiohttp
import pytest

from autoscaler.demo import _nats
from autoscaler.demo.script import ASYNC_CALLS, Script
from autoscaler.demo.stack import (
    QUEUE_EXAMPLE,
    LocalStack,
    StackSettings,
    shorten_zero_durations,
    with_queue_example,
)
from autoscaler.demo.view import View
from autoscaler.functionsfile import FunctionsFile, load_builtin
from tests.support.nats import require_binary
from tests.support.waiting import until

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def refreshing(view: View) -> None:
    while True:
        view.refresh()
        await asyncio.sleep(0.25)


async def test_the_scripted_demo_queues_its_async_calls_on_the_embedded_server_and_invokes_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NATS_SERVER_BIN", require_binary())
    functions, _ = shorten_zero_durations(with_queue_example(load_builtin()), seconds=3.0)
    stack = LocalStack(functions=functions, settings=StackSettings(embedded_nats=True))
    out = io.StringIO()
    try:
        await stack.start()
        assert stack.nats is not None
        store = stack.nats.directory
        assert stack.queue_note.startswith("asynchronous calls: /async-function/ on JetStream at nats://")
        view = View(stack=stack, out=out)
        ticker = asyncio.create_task(refreshing(view))  # as `autoscaler demo` does: the view keeps the peaks
        try:
            summary = await Script(stack=stack, view=view).run()
        finally:
            ticker.cancel()
    finally:
        await stack.close()
    text = "\n".join(summary.lines())
    assert re.search(rf"async calls:\s+{ASYNC_CALLS} accepted \(202\), {ASYNC_CALLS} invoked", text), text
    assert summary.tally.lost == 0
    assert f"3/4 async: {ASYNC_CALLS} calls to /async-function/{QUEUE_EXAMPLE} (type=queue" in out.getvalue()
    assert summary.peaks[QUEUE_EXAMPLE] >= 2  # scaled on its backlog
    assert summary.final[QUEUE_EXAMPLE] == 0
    assert store is not None
    assert not store.exists()  # the temporary store went with the server


async def test_a_stop_names_the_calls_it_cuts_short_and_the_ones_the_temporary_queue_drops(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The worker logged "0 call(s) will be redelivered" for three it had just cut (its wait was
    # cancelled with them), and nothing said the demo's queue goes with it.
    monkeypatch.setenv("NATS_SERVER_BIN", require_binary())
    stack = LocalStack(functions=load_builtin(), settings=StackSettings(embedded_nats=True, drain_grace=0.5))
    try:
        await stack.start()
        assert stack.worker is not None
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.post(f"{stack.url}/async-function/hello?ms=20000", data=b"x") as response:
                    assert response.status == 202
        worker = stack.worker
        # The worker's concurrency starts low and grows with successes: at least one is running.
        await until(lambda: len(worker._calls) >= 1, within=15, what="a call being invoked")
        running = len(worker._calls)
    finally:
        with caplog.at_level(logging.INFO, logger="autoscaler"):
            await stack.close()
    assert f"drain grace is over; {running} call(s) still running are stopped" in caplog.text
    assert "3 asynchronous call(s) queued or cut short by the stop are dropped" in caplog.text


async def test_once_the_proxy_answers_ready_a_call_finds_its_function_while_nats_server_still_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NATS_SERVER_BIN", require_binary())
    stack = LocalStack(functions=load_builtin(), settings=StackSettings(embedded_nats=True))
    starting = asyncio.create_task(stack.start())
    try:
        async with aiohttp.ClientSession() as client:
            deadline = time.monotonic() + 30
            while not stack.proxy.ready():  # the proxy has bound its ports: poll its own /readyz
                assert time.monotonic() < deadline, "the proxy never started"
                await asyncio.sleep(0.01)
            admin = f"http://127.0.0.1:{stack.proxy.admin_port}/readyz"
            for _ in range(3000):
                async with client.get(admin) as ready:
                    if ready.status == 200:
                        break
                await asyncio.sleep(0.01)
            assert not starting.done()  # nats-server is still starting: the window a caller can hit
            async with client.get(f"{stack.url}/function/hello?name=early") as response:
                assert response.status == 200, await response.text()  # held until ready, never a 404
        await starting
    finally:
        if not starting.done():
            await asyncio.wait([starting], timeout=30)
        await stack.close()


async def test_without_a_nats_server_binary_the_stack_runs_without_asynchronous_calls_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NATS_SERVER_BIN", str(tmp_path / "no-such-binary"))
    assert _nats.find_binary() is None
    stack = LocalStack(functions=load_builtin(), settings=StackSettings(embedded_nats=True))
    assert stack.acceptor is None
    assert _nats.INSTALL_HINT in stack.queue_note


async def test_a_nats_server_binary_that_exits_at_once_is_named_with_its_exit_code(tmp_path: Path) -> None:
    quiet = tmp_path / "nats-server"
    quiet.write_text("#!/bin/sh\nexit 3\n")
    quiet.chmod(0o755)
    with pytest.raises(RuntimeError) as raised:
        await _nats.EmbeddedNats(binary=str(quiet)).start(timeout=5)
    assert str(raised.value) == (
        f"nats-server {quiet} did not start with JetStream (it exited with code 3) and printed nothing"
    )


async def test_in_local_mode_a_queue_function_at_zero_is_woken_and_scaled_by_its_backlog_then_drained_to_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NATS_SERVER_BIN", require_binary())
    only = FunctionsFile(namespace="openfaas-fn", functions=(), source="test")
    functions, _ = shorten_zero_durations(with_queue_example(only), seconds=1.0)
    stack = LocalStack(functions=functions, settings=StackSettings(embedded_nats=True, rate_window=1.0))
    (ref,) = stack.refs
    calls = 30  # 250 ms each, one at a time per replica: a backlog that wants all 4 replicas
    peak, drained_at = 0, None
    try:
        await stack.start()
        assert stack.worker is not None
        info = stack.provider.get(ref)
        assert info is not None
        assert info.replicas == 0
        async with aiohttp.ClientSession() as session:
            for index in range(calls):
                async with session.post(
                    f"{stack.url}/async-function/{ref.name}", data=b"%d" % index
                ) as answer:
                    assert answer.status == 202
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = stack.provider.get(ref)
            assert info is not None
            peak = max(peak, info.ready_replicas)
            if drained_at is None and stack.worker.completed >= calls:
                drained_at = time.monotonic()
            if drained_at is not None and info.replicas == 0 and info.ready_replicas == 0:
                break
            await asyncio.sleep(0.1)
        reasons = [(e.reason, e.message) for e in stack.provider.events() if e.function == ref.key]
    finally:
        await stack.close()
    assert drained_at is not None, f"the worker invoked {stack.worker and stack.worker.completed} of {calls}"
    assert peak == 4, reasons  # the backlog asked for every replica (30 / (5 x 0.9) -> 7, at most 4)
    assert any(reason == "ScaleUp" and "pending calls" in message for reason, message in reasons), reasons
    assert reasons[-1][0] == "ScaleToZero", reasons  # drained, idle for its zero-duration: back to zero
    assert time.monotonic() - drained_at < 10
