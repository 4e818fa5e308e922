"""The proxy at 50,000 functions in 500 namespaces: time to its first routed request, and its RSS.

Why it exists (issue 15): a proxy replica that restarts, or a new one added under load, serves
nothing until its watches have listed every followed namespace, and at 50,000 functions what it
keeps per function decides whether it fits in a pod's memory. This starts the fake wire-format API
server (`tests/support/apiserver.py`) in a process of its own, loaded with faas-netes-shaped
Deployments (`add_faas_netes_function`) and one EndpointSlice per function whose ready address is a
real HTTP function server on loopback (`tests/support/upstream.py`, in this process). Then the
real `autoscaler proxy` runs as a subprocess (kubeconfig pointing at the fake server, default
settings otherwise) following the first namespaces (the baseline, 10,000 functions) and then all of
them, and for each it prints:
  * the seconds from spawning the process to its "proxy listening" line (its watches have listed
    every namespace: the provider's `start()` returns only then) and to the first request answered
    200 by the function through it (`/function/NAME.NAMESPACE/`, the last function listed);
  * its RSS then (`VmRSS`, the watches synced and open) and its peak (`VmHWM`);
  * the list requests the fake server answered (one per watch, two per namespace, when none failed).

    python bench/proxy_scale_bench.py [--functions 50000] [--namespaces 500] [--baseline 10000]
                                      [--api-timeout SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from tests.support.apiserver import FakeApiServer
from tests.support.cluster_processes import ServiceProcess
from tests.support.upstream import Upstream

# A fifth of the functions may go to zero, the rest carry a few scaling labels: faas-netes puts them
# on the pod template, where the provider reads them.
LABELS: tuple[dict[str, str], ...] = (
    {"com.openfaas.scale.zero": "true", "com.openfaas.scale.zero-duration": "5m"},
    {"com.openfaas.scale.max": "10", "com.openfaas.scale.target": "20"},
    {"com.openfaas.scale.max": "20", "com.openfaas.scale.type": "capacity"},
    {"com.openfaas.scale.min": "2", "com.openfaas.scale.max": "8"},
    {},
)


def namespace_name(i: int) -> str:
    return f"ns-{i:03d}"


def function_name(i: int) -> str:
    return f"fn-{i:05d}"


def serve_cluster(
    functions: int,
    namespaces: int,
    function_port: int,
    workdir: str,
    conn: multiprocessing.connection.Connection,
) -> None:
    """Child process: the fake API server with every function and its EndpointSlice, until told to stop."""

    # A proxy that exits resets its watch connections: not worth a traceback each.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)

    async def serve() -> None:
        async with FakeApiServer() as api:
            started = time.perf_counter()
            for i in range(functions):
                name, namespace = function_name(i), namespace_name(i % namespaces)
                api.add_faas_netes_function(name, namespace=namespace, labels=LABELS[i % len(LABELS)])
                api.set_endpoints(
                    name, namespace=namespace, port=function_port, endpoints=[("127.0.0.1", True)]
                )
                if i % 2000 == 1999:
                    await asyncio.sleep(0)
            kubeconfig = api.write_kubeconfig(Path(workdir) / "kubeconfig")
            conn.send((str(kubeconfig), time.perf_counter() - started))
            loop = asyncio.get_running_loop()
            while await loop.run_in_executor(None, conn.recv) != "stop":
                lists = api.count("GET", r"/(deployments|endpointslices)$", watch=False)
                conn.send((lists, time.process_time()))

    asyncio.run(serve())


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def first_answer(url: str, *, timeout: float) -> float:
    """Poll `url` until it answers 200; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            try:
                async with session.get(url) as response:
                    await response.read()
                    if response.status == 200:
                        return time.monotonic()
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")
            await asyncio.sleep(0.02)


