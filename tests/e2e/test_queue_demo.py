"""The demo's stack with an embedded nats-server: asynchronous calls on one machine, and nothing left behind.

`LocalStack(embedded_nats=True)` starts a real nats-server (temporary store, free port) next to the
local functions, the proxy and the loop; the scripted load gains an async step whose calls must each
be accepted (202) and invoked by the in-process queue-worker; closing the stack stops the server and
deletes its store. Without the binary the stack runs without asynchronous calls and says how to get
them.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from autoscaler.demo import _nats
from autoscaler.demo.script import ASYNC_CALLS, Script
from autoscaler.demo.stack import LocalStack, StackSettings, shorten_zero_durations
from autoscaler.demo.view import View
from autoscaler.functionsfile import load_builtin
from tests.support.nats import require_binary

pytestmark = [pytest.mark.nats, pytest.mark.slow]


async def test_the_scripted_demo_queues_its_async_calls_on_the_embedded_server_and_invokes_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NATS_SERVER_BIN", require_binary())
    functions, _ = shorten_zero_durations(load_builtin(), seconds=3.0)
    stack = LocalStack(functions=functions, settings=StackSettings(embedded_nats=True))
    out = io.StringIO()
    try:
        await stack.start()
        assert stack.nats is not None
        store = stack.nats.directory
        assert stack.queue_note.startswith("asynchronous calls: /async-function/ on JetStream at nats://")
        view = View(stack=stack, out=out)
        summary = await Script(stack=stack, view=view).run()
    finally:
        await stack.close()
    text = "\n".join(summary.lines())
    assert re.search(rf"async calls:\s+{ASYNC_CALLS} accepted \(202\), {ASYNC_CALLS} invoked", text), text
    assert summary.tally.lost == 0
    assert "3/4 async" in out.getvalue()
    assert store is not None
    assert not store.exists()  # the temporary store went with the server


async def test_without_a_nats_server_binary_the_stack_runs_without_asynchronous_calls_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NATS_SERVER_BIN", str(tmp_path / "no-such-binary"))
    assert _nats.find_binary() is None
    stack = LocalStack(functions=load_builtin(), settings=StackSettings(embedded_nats=True))
    assert stack.acceptor is None
    assert _nats.INSTALL_HINT in stack.queue_note
