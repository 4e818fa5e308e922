"""The product's own processes (`autoscaler proxy`, `autoscaler run`) and simulated pods, for cluster tests.

End-to-end tests run the add-on exactly as a cluster does: each component is a real
`python -m autoscaler ...` process that reads a kubeconfig pointing at the fake API server
(`tests/support/apiserver.py`), logs to a file the test can read on failure, and must exit 0 on SIGTERM.
`Pods` plays the kubelet for one function: its replica is a real `Upstream` that listens only while the
Deployment has replicas, and on a scale to zero keeps serving for a termination grace (as a function's
watchdog drains on SIGTERM) before it stops listening, so a request that reaches a function at zero
cannot be answered by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.apiserver import DEPLOYMENTS, FakeApiServer
from tests.support.upstream import Upstream

NAMESPACE = "openfaas-fn"


@dataclass
class ServiceProcess:
    """One `python -m autoscaler ...` process whose stdout and stderr go to `log`."""

    name: str
    log: Path
    process: asyncio.subprocess.Process

    @classmethod
    async def spawn(cls, name: str, *, args: list[str], log: Path) -> ServiceProcess:
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "autoscaler",
                "--log-format",
                "text",
                *args,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return cls(name=name, log=log, process=process)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.name} log (tail) ---\n{self.text()[-chars:]}"

    async def wait_for(self, pattern: str, *, timeout: float) -> re.Match[str]:
        """Wait until the log matches `pattern`; fail with the log tail on an exit or after `timeout`."""
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        while (found := compiled.search(self.text())) is None:
            if self.process.returncode is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no {pattern!r} in its log after {timeout}s\n{self.tail()}"
                )
            await asyncio.sleep(0.05)
        return found

    async def stop(self, *, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s of SIGTERM\n{self.tail()}"
            ) from None


@dataclass
class ProxyProcess(ServiceProcess):
    port: int = 0
    admin_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_proxy(*, kubeconfig: Path, log: Path, hold_timeout: float = 20.0) -> ProxyProcess:
    """`autoscaler proxy` on OS-chosen ports; returns once it logged the ports it bound."""
    started = await ServiceProcess.spawn(
        "proxy",
        args=[
            "proxy",
            "--kubeconfig", str(kubeconfig),
            "--namespaces", NAMESPACE,
            "--host", "127.0.0.1",
            "--port", "0",
            "--admin-port", "0",
            "--hold-timeout", f"{hold_timeout:g}",
            "--shutdown-grace", "2",
        ],
        log=log,
    )  # fmt: skip
    proxy = ProxyProcess(name=started.name, log=started.log, process=started.process)
    try:
        found = await proxy.wait_for(r"proxy listening on 127\.0\.0\.1:(\d+) \(admin (\d+)\)", timeout=30)
    except BaseException:
        await proxy.stop()
        raise
    proxy.port, proxy.admin_port = int(found.group(1)), int(found.group(2))
    return proxy


async def start_controller(
    *,
    kubeconfig: Path,
    prometheus_url: str,
    log: Path,
    interval: float,
    rate_window: str,
    extra_args: tuple[str, ...] = (),
    name: str = "controller",
) -> ServiceProcess:
    """`autoscaler run` against `prometheus_url`; returns once its loop has started."""
    controller = await ServiceProcess.spawn(
        name,
        args=[
            "run",
            "--kubeconfig", str(kubeconfig),
            "--namespaces", NAMESPACE,
            "--prometheus-url", prometheus_url,
            "--interval", f"{interval:g}",
            "--rate-window", rate_window,
            "--admin-host", "127.0.0.1",
            "--admin-port", "0",
            "--query-timeout", "1",
            *extra_args,
        ],
        log=log,
    )  # fmt: skip
    try:
        await controller.wait_for("control loop started", timeout=30)
    except BaseException:
        await controller.stop()
        raise
    return controller


@dataclass
class Pods:
    """The kubelet for one function: its replica listens only while the Deployment wants replicas.

    Readiness (status and EndpointSlice) stays the fake API server's job (`set_backend`); this only
    decides whether the replica's server is up. Call `start()` once, `close()` at the end.
    """

    api: FakeApiServer
    name: str
    upstream: Upstream
    termination_grace: float = 1.0
    starts: int = 0  # times the replica's server started listening
    stops: int = 0  # times it stopped after a scale to zero
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"pods {self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.upstream.stop()

    def check(self) -> None:
        """Fail if the simulation itself crashed (its failure would otherwise look like a product bug)."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()

    async def _run(self) -> None:
        listening = False
        zero_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            wanted = self.api.replicas(self.name) > 0
            if wanted:
                zero_since = None
                if not listening:
                    await self.upstream.start()
                    listening = True
                    self.starts += 1
            elif listening:
                if zero_since is None:
                    zero_since = loop.time()
                elif loop.time() - zero_since >= self.termination_grace:
                    await self.upstream.stop()  # in-flight requests finish, new connections are refused
                    listening = False
                    self.stops += 1
            await asyncio.sleep(0.01)


def replica_history(api: FakeApiServer, name: str, *, namespace: str = NAMESPACE) -> list[int]:
    """Every distinct `spec.replicas` the Deployment has had, in order (from the API server's change log)."""
    history: list[int] = []
    for change in api.store.log:
        meta = change.obj["metadata"]
        if change.kind != DEPLOYMENTS or (meta["namespace"], meta["name"]) != (namespace, name):
            continue
        replicas = int(change.obj["spec"].get("replicas", 1))
        if not history or history[-1] != replicas:
            history.append(replicas)
    return history