async def measure(
    *, kubeconfig: str, namespaces: list[str], probe: str, log: Path, extra: list[str]
) -> dict[str, float]:
    """One `autoscaler proxy` process following `namespaces`: its start-up and its memory."""
    started = time.monotonic()
    proxy = await ServiceProcess.spawn(
        "proxy",
        args=[
            "proxy", "--kubeconfig", kubeconfig, "--namespaces", ",".join(namespaces),
            "--host", "127.0.0.1", "--port", "0", "--admin-port", "0", *extra,
        ],
        log=log,
    )  # fmt: skip
    try:
        found = await proxy.wait_for(r"proxy listening on 127\.0\.0\.1:(\d+)", timeout=900)
        listening = time.monotonic()
        answered = await first_answer(f"http://127.0.0.1:{found.group(1)}/function/{probe}/", timeout=60)
        pid = proxy.process.pid
        figures = {
            "listening": listening - started,
            "first": answered - started,
            "cpu": cpu_seconds(pid),
            "rss": proc_kib(pid, "VmRSS") / 1024,
            "hwm": proc_kib(pid, "VmHWM") / 1024,
        }
        await asyncio.sleep(2.0)
        figures["rss_later"] = proc_kib(pid, "VmRSS") / 1024
        return figures
    finally:
        await proxy.stop(timeout=30)


async def run(functions: int, namespaces: int, baseline: int, extra: list[str]) -> None:
    if functions % namespaces or baseline % (functions // namespaces):
        raise SystemExit(
            "--functions must be a multiple of --namespaces, --baseline of functions per namespace"
        )
    per_namespace = functions // namespaces
    upstream = Upstream(name="function")
    await upstream.start()
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    with tempfile.TemporaryDirectory() as workdir:
        server = context.Process(
            target=serve_cluster, args=(functions, namespaces, upstream.port, workdir, child), daemon=True
        )
        server.start()
        try:
            kubeconfig, fill = await asyncio.to_thread(parent.recv)
            print(f"fake API server: {functions} Deployments + {functions} EndpointSlices in {fill:.1f} s")
            parent.send("count")
            lists_before, server_cpu = await asyncio.to_thread(parent.recv)
            for size in (baseline, functions):
                followed = size // per_namespace
                last = max(i for i in range(functions) if i % namespaces < followed)
                probe = f"{function_name(last)}.{namespace_name(last % namespaces)}"
                figures = await measure(
                    kubeconfig=kubeconfig,
                    namespaces=[namespace_name(i) for i in range(followed)],
                    probe=probe,
                    log=Path(workdir) / f"proxy-{size}.log",
                    extra=extra,
                )
                parent.send("count")
                lists, cpu = await asyncio.to_thread(parent.recv)
                figures["server_cpu"] = cpu - server_cpu
                report(size, followed, figures, lists - lists_before)
                lists_before, server_cpu = lists, cpu
        finally:
            parent.send("stop")
            server.join(timeout=30)
            if server.is_alive():
                server.kill()
            await upstream.stop()
    print(f"function server answered {len(upstream.received)} requests")


def report(size: int, followed: int, figures: dict[str, float], lists: int) -> None:
    print(f"proxy following {size} functions in {followed} namespaces:")
    print(
        f"  listening {figures['listening']:.2f} s after spawn, first request routed (200) at "
        f"{figures['first']:.2f} s; {lists} list requests (expected {2 * followed})"
    )
    print(
        f"  CPU until then: proxy {figures['cpu']:.1f} s; fake API server {figures['server_cpu']:.1f} s "
        "(from the proxy's spawn to its exit)"
    )
    print(
        f"  RSS {figures['rss']:.1f} MiB at the first routed request, {figures['rss_later']:.1f} MiB "
        f"2 s later, peak {figures['hwm']:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, default=50000)
    parser.add_argument("--namespaces", type=int, default=500)
    parser.add_argument("--baseline", type=int, default=10000)
    parser.add_argument(
        "--api-timeout", type=float, default=None, help="the proxy's --api-timeout (default: its own, 5 s)"
    )
    args = parser.parse_args()
    extra = [] if args.api_timeout is None else ["--api-timeout", f"{args.api_timeout:g}"]
    if extra:
        print(f"proxy flags: {' '.join(extra)}")
    asyncio.run(run(args.functions, args.namespaces, args.baseline, extra))


if __name__ == "__main__":
    main()
