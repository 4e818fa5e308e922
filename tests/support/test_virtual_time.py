"""The virtual-time loop: timers fire at their exact times at once, and I/O in flight holds time still."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from tests.support.virtual_time import START, VirtualTimeLoop

_T = TypeVar("_T")


def on_virtual_time(main: Callable[[], Awaitable[_T]]) -> _T:
    async def run() -> _T:
        return await main()

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(run())


def test_sleepers_wake_in_order_at_their_exact_virtual_times_in_a_few_real_milliseconds() -> None:
    async def main() -> tuple[list[tuple[str, float]], int]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            woke.append((name, loop.time() - START))

        await asyncio.gather(sleeper("hold", 60), sleeper("keep-alive", 75), sleeper("header", 10))
        return woke, loop.jumps

    began = time.monotonic()
    woke, jumps = on_virtual_time(main)

    assert woke == [("header", 10.0), ("hold", 60.0), ("keep-alive", 75.0)]
    assert jumps == 3, "time went in steps, not straight to each timer"
    assert time.monotonic() - began < 1.0


def test_time_stands_still_while_bytes_flow_over_a_loopback_connection() -> None:
    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        began = loop.time()
        async with asyncio.timeout(5):  # on the virtual clock too: it must never fire
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            payload = b"x" * 4_000_000

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sending = asyncio.create_task(send())
            received = await reader.read(-1)  # until the echo server closes
            await sending
        writer.close()
        server.close()
        await server.wait_closed()
        return len(received), loop.time() - began

    received, took = on_virtual_time(main)

    assert (received, took) == (4_000_000, 0.0)


def test_a_timeout_over_a_silent_connection_fires_at_its_exact_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, says nothing
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        began = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(300):
                await reader.read(1)
        took = loop.time() - began
        writer.close()
        server.close()
        return took

    assert on_virtual_time(main) == 300.0


def test_while_a_thread_works_time_follows_the_real_clock_so_its_result_is_not_missed() -> None:
    def work() -> str:
        time.sleep(0.05)
        return "done"

    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with asyncio.timeout(1.0):  # would fire at once if time jumped over the thread's work
            result = await loop.run_in_executor(None, work)
        return result, loop.time() - began

    result, took = on_virtual_time(main)

    assert result == "done"
    assert 0.04 < took < 1.0
