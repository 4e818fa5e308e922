"""A server binary run as a child process of a test: found, waited for, stopped or killed.

The tests start real Prometheus and nats-server processes the same way: find the binary (an
environment variable first, then PATH, then where Debian installs it), fail under CI and skip
elsewhere when it is missing, write its output to a log whose tail explains any failure, wait for an
HTTP readiness path, and stop it (SIGTERM, then SIGKILL) or kill it as a crash would.

A test that starts one must carry the server's marker (`prometheus`, `nats`), so `-m "not nats"` really
leaves the binary out: tests/conftest.py adds it to every test using the servers' fixtures and records
the running test in `running`, and `start` fails a test that starts a server without it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

running: pytest.Item | None = None  # the test being set up, run or torn down (set by tests/conftest.py)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (bind to 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


_handed_out: set[int] = set()


def stable_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range, for a server that stops and listens on it again.

    A port from `free_port` comes out of the ephemeral range, so while its server is down any outgoing
    connection on the machine may be given it as its local port, and the restart fails with "address
    already in use" (a replica scaled to zero and woken again). The kernel never hands out ports below
    the range on its own. Each xdist worker draws from its own band, and no process is given the same
    port twice, so tests running side by side do not draw one another's ports either.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    low, high = 20000, min(_ephemeral_low(), 32768)
    band = max((high - low) // 16, 64)
    start = low + (index % 16) * band
    candidates = range(start, min(start + band, high))  # empty where the range starts below 20000
    for candidate in random.sample(candidates, len(candidates)):
        if candidate in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
        _handed_out.add(candidate)
        return candidate
    return free_port(host)  # the band is used up: fall back to the kernel's choice


def find_binary(*, env: str, name: str, debian_path: str) -> str | None:
    """`$env` when set (an explicit choice is never second-guessed), else `name` on PATH or Debian's."""
    explicit = os.environ.get(env)
    candidates = [explicit] if explicit else [shutil.which(name), debian_path]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


# `../shared` beside the project: OpenFaaS's artefacts and the production traces (CI puts it there).
SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under `../shared`; if missing, fail under CI (a CI run must not pass by skipping), else skip."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: the shared artefacts and traces live in ../shared next to the project"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def require(binary: str | None, *, hint: str) -> str:
    """The binary's path; otherwise fail under CI (a CI run must not pass by skipping), else skip."""
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(hint)
        pytest.skip(hint)
    return binary


class ChildServer:
    """The process, its log, readiness and shutdown; subclasses spawn it."""

    name = "server"
    marker = ""  # the pytest marker every test starting this server carries
    process: subprocess.Popen[bytes] | None
    log_path: Path

    def check_marked(self) -> None:
        """Fail the running test if it lacks this server's marker (outside pytest, do nothing)."""
        item = running
        if self.marker and item is not None and item.get_closest_marker(self.marker) is None:
            raise AssertionError(
                f"{item.nodeid} starts {self.name} without the `{self.marker}` marker: mark it, or use the "
                f"fixture tests/conftest.py marks automatically"
            )

    def wait_http(self, url: str, *, timeout: float, poll: float) -> None:
        """Until `url` answers 200; RuntimeError with the log's tail if the process exits or is late."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up; its log ends with:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(poll)
        raise RuntimeError(f"{self.name} not ready within {timeout}s; its log ends with:\n{self.log_tail()}")

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
        """SIGKILL at once, as a crash would; the port stops answering immediately."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
