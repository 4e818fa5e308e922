"""Memory of the wake-up proxy: idle, with idle client keep-alive connections, with held request bodies.

The proxy under test runs in its own process, as `bench/proxy_bench.py` runs it (one process, uvloop,
`serve_forever`, an in-memory provider), with a warm function (`hello`, answered by nginx) and a
function at zero (`cold`, which becomes ready only when the benchmark lets it). RSS is read from
/proc/PID/status (VmRSS).

- **(a)** RSS idle at start, and after a short warm-up of the hello function;
- **(b)** RSS with `--idle-connections` client connections (default 10,000) open and idle, each after
  one kept-alive request; baseline in the same run: nginx as a reverse proxy (one worker) with the
  same connections (master plus worker RSS);
- **(c)** RSS with `--held` requests (default 1,000) of `--body-mib` MiB (default 1) each held for
  the function at zero; baseline: the bodies' own bytes (what the proxy cannot avoid keeping).
  Then the function is let wake and every held request must be answered 200.

The proxy's caps are set high enough for (c) and printed: `--max-held`, `--max-buffered`,
`--max-buffered-total`; `--keepalive-timeout` is longer than the benchmark takes, so (b)'s
connections stay open. The file-descriptor limit of this process and of the children is raised to
its hard limit (it must be above the connection count plus about 100).

Run: `python bench/memory_bench.py [--idle-connections 10000] [--held 1000] [--body-mib 1]`
from the project root (needs nginx).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for path in (str(ROOT), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

from proxy_bench import FUNCTION_CONF, LOAD_CPU, PROXY_CPU, nginx, pinned, wait_port  # noqa: E402

from tests.support.prometheus import free_port  # noqa: E402

MIB = 1024 * 1024

NGINX_PROXY_CONF = """
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {prefix}/proxy.pid;
error_log {prefix}/proxy-error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000;
    upstream fn {{ server 127.0.0.1:{function_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /function/hello/ {{
            proxy_pass http://fn/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def raise_nofile() -> int:
    """Soft file-descriptor limit up to the hard one (inherited by the children); returns it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and its direct children (nginx: master plus workers)."""
    total = rss_kib(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += rss_kib(int(child))
    return total


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def nginx_rss_at_start(prefix: Path, function_port: int, nofile: int, connections: int) -> int:
    """RSS (KiB, master plus worker) of nginx as proxy just started with `connections` slots."""
    port = free_port()
    conf = NGINX_PROXY_CONF.format(
        prefix=prefix, port=port, function_port=function_port, nofile=nofile, connections=connections
    )
    with nginx(prefix, "proxy-small", conf.replace("proxy.pid", "proxy-small.pid"), cpu=PROXY_CPU) as ngx:
        wait_port(port)
        time.sleep(0.5)
        return tree_rss_kib(ngx.pid)


# -- the proxy under test, in its own process -----------------------------------------------------


async def serve_proxy(args: argparse.Namespace) -> int:
    from autoscaler.config import ProxySettings
    from autoscaler.proxy import Proxy, serve_forever
    from tests.support.fakeprovider import FakeProvider

    if args.trace_python:
        tracemalloc.start(1)
    provider = FakeProvider(ready_delay=3600)  # the cold function wakes only on "release"
    await provider.add("hello", url=args.function_url)
    cold = await provider.add("cold", warm=False, url=args.function_url)
    settings = ProxySettings(
        host="127.0.0.1", port=args.port, admin_port=args.admin_port, max_held=args.max_held,
        max_body=args.max_body, max_buffered=args.max_buffered,
        max_buffered_total=args.max_buffered_total, keepalive_timeout=args.keepalive_timeout,
        hold_timeout=600,
    )  # fmt: skip
    proxy = Proxy(settings=settings, provider=provider)
    await proxy.start()
    loop = asyncio.get_running_loop()

    marks: list[object] = []

    def command(line: str) -> None:
        if line == "release":
            provider.ready_now(cold)
            return
        if line in ("mark", "top"):
            print(json.dumps(python_heap(marks, line)), flush=True)
            return
        stats = proxy.invocation_stats().get(cold.key)
        print(json.dumps({"held": 0 if stats is None else stats.held}), flush=True)

    def read_commands() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, line.strip())

    threading.Thread(target=read_commands, daemon=True).start()
    print(json.dumps({"port": proxy.port}), flush=True)
    return await serve_forever(proxy, grace=5)


def python_heap(marks: list[object], what: str) -> dict[str, object]:
    """`mark`: remember the Python heap now; `top`: what was allocated since, by line (tracemalloc)."""
    if not tracemalloc.is_tracing():
        return {"tracing": False}
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if what == "mark":
        marks[:] = [snapshot]
        return {"tracing": True}
    diff = snapshot.compare_to(marks[0], "lineno")  # type: ignore[arg-type]
    grown = sum(stat.size_diff for stat in diff)
    top = [
        [stat.size_diff, stat.count_diff, f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}"]
        for stat in diff[:12]
    ]
    return {"tracing": True, "grown": grown, "top": top}


class ProxyChild:
    def __init__(self, function_url: str, caps: dict[str, float]) -> None:
        port, admin = free_port(), free_port()
        argv = [sys.executable, __file__, "--serve-proxy", "--function-url", function_url,
                "--port", str(port), "--admin-port", str(admin)]  # fmt: skip
        for name, value in caps.items():
            if value is True:
                argv.append(f"--{name.replace('_', '-')}")
            elif value is not False:
                argv += [f"--{name.replace('_', '-')}", str(value)]
        self.process = subprocess.Popen(
            pinned(PROXY_CPU, argv), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.port = int(json.loads(self._line())["port"])

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def heap(self, what: str) -> dict[str, object]:
        self.send(what)
        return json.loads(self._line())

    def held(self) -> int:
        self.send("stats")
        return int(json.loads(self._line())["held"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# -- clients --------------------------------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":", 1)[1]))
    return head


async def open_idle(port: int, count: int, *, batch: int = 200) -> list[asyncio.StreamWriter]:
    """`count` connections, each after one kept-alive GET answered 200, left open and idle."""
    request = b"GET /function/hello/ HTTP/1.1\r\nHost: bench\r\n\r\n"
    writers: list[asyncio.StreamWriter] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await read_response(reader)
        if not head.startswith(b"HTTP/1.1 200"):
            failed += 1
        writers.append(writer)

    for start in range(0, count, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, count - start))))
    if failed:
        print(f"  warning: {failed} of the idle connections' requests were not answered 200")
    return writers


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    await asyncio.sleep(0.5)


async def idle_phase(
    pid_rss: Callable[[], int], port: int, count: int, *, child: ProxyChild | None = None
) -> tuple[int, int]:
    """RSS (KiB) before and with `count` idle connections open (after they settle).

    With `child` traced (`--trace-python`), also prints where its Python heap grew meanwhile.
    """
    traced = child is not None and child.heap("mark").get("tracing")
    before = pid_rss()
    writers = await open_idle(port, count)
    await asyncio.sleep(2.0)
    with_connections = pid_rss()
    if traced:
        assert child is not None
        report = child.heap("top")
        grown = int(report["grown"])  # type: ignore[call-overload]
        print(f"    python heap of our proxy grew {grown / 1024:.0f} KiB, "
              f"{grown / 1024 / count:.2f} KiB per connection (tracemalloc); top lines:")  # fmt: skip
        for size, number, where in report["top"]:  # type: ignore[attr-defined]
            print(f"    {size / 1024 / count:7.3f} KiB/conn {number / count:6.2f} blocks/conn  {where}")
    await close_all(writers)
    return before, with_connections


async def held_phase(child: ProxyChild, count: int, body_mib: int) -> tuple[int, int, int, float]:
    """(RSS before, RSS with every request held and its body read, answered 200, release -> last ms)."""
    body = b"x" * (body_mib * MIB)
    head = b"POST /function/cold/ HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % len(body)
    traced = child.heap("mark").get("tracing")
    before = rss_kib(child.process.pid)
    connections = []
    for start in range(0, count, 200):
        connections += await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", child.port) for _ in range(min(200, count - start)))
        )
    for _reader, writer in connections:
        writer.write(head)
        writer.write(body)
    await asyncio.gather(*(writer.drain() for _reader, writer in connections))
    deadline = time.monotonic() + 120
    while child.held() < count and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a child
        await asyncio.sleep(0.2)
    # the bodies are read once the hold has taken them; wait until RSS stops growing
    last, stable_since = rss_kib(child.process.pid), time.monotonic()
    while time.monotonic() - stable_since < 1.5 and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = rss_kib(child.process.pid)
        if abs(now - last) > 1024:
            last, stable_since = now, time.monotonic()
    held_rss = rss_kib(child.process.pid)
    if traced:
        report = child.heap("top")
        grown = int(report["grown"])  # type: ignore[call-overload]
        print(f"    python heap of our proxy grew {grown / MIB:.1f} MiB, "
              f"{grown / 1024 / count:.1f} KiB per held request (tracemalloc); top lines:")  # fmt: skip
        for size, number, where in report["top"]:  # type: ignore[attr-defined]
            print(f"    {size / 1024 / count:9.2f} KiB/req {number / count:6.2f} blocks/req  {where}")
    if child.held() < count:
        print(f"  warning: only {child.held()} of {count} requests were held")
    released = time.monotonic()
    child.send("release")
    child.held()  # the answer comes after the release was handled
    heads = await asyncio.gather(*(read_response(reader) for reader, _writer in connections))
    last_ms = (time.monotonic() - released) * 1000
    for _reader, writer in connections:
        writer.close()
    return before, held_rss, sum(h.startswith(b"HTTP/1.1 200") for h in heads), last_ms


# -- main -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--body-mib", type=int, default=1)
    parser.add_argument(
        "--trace-python", action="store_true",
        help="tracemalloc in the proxy: where its Python heap grows in (b) (slows it; RSS figures rise)",
    )  # fmt: skip
    parser.add_argument("--serve-proxy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--function-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--admin-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-held", type=int, default=1000)
    parser.add_argument("--max-body", type=int, default=10 * MIB)
    parser.add_argument("--max-buffered", type=int, default=128 * MIB)
    parser.add_argument("--max-buffered-total", type=int, default=256 * MIB)
    parser.add_argument("--keepalive-timeout", type=float, default=75.0)
    args = parser.parse_args()

    if args.serve_proxy:
        import uvloop

        raise_nofile()
        return uvloop.run(serve_proxy(args))

    nofile = raise_nofile()
    if nofile < args.idle_connections + 200:
        print(f"the hard file-descriptor limit ({nofile}) is too low for {args.idle_connections} connections")
        return 2
    body_bytes = args.body_mib * MIB
    caps = {
        "max_held": max(args.held, 1000) + 100,
        "max_body": max(body_bytes, 10 * MIB),
        "max_buffered": args.held * body_bytes + 64 * MIB,
        "max_buffered_total": args.held * body_bytes + 64 * MIB,
        "keepalive_timeout": 600.0,
    }
    print(f"load average at start: {load()}")
    print("proxy caps: " + ", ".join(f"--{k.replace('_', '-')} {v:.0f}" for k, v in caps.items()))
    caps["trace_python"] = args.trace_python

    import uvloop

    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        prefix = Path(tmp)
        (prefix / "logs").mkdir()
        fn_port, ngx_port = free_port(), free_port()
        fn_conf = FUNCTION_CONF.format(prefix=prefix, port=fn_port, body="hello\\n")
        px_conf = NGINX_PROXY_CONF.format(
            prefix=prefix, port=ngx_port, function_port=fn_port, nofile=nofile,
            connections=args.idle_connections + 1000,
        )  # fmt: skip
        # nginx allocates its connection array for all worker_connections at start; measured to count it in
        slots = args.idle_connections + 1000
        small_rss = nginx_rss_at_start(prefix, fn_port, nofile, 1024)  # its connection array, smaller
        with (
            nginx(prefix, "function", fn_conf, cpu=LOAD_CPU),
            nginx(prefix, "proxy", px_conf, cpu=PROXY_CPU) as ngx,
        ):
            wait_port(fn_port)
            wait_port(ngx_port)
            child = ProxyChild(f"http://127.0.0.1:{fn_port}", caps)
            pid = child.process.pid
            try:
                start_rss = rss_kib(pid)
                warm = uvloop.run(open_idle(child.port, 100))
                uvloop.run(close_all(warm))
                warm_rss = rss_kib(pid)
                ngx_before, ngx_with = uvloop.run(
                    idle_phase(lambda: tree_rss_kib(ngx.pid), ngx_port, args.idle_connections)
                )
                ours_before, ours_with = uvloop.run(
                    idle_phase(lambda: rss_kib(pid), child.port, args.idle_connections, child=child)
                )
                print(f"load average after (b): {load()}")
            finally:
                child.stop()
            # (c) in a fresh proxy process, so that memory freed by (b) is not reused by the bodies
            child = ProxyChild(f"http://127.0.0.1:{fn_port}", caps)
            try:
                uvloop.run(close_all(uvloop.run(open_idle(child.port, 100))))
                held_before, held_with, ok, last_ms = uvloop.run(held_phase(child, args.held, args.body_mib))
                after_release = rss_kib(child.process.pid)
            finally:
                child.stop()
    n, h = args.idle_connections, args.held
    ours_per = (ours_with - ours_before) / n
    ngx_per = (ngx_with - ngx_before) / n
    held_per = (held_with - held_before) / h
    body_kib = body_bytes / 1024
    print("\n(a) our proxy idle:")
    print(f"    at start {start_rss / 1024:.1f} MiB; after 100 warm-up requests {warm_rss / 1024:.1f} MiB")
    print(f"(b) {n} idle keep-alive client connections (one request each, then idle):")
    print(f"    our proxy      {ours_before / 1024:7.1f} -> {ours_with / 1024:7.1f} MiB   "
          f"{ours_per:6.2f} KiB per connection")  # fmt: skip
    print(f"    nginx as proxy {ngx_before / 1024:7.1f} -> {ngx_with / 1024:7.1f} MiB   "
          f"{ngx_per:6.2f} KiB per connection")  # fmt: skip
    ratio = ours_per / ngx_per if ngx_per > 0 else float("nan")
    print(f"    ratio per connection ours/nginx = {ratio:.1f}x")
    slot = (ngx_before - small_rss) / (slots - 1024)
    print(f"    nginx's connection array, allocated at start: {small_rss / 1024:.1f} MiB with 1024 "
          f"worker_connections, {ngx_before / 1024:.1f} with {slots}: {slot:.2f} KiB a slot")  # fmt: skip
    print(f"    counting it in: nginx {ngx_per + slot:.2f} KiB per connection, "
          f"ratio ours/nginx = {ours_per / (ngx_per + slot):.1f}x")  # fmt: skip
    print(f"(c) {h} held requests of {args.body_mib} MiB bodies for a function at zero:")
    print(f"    our proxy      {held_before / 1024:7.1f} -> {held_with / 1024:7.1f} MiB   "
          f"{held_per:8.1f} KiB per held request")  # fmt: skip
    print(f"    baseline: the body itself, {body_kib:.0f} KiB; ratio per held request = "
          f"{held_per / body_kib:.3f}x (overhead {held_per - body_kib:+.1f} KiB per request)")  # fmt: skip
    print(f"    released: answered 200 {ok}/{h}, release -> last answer {last_ms:.0f} ms; "
          f"RSS after {after_release / 1024:.1f} MiB")  # fmt: skip
    print(f"load average at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
