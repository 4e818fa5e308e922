"""Benchmark: a burst of POSTs through the proxy into a naive function server, against a roomy backlog.

The function is Python's `http.server.ThreadingHTTPServer` in its own process (`tests/support/naive`,
HTTP/1.0, a connection per request, as most hand-written Python functions are), behind our proxy (one
process, an in-memory provider). The burst is N concurrent POSTs with small bodies (Content-Length
framing) from one aiohttp client; every answer is checked byte for byte.

- **naive**: the server's default listen backlog of 5 (before the pool gave a waiting request the first
  free connection: 7.7-60 s, requests lost);
- **baseline**: the same server with a backlog of 1,024, where the accept queue never overflows:
  what the proxy achieves when the server side is not the bottleneck.

Each is measured warm (the function ready, the proxy's pools cold) and from zero (every request
held while the function is at zero, then released at once when it becomes ready: the time is from
readiness to the last answer), `--runs` times, in the same run. Goal: 0 lost, each burst within 1 s.

Run: `python bench/naive_burst_bench.py [--requests 300] [--runs 3]` from the project root.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from autoscaler.config import ProxySettings  # noqa: E402
from autoscaler.proxy import Proxy  # noqa: E402
from tests.support.fakeprovider import FakeProvider  # noqa: E402
from tests.support.naive import NaiveServer  # noqa: E402
from tests.support.waiting import until  # noqa: E402

TIMEOUT = 60.0  # seconds a caller waits before counting its request as lost


async def burst(session: aiohttp.ClientSession, url: str, count: int) -> tuple[int, int]:
    """(answered correctly, lost or wrong)."""

    async def post(index: int) -> bool:
        body = f"call {index} ".encode() * (index % 50 + 1)
        expected = f"POST /call/{index} {len(body)} {hashlib.sha256(body).hexdigest()}"
        try:
            async with session.post(
                f"{url}/call/{index}", data=body, timeout=aiohttp.ClientTimeout(total=TIMEOUT)
            ) as response:
                return response.status == 200 and await response.text() == expected
        except (aiohttp.ClientError, TimeoutError):
            return False

    results = await asyncio.gather(*(post(index) for index in range(count)))
    return sum(results), count - sum(results)


def held(proxy: Proxy, key: str) -> int:
    stats = proxy.invocation_stats().get(key)
    return 0 if stats is None else stats.held


async def one(*, backlog: int, cold: bool, count: int) -> tuple[float, int]:
    """Seconds for the burst (from readiness when cold) and how many were lost."""
    server = NaiveServer(backlog=backlog)
    await server.start()
    provider = FakeProvider(ready_delay=600)
    settings = ProxySettings(host="127.0.0.1", port=0, admin_port=0, max_held=max(1000, count))
    proxy: Proxy | None = None
    try:
        ref = await provider.add("naive", url=server.url, warm=not cold)
        proxy = Proxy(settings=settings, provider=provider)
        await proxy.start()
        url = f"http://127.0.0.1:{proxy.port}/function/naive"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            if not cold:
                started = time.perf_counter()
                _, lost = await burst(session, url, count)
                return time.perf_counter() - started, lost
            calls = asyncio.ensure_future(burst(session, url, count))
            await until(lambda: held(proxy, ref.key) >= count, within=TIMEOUT, what="every request held")
            ready = time.perf_counter()
            provider.ready_now(ref)
            _, lost = await calls
            return time.perf_counter() - ready, lost
    finally:
        if proxy is not None:
            await proxy.stop()
        await provider.close()
        await server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.requests} concurrent POSTs into ThreadingHTTPServer (HTTP/1.0), {args.runs} runs each")
    medians: dict[tuple[str, int], float] = {}
    for mode in ("warm", "from zero"):
        for backlog in (5, 1024):
            times: list[float] = []
            lost: list[int] = []
            for _ in range(args.runs):
                took, missing = await one(backlog=backlog, cold=mode == "from zero", count=args.requests)
                times.append(took)
                lost.append(missing)
            medians[(mode, backlog)] = statistics.median(times)
            label = "naive   " if backlog == 5 else "baseline"
            runs = ", ".join(f"{t:.3f}" for t in times)
            print(f"  {mode:9} {label} backlog {backlog:4}: {runs} s; lost {lost}")
        ratio = medians[(mode, 5)] / medians[(mode, 1024)]
        print(f"  {mode:9} median naive/baseline: {ratio:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
