"""Benchmark of asynchronous calls on NATS JetStream, measured in one run on loopback (issue 13).

(1) Accept rate: N POSTs at concurrency C to /async-function/NAME through our proxy (its own process,
    uvloop, an in-memory provider, AsyncAcceptor on a real nats-server with JetStream) against the
    same N synchronous calls to the same warm function (`hello.py`, no work) through the same proxy
    (/function/NAME, same concurrency); answers per second and the ratio.
(2) Drain: a backlog of async calls (each WORK_MS of work, one at a time per replica) on the local
    stack (`LocalStack`: real replica processes, the proxy, the loop and the queue-worker in this
    process) for a function with `com.openfaas.scale.type=queue` against the same labels with
    `type=capacity`; drain seconds, peak ready replicas and the ratio.

Run: `python bench/queue_bench.py` (from the project root; needs nats-server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.nats import NatsServer, require_binary  # noqa: E402
from tests.support.prometheus import free_port  # noqa: E402

HELLO = ROOT / "autoscaler" / "data" / "functions" / "hello.py"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- (1) the proxy under test, in its own process ---------------------------------------------------


async def serve_proxy(*, function_url: str, nats_url: str, port: int, admin_port: int) -> int:
    from autoscaler.config import ProxySettings, QueueSettings
    from autoscaler.proxy import Proxy, serve_forever
    from autoscaler.queue import AsyncAcceptor
    from tests.support.fakeprovider import FakeProvider

    provider = FakeProvider()
    await provider.add("hello", url=function_url)
    acceptor = AsyncAcceptor(
        settings=QueueSettings(nats_url=nats_url), provider=provider, default_namespace="openfaas-fn"
    )
    await acceptor.start(wait=5.0)
    settings = ProxySettings(host="127.0.0.1", port=port, admin_port=admin_port)
    proxy = Proxy(settings=settings, provider=provider, async_acceptor=acceptor)
    await proxy.start()
    print(json.dumps({"port": proxy.port, "nats": acceptor.ready()}), flush=True)
    try:
        return await serve_forever(proxy, grace=5)
    finally:
        await acceptor.close()


async def burst(url: str, count: int, concurrency: int) -> tuple[dict[int, int], float]:
    """`count` POSTs to `url` from `concurrency` keep-alive workers; statuses and wall seconds."""
    import aiohttp

    statuses: dict[int, int] = {}
    left = iter(range(count))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for index in left:
                async with session.post(url, data=b"call-%d" % index) as answer:
                    await answer.read()
                    statuses[answer.status] = statuses.get(answer.status, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return statuses, time.monotonic() - started


def accept_rate(args: argparse.Namespace) -> None:
    import uvloop

    with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp:
        nats = NatsServer(data_dir=Path(tmp) / "nats", binary=require_binary()).start()
        fn_port = free_port()
        env = {**os.environ, "PORT": str(fn_port), "WORK_MS": "0", "STARTUP_SECONDS": "0"}
        function = subprocess.Popen([sys.executable, str(HELLO)], env=env)
        port, admin = free_port(), free_port()
        proxy = subprocess.Popen(
            [sys.executable, __file__, "--serve-proxy", "--function-url", f"http://127.0.0.1:{fn_port}",
             "--nats-url", nats.url, "--port", str(port), "--admin-port", str(admin)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proxy.stdout is not None
            hello = json.loads(proxy.stdout.readline())
            assert hello["nats"], "the proxy did not connect to nats-server"
            base = f"http://127.0.0.1:{hello['port']}"
            n, c = args.calls, args.concurrency
            uvloop.run(burst(f"{base}/function/hello", 200, c))  # warm up: the function's connections
            uvloop.run(burst(f"{base}/async-function/hello", 200, c))
            print(f"\n(1) {n} POSTs at concurrency {c} through our proxy; load average {load_average()}")
            rates = {}
            for name, path, want in (("async /async-function/", "async-function", 202),
                                     ("sync  /function/", "function", 200)):  # fmt: skip
                statuses, seconds = uvloop.run(burst(f"{base}/{path}/hello", n, c))
                rates[name] = statuses.get(want, 0) / seconds
                print(f"    {name:24} {rates[name]:8.0f} {want}s per second "
                      f"({seconds:.2f} s; statuses {statuses})")  # fmt: skip
            ratio = rates["async /async-function/"] / rates["sync  /function/"]
            print(f"    ratio async accept / sync = {ratio:.2f}x   (load average {load_average()})")
        finally:
            proxy.terminate()
            proxy.wait(timeout=15)
            function.terminate()
            function.wait(timeout=15)
            nats.stop()


# -- (2) drain a backlog on the local stack ---------------------------------------------------------


async def drain(scale_type: str, args: argparse.Namespace) -> tuple[float, int, int]:
    """Drain seconds (first POST -> last call invoked), peak ready replicas, calls invoked."""
    from autoscaler.demo.stack import LocalStack, StackSettings
    from autoscaler.functionsfile import FunctionsFile, LocalFunction
    from autoscaler.spec import MAX, MAX_INFLIGHT, MIN, TARGET, TYPE, ZERO

    fn = LocalFunction(
        name="batch",
        argv=(sys.executable, str(HELLO)),
        labels={
            MIN: "1",
            MAX: str(args.max_replicas),
            TYPE: scale_type,
            TARGET: "5",
            ZERO: "false",
            MAX_INFLIGHT: "1",
        },
        environment={"WORK_MS": str(args.work_ms), "STARTUP_SECONDS": "0.3"},
        health_path="/",
        initial_replicas=1,
    )
    functions = FunctionsFile(namespace="openfaas-fn", functions=(fn,), source="bench")
    stack = LocalStack(functions=functions, settings=StackSettings(embedded_nats=True, rate_window=1.0))
    (ref,) = stack.refs
    peak, seconds = 0, float("nan")
    try:
        await stack.start()
        worker = stack.worker
        assert worker is not None, stack.queue_note

        async def watch() -> None:
            nonlocal peak
            while True:
                info = stack.provider.get(ref)
                peak = max(peak, info.ready_replicas if info else 0)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        started = time.monotonic()
        statuses, _ = await burst(f"{stack.url}/async-function/batch", args.backlog, args.concurrency)
        assert statuses == {202: args.backlog}, statuses
        deadline = started + args.drain_timeout
        while worker.completed < args.backlog and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # the worker has no event to wait on; 20 ms is the resolution
        if worker.completed >= args.backlog:
            seconds = time.monotonic() - started
        watcher.cancel()
        return seconds, peak, worker.completed
    finally:
        await stack.close()


def drain_both(args: argparse.Namespace) -> None:
    import uvloop

    print(f"\n(2) drain {args.backlog} async calls of {args.work_ms} ms each, max-inflight 1 per replica, "
          f"min 1, max {args.max_replicas}, target 5, same labels but the type")  # fmt: skip
    results = {}
    for scale_type in ("queue", "capacity"):
        before = load_average()
        seconds, peak, done = uvloop.run(drain(scale_type, args))
        results[scale_type] = seconds
        print(f"    type={scale_type:9} drained in {seconds:6.2f} s, peak {peak} ready replicas, "
              f"{done}/{args.backlog} invoked   (load average {before} -> {load_average()})")  # fmt: skip
    print(f"    ratio drain capacity / queue = {results['capacity'] / results['queue']:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="(1) POSTs of each kind")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backlog", type=int, default=2000, help="(2) async calls to drain")
    parser.add_argument("--work-ms", type=int, default=50)
    parser.add_argument("--max-replicas", type=int, default=4)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--serve-proxy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--function-url", help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--admin-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        import uvloop

        return uvloop.run(
            serve_proxy(function_url=args.function_url, nats_url=args.nats_url, port=args.port,
                        admin_port=args.admin_port)
        )  # fmt: skip
    print(f"load average at start: {load_average()}")
    accept_rate(args)
    if not args.skip_drain:
        drain_both(args)
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
