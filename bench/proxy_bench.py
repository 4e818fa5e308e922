"""Benchmark of the wake-up proxy against nginx, measured in one run on loopback.

Warm path, with `wrk` against one small static response served by nginx (one worker) as the function:
  (a) direct to nginx, (b) through nginx as a reverse proxy (one worker, upstream keep-alive),
  (c) through our proxy (one process, uvloop, an in-memory provider pointing at nginx).
Throughput uses `-c CONNECTIONS`; latency uses `-c 1 -t 1` (wrk2's fixed-rate mode is not packaged in
Debian, so "added latency" is p50 of (c) minus p50 of (a) at concurrency 1, which runs well above
1,000 req/s). Cold path: N concurrent requests to a function that becomes ready 2 s after its
wake-up; every request must be answered 200, and the time from readiness to the last answer is printed,
next to the same burst sent to the function once warm (the baseline). CPU per request of (b) and (c)
comes from /proc/PID/stat over their wrk runs; `--profile SECONDS` samples (c) with py-spy under load.

Run: `python bench/proxy_bench.py` (from the project root; needs `nginx` and `wrk` on PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.prometheus import free_port  # noqa: E402 - after the path the tests live on

BODY = "hello from the function\n"
CPUS = os.cpu_count() or 1
# The proxy under test, nginx-as-proxy or ours, gets one CPU; wrk and the function nginx share the other.
PROXY_CPU, LOAD_CPU = ("1", "0") if CPUS > 1 else ("0", "0")

FUNCTION_CONF = """
worker_processes 1;
daemon off;
pid {prefix}/function.pid;
error_log {prefix}/function-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "{body}"; }}
    }}
}}
"""

PROXY_CONF = """
worker_processes 1;
daemon off;
pid {prefix}/proxy.pid;
error_log {prefix}/proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream fn {{ server 127.0.0.1:{function_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /function/hello/ {{
            proxy_pass http://fn/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"""


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def pinned(cpu: str, argv: list[str]) -> list[str]:
    """Run `argv` on the given CPU list when taskset exists (the machine has other load)."""
    return ["taskset", "-c", cpu, *argv] if shutil.which("taskset") and CPUS > 1 else argv


@contextlib.contextmanager
def nginx(prefix: Path, name: str, conf: str, *, cpu: str) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground; the process yielded is its master (taskset execs it)."""
    path = prefix / f"{name}.conf"
    user = "user root;\n" if _is_root() else ""
    path.write_text(user + conf)
    process = subprocess.Popen(
        pinned(cpu, ["nginx", "-p", str(prefix), "-c", str(path)]), stderr=subprocess.PIPE
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def _is_root() -> bool:
    return os.geteuid() == 0


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int = 0
    cpu_us: dict[str, float] | None = None  # CPU seconds * 1e6 of each watched process over the run


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) and of its direct children, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    total = 0
    for one in pids:
        # fields after the command name in parentheses: utime and stime are the 14th and 15th overall
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def wrk(
    url: str, *, connections: int, seconds: int, threads: int = 1, watch: dict[str, int] | None = None
) -> WrkResult:
    """One wrk run; `watch` names processes whose CPU time over the run is returned, per request."""
    before = {name: cpu_seconds(pid) for name, pid in (watch or {}).items()}
    out = subprocess.run(
        pinned(LOAD_CPU, ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                          "--latency", url]),
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in (watch or {}).items()}
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"  warning: wrk reported errors for {url}:\n{out}")
    per_request = {name: seconds * 1e6 / requests for name, seconds in cpu.items()}
    return WrkResult(rps=rps, p50_ms=p50, p99_ms=p99, requests=requests, cpu_us=per_request)


# -- the proxy under test, in its own process -----------------------------------------------------


async def serve_proxy(*, function_url: str, port: int, admin_port: int, ready_delay: float) -> int:
    import uvloop  # noqa: F401  (the caller runs this under uvloop)

    from autoscaler.config import ProxySettings
    from autoscaler.proxy import Proxy, serve_forever
    from tests.support.fakeprovider import FakeProvider

    provider = FakeProvider(ready_delay=ready_delay)
    await provider.add("hello", url=function_url)
    cold = await provider.add("cold", warm=False, url=function_url)

    def on_change(ref: object) -> None:
        info = provider.get(cold)
        if ref == cold and info is not None and info.ready_replicas > 0:
            print(json.dumps({"ready_at": time.monotonic(), "cpu": time.process_time()}), flush=True)

    provider.subscribe(on_change)
    settings = ProxySettings(host="127.0.0.1", port=port, admin_port=admin_port)
    proxy = Proxy(settings=settings, provider=provider)
    await proxy.start()
    print(json.dumps({"port": proxy.port}), flush=True)
    return await serve_forever(proxy, grace=5)


def start_proxy_process(function_url: str, *, ready_delay: float) -> tuple[subprocess.Popen[str], int]:
    port, admin = free_port(), free_port()
    process = subprocess.Popen(
        pinned(PROXY_CPU, [sys.executable, __file__, "--serve-proxy", "--function-url", function_url,
                           "--port", str(port), "--admin-port", str(admin),
                           "--ready-delay", str(ready_delay)]),
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, int(json.loads(line)["port"])


# -- cold path ----------------------------------------------------------------------------------------


async def cold_burst(port: int, count: int, function: str = "cold") -> tuple[int, list[float], float]:
    """`count` concurrent requests on their own connections, each timed when its response is complete.

    A lean client on raw streams, so that what is timed is the proxy, not a client's HTTP stack.
    """
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
    done: list[float] = []
    first_sent = time.monotonic()

    async def one(index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        body = f"request-{index}".encode()
        writer.write(
            b"POST /function/%s/ HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n%s"
            % (function.encode(), len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        done.append(time.monotonic())
        writer.close()
        return head.startswith(b"HTTP/1.1 200")

    results = await asyncio.gather(
        *(one(i, r, w) for i, (r, w) in enumerate(connections)), return_exceptions=True
    )
    return sum(1 for result in results if result is True), done, first_sent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections for throughput")
    parser.add_argument("--cold-requests", type=int, default=1000)
    parser.add_argument("--cold-only", action="store_true", help="skip the warm path (wrk runs)")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="SECONDS",
        default=0,
        help="after the rest, sample our proxy with py-spy for SECONDS under wrk load",
    )
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument(
        "--profile-out",
        default="/tmp/proxy-profile.txt",
        help="where py-spy's raw (collapsed) stacks are written",
    )
    parser.add_argument("--serve-proxy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--function-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--admin-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-delay", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_proxy:
        import uvloop

        return uvloop.run(
            serve_proxy(
                function_url=args.function_url, port=args.port, admin_port=args.admin_port,
                ready_delay=args.ready_delay,
            )
        )  # fmt: skip

    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian package `{tool}`); it is needed for this benchmark")
            return 2

    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        prefix = Path(tmp)
        (prefix / "logs").mkdir()
        fn_port, ngx_proxy_port = free_port(), free_port()
        fn_conf = FUNCTION_CONF.format(prefix=prefix, port=fn_port, body=BODY.replace("\n", "\\n"))
        px_conf = PROXY_CONF.format(prefix=prefix, port=ngx_proxy_port, function_port=fn_port)
        with (
            nginx(prefix, "function", fn_conf, cpu=LOAD_CPU) as fn_nginx,
            nginx(prefix, "proxy", px_conf, cpu=PROXY_CPU) as px_nginx,
        ):
            wait_port(fn_port)
            wait_port(ngx_proxy_port)
            function_url = f"http://127.0.0.1:{fn_port}"
            proxy, port = start_proxy_process(function_url, ready_delay=2.0)
            print(f"load average at start: {load_average()}")
            try:
                if args.cold_only:
                    cold(proxy, port, args.cold_requests)
                    if args.profile:
                        profile(proxy.pid, f"http://127.0.0.1:{port}/function/hello/", args)
                    print(f"load average at the end: {load_average()}")
                    return 0
                targets = {
                    "(a) direct to nginx": f"{function_url}/",
                    "(b) nginx as proxy": f"http://127.0.0.1:{ngx_proxy_port}/function/hello/",
                    "(c) our proxy": f"http://127.0.0.1:{port}/function/hello/",
                }
                for url in targets.values():  # warm up connections and caches
                    wrk(url, connections=args.connections, seconds=1)
                watch = {
                    "(a) direct to nginx": {"function": fn_nginx.pid},
                    "(b) nginx as proxy": {"function": fn_nginx.pid, "proxy": px_nginx.pid},
                    "(c) our proxy": {"function": fn_nginx.pid, "proxy": proxy.pid},
                }
                through = {name: wrk(url, connections=args.connections, seconds=args.seconds,
                                     watch=watch[name])
                           for name, url in targets.items()}  # fmt: skip
                single = {name: wrk(url, connections=1, seconds=max(3, args.seconds // 2))
                          for name, url in targets.items()}  # fmt: skip
                report(through, single, connections=args.connections)
                cold(proxy, port, args.cold_requests)
                if args.profile:
                    profile(proxy.pid, targets["(c) our proxy"], args)
                print(f"load average at the end: {load_average()}")
            finally:
                proxy.terminate()
                proxy.wait(timeout=15)
    return 0


def report(through: dict[str, WrkResult], single: dict[str, WrkResult], *, connections: int) -> None:
    print(f"\nwarm path, wrk -t1 -c{connections} (throughput) and -t1 -c1 (latency):")
    print(f"{'':24}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}   {'c=1 req/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, result in through.items():
        one = single[name]
        print(
            f"{name:24}{result.rps:>10.0f}{result.p50_ms:>9.3f}{result.p99_ms:>9.3f}"
            f"   {one.rps:>10.0f}{one.p50_ms:>9.3f}{one.p99_ms:>9.3f}"
        )
    a, b, c = (through[k] for k in ("(a) direct to nginx", "(b) nginx as proxy", "(c) our proxy"))
    print(f"ratio throughput (c)/(a) = {c.rps / a.rps:.3f}")
    print(f"ratio throughput (c)/(b) = {c.rps / b.rps:.3f}   (goal >= 0.25)")
    added = single["(c) our proxy"].p50_ms - single["(a) direct to nginx"].p50_ms
    print(f"p50 added latency at c=1: {added:.3f} ms (goal < 0.2 ms, issue 12)")
    assert a.cpu_us is not None
    assert b.cpu_us is not None
    assert c.cpu_us is not None
    print(f"\nwarm path CPU per request (utime+stime from /proc over the -c{connections} runs):")
    print(f"    (a) function nginx alone   {a.cpu_us['function']:6.1f} us/request ({a.requests} requests)")
    print(f"    (b) nginx as proxy         {b.cpu_us['proxy']:6.1f} us/request ({b.requests} requests;"
          f" function {b.cpu_us['function']:.1f})")  # fmt: skip
    print(f"    (c) our proxy              {c.cpu_us['proxy']:6.1f} us/request ({c.requests} requests;"
          f" function {c.cpu_us['function']:.1f})")  # fmt: skip
    print(f"    ratio CPU per request (c)/(b) = {c.cpu_us['proxy'] / b.cpu_us['proxy']:.2f}x"
          f"   (goal: (c) at most 30 us)")  # fmt: skip


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cold(proxy: subprocess.Popen[str], port: int, count: int) -> None:
    import uvloop

    if CPUS > 1:  # the client shares the load CPU with the function, as wrk does
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    cpu = Burst(proxy.pid)
    ok, done, started = uvloop.run(cold_burst(port, count))
    cold_cpu = cpu.done(count)
    assert proxy.stdout is not None
    ready = json.loads(proxy.stdout.readline())
    ready_at = ready["ready_at"]
    last = max(done) if done else float("nan")
    print(f"\ncold path: {count} concurrent requests, function ready 2 s after its wake-up:")
    print(f"answered 200: {ok}/{count}   lost: {count - ok}")
    print(f"readiness after the first request was sent: {ready_at - started:.3f} s")
    cold_ms = (last - ready_at) * 1000
    print(f"readiness -> last held request answered: {cold_ms:.1f} ms (goal < 100 ms)")
    # The proxy's own CPU clock at readiness (it says so with the time), against /proc at the end.
    print(f"proxy CPU from readiness to the last answer: {(cpu.proxy_end - ready['cpu']) * 1000:.0f} ms, "
          f"{(cpu.proxy_end - ready['cpu']) * 1e6 / count:.0f} us per released request")  # fmt: skip
    # Baseline: the same burst to the same function, now warm (its pool holds the burst's connections):
    # the time from the first request sent to the last answer, with nothing held.
    cpu = Burst(proxy.pid)
    ok, done, started = uvloop.run(cold_burst(port, count))
    warm_cpu = cpu.done(count)
    warm_ms = (max(done) - started) * 1000 if done else float("nan")
    print(f"baseline, the same {count} requests to the function warm: first sent -> last answered "
          f"{warm_ms:.1f} ms (answered 200: {ok}/{count})")  # fmt: skip
    print(f"ratio cold (from readiness) / warm = {cold_ms / warm_ms:.2f}x")
    print("CPU per request over each burst (own connection each: connect, request, close), in us:")
    print(f"    cold: proxy {cold_cpu[0]:6.1f}   this client {cold_cpu[1]:6.1f}")
    print(f"    warm: proxy {warm_cpu[0]:6.1f}   this client {warm_cpu[1]:6.1f}")


class Burst:
    """CPU time of the proxy process and of this client from now until `done`."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._proxy = cpu_seconds(pid)
        self._client = time.process_time()
        self.proxy_end = 0.0  # the proxy's CPU seconds when the burst was all answered

    def done(self, count: int) -> tuple[float, float]:
        """(proxy, client) CPU microseconds per request of the `count` just answered."""
        self.proxy_end = cpu_seconds(self._pid)
        client = time.process_time() - self._client
        return (self.proxy_end - self._proxy) * 1e6 / count, client * 1e6 / count


# -- profile --------------------------------------------------------------------------------------


def profile(pid: int, url: str, args: argparse.Namespace) -> None:
    """Sample our proxy with py-spy while wrk loads it; print the frames with the most own time."""
    if shutil.which("py-spy") is None:
        print("py-spy is not installed (pip install py-spy); no profile")
        return
    load = subprocess.Popen(
        pinned(LOAD_CPU, ["wrk", "-t1", "-c", str(args.connections), "-d", f"{args.profile + 3}s", url]),
        stdout=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    spy = ["py-spy", "record", "--format", "raw", "--function", "-r", "200", "-d", str(args.profile),
           "-o", args.profile_out, "--pid", str(pid)]  # fmt: skip
    if args.profile_native:
        spy.append("--native")
    subprocess.run(spy, check=True, capture_output=True)
    load.wait()
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in Path(args.profile_out).read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    native = " --native" if args.profile_native else ""
    print(f"\nprofile of our proxy under wrk -c{args.connections}, {total} samples "
          f"(py-spy{native}; raw stacks in {args.profile_out}):")  # fmt: skip
    print("  top 15 frames by own time:")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {100 * count / total:5.1f} %  {frame}")
    areas = {"aiohttp server": ("aiohttp/web_", "aiohttp/http_", "aiohttp/base_protocol",
                                "aiohttp/streams", "aiohttp/helpers", "multidict", "yarl"),
             "our proxy": ("autoscaler/proxy/_",)}  # fmt: skip
    print("  own time by where the leaf frame is:")
    by_area: dict[str, int] = {}
    for frame, count in own.items():
        area = next((name for name, marks in areas.items() if any(m in frame for m in marks)), "other")
        if area == "our proxy" and ("_client.py" in frame or "_pool.py" in frame):
            area = "our upstream client (_client, _pool)"
        by_area[area] = by_area.get(area, 0) + count
    for area, count in sorted(by_area.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * count / total:5.1f} %  {area}")
    if args.profile_native:
        print_native(Path(args.profile_out), total)


def print_native(raw: Path, total: int) -> None:
    """With C frames: system calls by the Python frame that made them, and own time so folded."""
    calls: dict[tuple[str, str], int] = {}
    folded: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        python = [frame for frame in frames if ".py:" in frame]
        caller = python[-1] if python else frames[-1]
        folded[caller] = folded.get(caller, 0) + int(count_text)
        if "(libc.so" in frames[-1]:
            key = (frames[-1].split(" ")[0], caller)
            calls[key] = calls.get(key, 0) + int(count_text)
    print("  libc calls (system calls) by the Python frame that made them, top 10:")
    for (call, caller), count in sorted(calls.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  {100 * count / total:5.1f} %  {call} from {caller}")
    print("  top 15 by own time, C frames folded into their Python caller:")
    for frame, count in sorted(folded.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {100 * count / total:5.1f} %  {frame}")


if __name__ == "__main__":
    sys.exit(main())
