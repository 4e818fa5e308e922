"""A naive function server in its own process: Python's `http.server.ThreadingHTTPServer`, as users write one.

The proxy has to serve functions that nobody tuned: this is the one most Python users start from, with
the standard library's listen backlog of 5 (`request_queue_size`), HTTP/1.0 answers that close the
connection (or HTTP/1.1 keep-alive with `--keep-alive`), and a thread per connection. It runs as a
separate process, as a replica does, so its accept loop and threads never share the tests' GIL.

Routes: any POST or GET echoes `METHOD PATH LENGTH SHA256` of the body it read (Content-Length
framing only, like most naive handlers); `/crash` closes the listener and ends the process at once,
before answering (a request that kills its replica); with `--max-inflight N` a request above N at
once gets 429, as OpenFaaS's watchdog answers above its `max_inflight`; `/busy` always answers 429
with `Retry-After: 120`. `--backlog` changes the
listen backlog (the benchmark's baseline). `--delay` makes each answer take that many seconds.

`NaiveServer` starts one and stops it; `serve()` is the process's entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class NaiveServer:
    """One naive replica as a child process on a free 127.0.0.1 port."""

    def __init__(
        self,
        *,
        backlog: int = 5,
        keep_alive: bool = False,
        max_inflight: int = 0,
        delay: float = 0.0,
        port: int = 0,
    ) -> None:
        self._args = [f"--backlog={backlog}", f"--max-inflight={max_inflight}", f"--delay={delay}"]
        self._args.append(f"--port={port}")
        if keep_alive:
            self._args.append("--keep-alive")
        self._process: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def exited(self) -> bool:
        return self._process is not None and self._process.returncode is not None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.naive", *self._args, stdout=asyncio.subprocess.PIPE
        )
        assert self._process.stdout is not None
        async with asyncio.timeout(10):
            line = await self._process.stdout.readline()
        self.port = int(line)

    async def wait_exit(self, timeout: float) -> bool:
        """Whether the process ended within `timeout` seconds."""
        assert self._process is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._process.wait()
        return self.exited

    async def stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.kill()
        await process.wait()


def serve() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=5)
    parser.add_argument("--keep-alive", action="store_true")
    parser.add_argument("--max-inflight", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    lock = threading.Lock()
    inflight = 0

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if args.keep_alive else "HTTP/1.0"

        def log_message(self, format: str, *values: object) -> None:
            return None

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            nonlocal inflight
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/crash":
                server.socket.close()  # the listener first: the replica is gone, not restarting
                os._exit(3)
            with lock:
                inflight += 1
                over = args.max_inflight > 0 and inflight > args.max_inflight
            try:
                if over or self.path == "/busy":
                    self._write(429, b"Concurrent request limit exceeded\n", self.path == "/busy")
                    return
                if args.delay > 0:
                    time.sleep(args.delay)
                digest = hashlib.sha256(body).hexdigest()
                self._write(200, f"{self.command} {self.path} {len(body)} {digest}".encode())
            finally:
                with lock:
                    inflight -= 1

        def _write(self, status: int, payload: bytes, later: bool = False) -> None:
            self.send_response(status)
            if later:
                self.send_header("Retry-After", "120")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    class Server(ThreadingHTTPServer):
        request_queue_size = args.backlog
        daemon_threads = True

    server = Server(("127.0.0.1", args.port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve()
