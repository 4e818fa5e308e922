"""Runs a real nats-server with JetStream for tests, so the queue is tested against the real engine.

A fake NATS would ack whatever its author believed JetStream acks; the real server decides what a
work-queue stream keeps, when an unacknowledged message comes back, what a nak with a delay does and
what a publish without a stream answers. This module starts `nats-server` (Debian's package puts it in
/usr/sbin; or `$NATS_SERVER_BIN`) on a free loopback port with a config file and a throw-away store
directory, waits for its `/healthz?js-enabled-only=true`, and stops, kills or restarts it (keeping the store,
as a restarted pod with a volume would).

    from tests.support.nats import nats_server  # noqa: F401  (re-export in a conftest.py)

    async def test_something(nats_server):
        url = nats_server.url  # nats://127.0.0.1:PORT

When the binary is missing the fixture fails if the `CI` environment variable is set (a CI run must
not pass by skipping) and skips otherwise, both saying how to install it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.prometheus import free_port

INSTALL_HINT = "the nats-server binary is missing: install it with apt-get install -y nats-server"
MAX_PAYLOAD = 2 * 1024 * 1024  # room for a 1 MiB body and its headers (the server default is 1 MiB)


def find_binary() -> str | None:
    explicit = os.environ.get("NATS_SERVER_BIN")
    candidates = [explicit] if explicit else [shutil.which("nats-server"), "/usr/sbin/nats-server"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_binary() -> str:
    binary = find_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    return binary


class NatsServer:
    """One nats-server process with JetStream (file storage in `data_dir/store`)."""

    def __init__(self, *, data_dir: Path, binary: str, max_payload: int = MAX_PAYLOAD) -> None:
        self.data_dir = data_dir
        self.binary = binary
        self.max_payload = max_payload
        self.port = 0
        self.monitor_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 20.0) -> NatsServer:
        """Start (on the same ports after a stop, so clients reconnect) and wait until JetStream is up."""
        for attempt in range(2):
            try:
                self._spawn(fresh_ports=self.port == 0 or attempt == 1)
                self._wait_ready(timeout=timeout)
                return self
            except RuntimeError:
                self.kill()
                if attempt == 1 or "address already in use" not in self.log_tail():
                    raise
        raise AssertionError("unreachable")

    def _spawn(self, *, fresh_ports: bool) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if fresh_ports:
            self.port = free_port()
            self.monitor_port = free_port()
        store = self.data_dir / "store"
        config = self.data_dir / "nats.conf"
        config.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            f"max_payload: {self.max_payload}\n"
            f'jetstream {{\n  store_dir: "{store}"\n}}\n'
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def _wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited at start-up; its log ends with:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(health, timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server not ready within {timeout}s; its log ends with:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)

    def kill(self) -> None:
        """SIGKILL at once, as a crash would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream per test (about 0.1 s to start)."""
    server = NatsServer(data_dir=tmp_path_factory.mktemp("nats"), binary=require_binary())
    server.start()
    try:
        yield server
    finally:
        server.stop()
