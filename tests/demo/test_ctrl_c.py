"""Ctrl-C in the terminal ends `autoscaler demo --serve` quietly and at once, its NATS clients first.

A terminal sends SIGINT to the whole foreground process group. The embedded nats-server used to be in
that group, so it died under the demo's NATS clients: they logged the lost connection and reconnected
in a loop while the demo closed, and in some runs (3 of 5 with a crash-looping function) the demo
then never exited. The server now runs in a session of its own, like the replicas, and is stopped
after the clients are closed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from tests.support.nats import require_binary

pytestmark = pytest.mark.slow


async def test_ctrl_c_on_the_served_demo_exits_0_without_a_word_from_nats() -> None:
    require_binary()  # the demo embeds NATS only when a nats-server is installed (CI installs it)
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscaler", "--log-format", "text", "demo", "--serve", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        seen = b""
        async with asyncio.timeout(60):
            while b"serving batch" not in seen:  # the last function it lists: the stack is up
                line = await demo.stdout.readline()
                assert line, f"the demo ended before serving: {seen.decode()}"
                seen += line
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        _, err = await asyncio.wait_for(demo.communicate(), timeout=20)
    finally:
        if demo.returncode is None:
            os.killpg(demo.pid, signal.SIGKILL)
            await demo.wait()
    text = err.decode()
    assert demo.returncode == 0, text
    assert "Traceback" not in text
    assert "NATS" not in text, text
