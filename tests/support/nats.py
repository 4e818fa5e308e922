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

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.child import ChildServer, require, stable_port
from tests.support.child import find_binary as find

INSTALL_HINT = "the nats-server binary is missing: install it with apt-get install -y nats-server"
MAX_PAYLOAD = 2 * 1024 * 1024  # room for a 1 MiB body and its headers (the server default is 1 MiB)


def find_binary() -> str | None:
    """Path of nats-server (`$NATS_SERVER_BIN`, PATH, Debian's /usr/sbin), or None."""
    return find(env="NATS_SERVER_BIN", name="nats-server", debian_path="/usr/sbin/nats-server")


def require_binary() -> str:
    return require(find_binary(), hint=INSTALL_HINT)


class NatsServer(ChildServer):
    """One nats-server process with JetStream (file storage in `data_dir/store`)."""

    name = "nats-server"
    marker = "nats"

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
        self.check_marked()
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
            self.port = stable_port()
            self.monitor_port = stable_port()
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
        health = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
        self.wait_http(health, timeout=timeout, poll=0.05)


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream per test (about 0.1 s to start)."""
    server = NatsServer(data_dir=tmp_path_factory.mktemp("nats"), binary=require_binary())
    server.start()
    try:
        yield server
    finally:
        server.stop()
