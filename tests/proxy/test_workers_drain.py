"""SIGTERM to `autoscaler proxy --workers 2` under a stream of new connections loses none of them.

With SO_REUSEPORT each worker has its own listening socket and its own accept queue. A worker that
closes its socket while draining resets the connections the kernel had completed on it but the worker
had not yet accepted, and a connection accepted just before the drain whose request had not yet been
read was closed unanswered at the end of the drain: callers saw a connection open, took their request
and got nothing back. What a caller may see is a connection refused or reset while it opens (it then knows
nothing was sent), or an answer.
"""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import pytest

from tests.proxy.test_workers import FN, TEST_SECONDS, workers_of

pytestmark = pytest.mark.slow

CLIENTS = 48  # concurrent callers, each opening a new connection per request


async def one_call(port: int) -> str:
    """One request on a new connection: its status, "refused", or what went wrong after connecting."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:  # refused, or reset within the handshake: the caller knows nothing was sent
        return "refused"
    try:
        writer.write(f"GET /function/{FN}/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 15)
        return answer.split(b" ", 2)[1].decode() if answer else "empty answer"
    except (ConnectionError, TimeoutError) as e:
        return f"connected, then {type(e).__name__}"
    finally:
        writer.close()


async def test_sigterm_under_a_stream_of_new_connections_answers_every_connection_it_accepted(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(TEST_SECONDS), workers_of(tmp_path, replicas=1) as proxy:
        outcomes: collections.Counter[str] = collections.Counter()
        stop = asyncio.Event()

        async def caller() -> None:
            while not stop.is_set():
                outcome = await one_call(proxy.port)
                outcomes[outcome] += 1
                if outcome == "refused":
                    return  # the proxy has stopped listening

        callers = [asyncio.ensure_future(caller()) for _ in range(CLIENTS)]
        await asyncio.sleep(1.0)
        assert outcomes["200"] > 0, dict(outcomes)
        proxy.process.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proxy.process.process.wait(), 15)
        stop.set()
        await asyncio.gather(*callers)
        assert code == 0, proxy.process.tail()
        lost = {k: n for k, n in outcomes.items() if k not in ("200", "refused")}
        assert not lost, f"connections accepted and not answered: {lost} (all: {dict(outcomes)})"
