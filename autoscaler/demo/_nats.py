"""An embedded nats-server for `autoscaler demo`, so asynchronous calls work on one machine too.

The demo must run with nothing to install, so NATS is optional: when a `nats-server` binary is found
(`$NATS_SERVER_BIN`, PATH, or Debian's /usr/sbin/nats-server) it is started on a free loopback port
with JetStream in a temporary store that is deleted on exit; when none is found the demo runs without
`/async-function/` and says how to get it. The server is a child process stopped with the stack
(SIGTERM, then SIGKILL), never left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import aiohttp

from autoscaler.providers.local import die_with_parent

INSTALL_HINT = "install nats-server (apt-get install nats-server) for asynchronous calls in the demo"
_DEBIAN = "/usr/sbin/nats-server"


def find_binary() -> str | None:
    """`$NATS_SERVER_BIN` when set, else nats-server on PATH or Debian's; None when there is none."""
    explicit = os.environ.get("NATS_SERVER_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("nats-server") or (_DEBIAN if os.access(_DEBIAN, os.X_OK) else None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedNats:
    """One nats-server with JetStream on loopback; `url` once `start()` returned."""

    def __init__(self, *, binary: str) -> None:
        self.binary = binary
        self.port, self._monitor = _free_port(), _free_port()  # chosen now: the proxy is told the URL first
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def directory(self) -> Path | None:
        """The temporary directory of the store, config and log while the server runs."""
        return Path(self._dir.name) if self._dir is not None else None

    async def start(self, *, timeout: float = 10.0) -> None:
        """Start and wait until JetStream answers; RuntimeError with the server's log otherwise."""
        self._dir = tempfile.TemporaryDirectory(prefix="autoscaler-demo-nats-")
        root = Path(self._dir.name)
        monitor = self._monitor
        (root / "nats.conf").write_text(
            f"listen: 127.0.0.1:{self.port}\nhttp: 127.0.0.1:{monitor}\nmax_payload: 2MB\n"
            f'jetstream {{\n  store_dir: "{root / "store"}"\n}}\n'
        )
        with (root / "nats.log").open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                self.binary,
                "-c",
                str(root / "nats.conf"),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                # Its own session, as the replicas have: a Ctrl-C in the terminal reaches the demo, which
                # closes its NATS clients and then stops the server, instead of the server dying under
                # clients that then reconnect in a loop (the demo could hang in that loop on exit).
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        health = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while time.monotonic() < deadline and self._process.returncode is None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(health) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        tail = (root / "nats.log").read_text(errors="replace")[-600:].strip()
        code = self._process.returncode
        why = f"no healthy JetStream within {timeout:g}s" if code is None else f"it exited with code {code}"
        await self.stop()
        said = f": {tail}" if tail else " and printed nothing"
        raise RuntimeError(f"nats-server {self.binary} did not start with JetStream ({why}){said}")

    async def stop(self, *, grace: float = 5.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after `grace` s) and delete its store; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=grace)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
