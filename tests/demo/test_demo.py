"""`autoscaler demo` as a user runs it: one command, a summary with nothing lost, and a clean exit.

With a nats-server binary on the machine the demo also runs asynchronous calls on an embedded one
(a third child process, and a third function, `batch`, scaled on its backlog); without one it says
the async step is skipped and how to get it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from autoscaler.demo._nats import find_binary
from tests.local.support import alive, children_of
from tests.support.waiting import until

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
QUEUE = find_binary() is not None  # what the demo itself looks for


def command_name(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


async def autoscaler(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "autoscaler",
        "--log-format",
        "text",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )


def number(pattern: str, text: str) -> int:
    """The whole number `pattern`'s group catches in `text`; fails naming the pattern if absent."""
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in the output:\n{text}"
    return int(found.group(1))


@pytest.mark.slow
async def test_the_demo_runs_a_cold_start_a_burst_and_an_idle_period_and_loses_no_request() -> None:
    started = time.monotonic()
    demo = await autoscaler("demo")
    try:
        out, err = await asyncio.wait_for(demo.communicate(), timeout=60)
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
    text = out.decode()
    assert demo.returncode == 0, text + err.decode()
    assert time.monotonic() - started < 60
    assert "\x1b[" not in text  # stdout is not a terminal: plain lines, no live table
    assert "wordcount: zero-duration shortened from 5m to 3s for the demo" in text
    assert re.search(r"requests lost:\s+0\n", text)
    assert re.search(rf"cold starts:\s+{2 if QUEUE else 1} ", text)  # batch starts from zero too
    held, sent, served = (number(rf"requests {what}:\s+(\d+)", text) for what in ("held", "sent", "served"))
    assert held >= 5  # the cold start's requests waited for the replica, then were forwarded
    assert served == sent > 200
    peak = number(r"hello: peak (\d+) replica\(s\), 1 at the end", text)
    assert peak >= 2  # the burst scaled it up, the idle period brought it back to min
    assert "wordcount: peak 1 replica(s), 0 at the end" in text  # and the idle one went to zero
    assert re.search(r"wordcount: replicas=0 desired=0 .*last change=ScaleToZero", text)
    if QUEUE:
        assert re.search(r"async calls:\s+30 accepted \(202\), 30 invoked by the queue-worker", text)
        assert number(r"batch: peak (\d+) replica\(s\), 0 at the end", text) >= 2  # scaled on its backlog
    else:
        assert "no nats-server found: install nats-server (apt-get install nats-server)" in text
        assert "the async step is skipped" in text


@pytest.mark.slow
async def test_serve_answers_callers_until_sigterm_and_leaves_no_process_behind() -> None:
    add_on = await autoscaler("demo", "--serve", "--port", "0")
    try:
        assert add_on.stdout is not None
        url = None
        while url is None:
            line = (await asyncio.wait_for(add_on.stdout.readline(), timeout=30)).decode()
            assert line, "the add-on exited before serving"
            if match := re.search(r"curl (http://127\.0\.0\.1:\d+)/function/hello", line):
                url = match.group(1)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/function/hello?name=you") as response:
                assert response.status == 200
                assert (await response.text()).startswith("Hello, you!")
            async with session.post(f"{url}/function/wordcount", data=b"a b a") as response:  # a cold start
                assert response.status == 200
                assert (await response.json())["words"] == 3
        children = children_of(add_on.pid)
        replicas = [pid for pid in children if command_name(pid) != "nats-server"]
        assert len(replicas) == 2
        assert len(children) == len(replicas) + QUEUE  # and the embedded nats-server, when there is one
        add_on.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(add_on.wait(), timeout=20) == 0
        await until(lambda: not any(alive(pid) for pid in children), within=5, what="no child left")
    finally:
        if add_on.returncode is None:
            add_on.kill()
            await add_on.wait()


async def test_a_bad_functions_file_exits_2_naming_the_function_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "functions.yml"
    bad.write_text("functions:\n  hello:\n    labels: {com.openfaas.scale.max: zero}\n")
    demo = await autoscaler("demo", "--serve", "--functions", str(bad))
    _, err = await asyncio.wait_for(demo.communicate(), timeout=30)
    assert demo.returncode == 2
    assert "function 'hello': field command: Field required" in err.decode()


async def test_a_port_in_use_exits_2_and_says_to_pick_another() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = await autoscaler("demo", "--serve", "--port", str(port))
        _, err = await asyncio.wait_for(demo.communicate(), timeout=30)
    assert demo.returncode == 2
    message = err.decode()
    assert f"127.0.0.1:{port}" in message
    assert "in use" in message
    assert "--port" in message


async def test_a_bad_zero_duration_exits_2_saying_how_to_write_one() -> None:
    demo = await autoscaler("demo", "--zero-duration", "forever")
    _, err = await asyncio.wait_for(demo.communicate(), timeout=30)
    assert demo.returncode == 2
    assert "--zero-duration: not a Go duration: 'forever'; use a Go duration such as" in err.decode()
