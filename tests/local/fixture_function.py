"""A function for the local provider's tests: stdlib only, so it starts in a blink.

Routes: `/` answers 200, `/slow?s=N` answers after N seconds, `/crash` exits the process with code 3,
`/pid` answers the process id, `/missing` answers 404. Its readiness path READY_PATH (default `/`)
answers 503 until READY_AFTER seconds have passed since start and the file READY_FILE (if set)
exists, then READY_STATUS (default 200) with READY_LOCATION (if set) as its Location header.
On SIGTERM it stops accepting connections and finishes the requests in flight, then exits 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STARTED = time.monotonic()
READY_AFTER = float(os.environ.get("READY_AFTER", "0"))
READY_PATH = os.environ.get("READY_PATH", "/")
READY_FILE = os.environ.get("READY_FILE")
READY_STATUS = int(os.environ.get("READY_STATUS", "200"))
READY_LOCATION = os.environ.get("READY_LOCATION")


def warming_up() -> bool:
    return time.monotonic() - STARTED < READY_AFTER or (
        READY_FILE is not None and not os.path.exists(READY_FILE)
    )


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/crash":
            os._exit(3)
        if url.path == "/slow":
            time.sleep(float(query.get("s", ["1"])[0]))
        if url.path == READY_PATH and warming_up():
            self._answer(503, b"warming up\n")
            return
        if url.path == READY_PATH and (READY_STATUS != 200 or READY_LOCATION):
            self._answer(
                READY_STATUS, b"" if READY_STATUS in (204, 304) else b"ready?\n", location=READY_LOCATION
            )
            return
        if url.path == "/missing":
            self._answer(404, b"no such path\n")
            return
        body = f"{os.getpid()}\n".encode() if url.path == "/pid" else b"ok\n"
        self._answer(200, body)

    def _answer(self, status: int, body: bytes, location: str | None = None) -> None:
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(format % args, flush=True)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = False  # server_close() waits for the requests in flight

    def on_term(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else on_term)
    print(f"listening on {server.server_address[1]}", flush=True)
    if os.environ.get("CHILD"):
        import subprocess

        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    print("drained, bye", flush=True)


if __name__ == "__main__":
    main()
