"""One replica of a local function: a supervised process on a free loopback port.

The local provider's promises live here: a replica counts as ready only once its readiness path
(`LocalFunction.health_path`) answers as kubelet's httpGet probe must, 2xx or 3xx; a crash is
restarted after the one back-off rule (`policies.backoff`); a stop removes the replica from the
endpoints first, then sends SIGTERM to its process group and waits a grace period (so requests in
flight finish) before SIGKILL. Each replica runs in its own process group, so a Ctrl-C in the terminal
reaches the add-on alone (which shuts down in order) and a stop reaches the replica's own children; on
Linux the kernel also kills it if the add-on dies without cleaning up (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urljoin, urlsplit

import aiohttp

from autoscaler.functionsfile import LocalFunction
from autoscaler.tasks import spawn
from policies.backoff import Backoff

log = logging.getLogger("autoscaler.providers.local")

LIVE_GROUPS: set[int] = set()  # process groups still running, for the provider's exit hook


class ReplicaState(StrEnum):
    STARTING = "starting"  # process spawned (or waiting to be), health check not yet passed
    READY = "ready"  # answering its health path; listed in endpoints
    DRAINING = "draining"  # removed from endpoints, finishing in-flight requests
    EXITED = "exited"  # stopped for good


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """What the demo table and the tests see of one replica."""

    name: str
    pid: int | None
    port: int | None
    state: ReplicaState
    restarts: int


@dataclass(frozen=True, slots=True)
class ReplicaTiming:
    """How patient the provider is with a replica (keyword settings of LocalProvider)."""

    ready_timeout: float = 30.0  # seconds from spawn to a passing health check, else restart
    grace: float = 10.0  # seconds between SIGTERM and SIGKILL
    drain_delay: float = 0.2  # seconds between leaving the endpoints and SIGTERM
    backoff_base: float = 0.5  # first restart delay; doubles per crash
    backoff_max: float = 10.0
    stable_after: float = 10.0  # seconds ready after which the crash count resets
    probe_interval: float = 0.05


# The redirects Go's HTTP client follows, as kubelet's probe does to the same host (up to 10); a
# redirect to another host ends the probe with success there, and here without dialling it.
_FOLLOWED = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 10


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> Callable[[], None] | None:
    """A preexec hook asking Linux to SIGKILL the replica when the add-on dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the add-on died before the hook ran
            os._exit(1)

    return hook


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Replica:
    """Runs one replica until stopped: spawn, health-check, restart on crash with backoff."""

    def __init__(
        self,
        *,
        fn: LocalFunction,
        index: int,
        session: aiohttp.ClientSession,
        timing: ReplicaTiming,
        on_change: Callable[[Replica], None],
        on_crash: Callable[[Replica, str], None],
    ) -> None:
        self.fn = fn
        self.index = index
        self.name = f"{fn.name}-{index}"
        self.state = ReplicaState.STARTING
        self.port: int | None = None
        self.restarts = 0
        self.output: collections.deque[str] = collections.deque(maxlen=20)
        self._session = session
        self._timing = timing
        self._backoff = Backoff(timing.backoff_base, timing.backoff_max)  # the one rule, unjittered
        self._on_change = on_change
        self._on_crash = on_crash
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self._in_backoff = False
        self._task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Future[None] | None = None
        self._last_probe = "no answer"  # what the readiness path last did, for "not ready" reasons
        self._served = False  # ready once in this process, not ready now: a stop drains it all the same

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def stopping(self) -> bool:
        return self._stopping

    def view(self) -> ReplicaView:
        return ReplicaView(
            name=self.name, pid=self.pid, port=self.port, state=self.state, restarts=self.restarts
        )

    def start(self) -> None:
        self._task = spawn(self._supervise(), name=f"replica {self.name}")

    def _set(self, state: ReplicaState) -> None:
        if state is not self.state:
            self.state = state
            self._on_change(self)

    async def _supervise(self) -> None:
        crashes = 0
        while not self._stopping:
            ready_at = await self._run_once()
            if self._stopping:
                break
            ran = time.monotonic() - ready_at if ready_at is not None else 0.0
            crashes = 1 if ran >= self._timing.stable_after else crashes + 1
            delay = self._backoff.delay(crashes)
            code = self._process.returncode if self._process is not None else None
            last = self.output[-1] if self.output else "no output"
            reason = (
                f"replica {self.name} exited with code {code} (last output: {last!r}); "
                f"restart in {delay:.1f}s"
            )
            log.warning("%s", reason)
            self._on_crash(self, reason)
            self._set(ReplicaState.STARTING)
            self._in_backoff = True
            try:
                await asyncio.sleep(delay)
            finally:
                self._in_backoff = False
            self.restarts += 1

    async def _run_once(self) -> float | None:
        """Run the process once; return when it became ready (monotonic), None if it never did."""
        self.port = free_port()
        env = {**os.environ, **self.fn.environment, "PORT": str(self.port)}
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.fn.argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except OSError as e:
            self.output.append(f"cannot start {self.fn.argv[0]!r}: {e}")
            self._process = None
            return None
        process = self._process
        self._served = False
        LIVE_GROUPS.add(process.pid)
        log.info("replica %s started: pid %d, port %d", self.name, process.pid, self.port)
        reader = spawn(self._pump_output(process), name=f"logs of {self.name}")
        ready_at: float | None = None
        never_ready: str | None = None
        watch: asyncio.Task[None] | None = None
        try:
            if await self._probe_until_ready(process) and not self._stopping:
                ready_at = time.monotonic()
                log.info("replica %s ready on %s", self.name, self.url)
                self._set(ReplicaState.READY)
                if self.fn.probe.failure_threshold is not None:
                    watch = spawn(self._watch_readiness(process), name=f"readiness of {self.name}")
            elif process.returncode is None:
                if not self._stopping:
                    never_ready = (
                        f"not ready after {self._timing.ready_timeout:g}s: "
                        f"{self.fn.health_path} last {self._last_probe}"
                    )
                signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        finally:
            if watch is not None:
                watch.cancel()
            LIVE_GROUPS.discard(process.pid)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(reader, timeout=2.0)
        if never_ready is not None:
            self.output.append(never_ready)  # after the process's own last lines: the crash reason
        return ready_at

    async def _probe_until_ready(self, process: asyncio.subprocess.Process) -> bool:
        """Probe until `success_threshold` passes in a row; False once the ready timeout (counted after
        the probe's initial delay) is over, or the process ended."""
        probe = self.fn.probe
        interval = probe.period if probe.period is not None else self._timing.probe_interval
        await self._pause(process, probe.initial_delay)
        deadline = time.monotonic() + self._timing.ready_timeout
        passes = 0
        while not self._stopping and process.returncode is None and time.monotonic() < deadline:
            passes = passes + 1 if await self._passes() else 0
            if passes >= probe.success_threshold:
                return True
            await asyncio.sleep(interval)
        return False

    async def _pause(self, process: asyncio.subprocess.Process, seconds: float) -> None:
        """Sleep `seconds`, or less if the process ends (a stop kills a replica that is not ready)."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await process.wait()

    async def _passes(self) -> bool:
        """One probe of the readiness path: passed (2xx or 3xx), or not, with why in `_last_probe`."""
        try:
            status = await self._probe(self.url + self.fn.health_path)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            self._last_probe = f"no answer ({type(e).__name__})"
            return False
        self._last_probe = f"answered {status}"
        return 200 <= status < 400

    async def _watch_readiness(self, process: asyncio.subprocess.Process) -> None:
        """Once ready, go on probing as kubelet does: out of the endpoints after `failure_threshold`
        failures in a row, back in after `success_threshold` passes in a row."""
        probe = self.fn.probe
        assert probe.period is not None
        assert probe.failure_threshold is not None
        passes = failures = 0
        while not self._stopping and process.returncode is None:
            await asyncio.sleep(probe.period)
            if await self._passes():
                passes, failures = passes + 1, 0
            else:
                passes, failures = 0, failures + 1
            if self._stopping:
                return
            if self.state is ReplicaState.READY and failures >= probe.failure_threshold:
                log.warning("replica %s not ready: %s %s", self.name, self.fn.health_path, self._last_probe)
                self._served = True  # it may still be answering requests: a stop drains it
                self._set(ReplicaState.STARTING)
            elif self.state is ReplicaState.STARTING and passes >= probe.success_threshold:
                log.info("replica %s ready again on %s", self.name, self.url)
                self._set(ReplicaState.READY)

    async def _probe(self, url: str) -> int:
        """One probe as kubelet runs an httpGet one: the status at the end of its same-host redirects
        (a redirect elsewhere is its own answer); ValueError past 10 redirects or on a bad Location."""
        probe_timeout = self.fn.probe.timeout
        timeout = aiohttp.ClientTimeout(total=probe_timeout if probe_timeout is not None else 2.0)
        host = urlsplit(url).hostname
        for _ in range(_MAX_REDIRECTS + 1):
            async with self._session.get(url, timeout=timeout, allow_redirects=False) as response:
                status, location = response.status, response.headers.get("Location")
            if status not in _FOLLOWED or not location:
                return status
            target = urljoin(url, location)
            if urlsplit(target).hostname != host:
                return status  # kubelet stops here and counts the redirect as success
            url = target
        raise ValueError(f"more than {_MAX_REDIRECTS} redirects")

    async def _pump_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        fn_log = logging.getLogger(f"autoscaler.functions.{self.fn.name}")
        while line := await process.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            self.output.append(text)
            fn_log.info("[%s] %s", self.name, text)

    def retire(self) -> None:
        """Take the replica out of the endpoints at once; `stop` then drains it."""
        self._stopping = True
        if self.state is ReplicaState.READY or self._served:
            self._set(ReplicaState.DRAINING)

    async def stop(self) -> None:
        """Retire, SIGTERM the group, wait the grace period, then SIGKILL (once, however often called)."""
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stop_task)

    async def _stop(self) -> None:
        self.retire()
        process = self._process
        if process is not None and process.returncode is None:
            if self.state is ReplicaState.DRAINING:
                await asyncio.sleep(self._timing.drain_delay)  # let requests already routed arrive
                signal_group(process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(process.wait()), timeout=self._timing.grace)
                except TimeoutError:
                    log.warning(
                        "replica %s still running %.0fs after SIGTERM: SIGKILL", self.name, self._timing.grace
                    )
            signal_group(process.pid, signal.SIGKILL)  # never served, or past its grace
        if self._task is not None:
            if self._in_backoff:
                self._task.cancel()  # waiting to restart a crashed process: nothing to stop
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if process is not None:
            signal_group(process.pid, signal.SIGKILL)  # the replica's own children, if any remain
        self._set(ReplicaState.EXITED)
        log.info("replica %s stopped", self.name)
