"""Ctrl-C on `autoscaler proxy` whose API server is unreachable: a quiet exit, at any moment; and
SIGTERM or SIGINT on `autoscaler run` in the same plight: it stops at once, not at its start timeout.

The proxy cannot list its functions and keeps retrying; Ctrl-C may arrive while the modules are
still loading, while the provider is starting or while it is retrying. Each is exit 130 (128 +
SIGINT, what a shell reports for Ctrl-C) with no stack trace.

The moments are counted from the start of the project's own code: a `sitecustomize` hook in the
child marks the moment `autoscaler.cli` begins to load. Before it, a Ctrl-C lands in CPython's start
(importing `site`: "Fatal Python error: init_import_site") or in runpy finding the package, before
any code of the project has run; on a loaded machine that start alone can outlast a fixed delay
from the spawn.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.support.child import free_port
from tests.support.waiting import until

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- {{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}
contexts:
- {{name: x, context: {{cluster: c, user: u, namespace: default}}}}
current-context: x
users:
- {{name: u, user: {{token: not-a-secret}}}}
"""


# Run by the child interpreter at start-up: touch MARKER when `autoscaler.cli` is first looked for.
HOOK = """
import sys


class _Mark:
    def find_spec(self, name, path=None, target=None):
        if name == "autoscaler.cli":
            sys.meta_path.remove(self)
            open({marker!r}, "w").close()
        return None


sys.meta_path.insert(0, _Mark())
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("after", [0.0, 0.1, 0.5, 2.0])
async def test_ctrl_c_on_a_proxy_without_its_api_server_exits_130_without_a_traceback(
    tmp_path: Path, after: float
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=free_port()))  # nothing listens there
    hook, started = tmp_path / "hook", tmp_path / "cli-loading"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK.format(marker=str(started)))
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    proxy = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "autoscaler",
        "--log-format",
        "text",
        "proxy",
        "--kubeconfig",
        str(kubeconfig),
        "--port",
        "0",
        "--admin-port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path},
        # As a shell starts a foreground command: SIGINT at its default, even where this test runs
        # with it ignored (a background job of a non-interactive shell, as CI may start it).
        preexec_fn=_default_sigint,
    )
    try:
        await until(started.exists, within=30, what="autoscaler.cli to begin loading (the sitecustomize)")
        await asyncio.sleep(after)
        proxy.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proxy.communicate(), timeout=30)
    finally:
        if proxy.returncode is None:
            proxy.kill()
            await proxy.wait()
    text = err.decode()
    assert "Traceback" not in text
    # 130, or killed by SIGINT itself where the event loop's runner let it act by default for a
    # moment: a shell reports both as 130.
    assert proxy.returncode in (130, -signal.SIGINT), text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_while_run_waits_for_its_api_server_stops_it_at_once_and_quietly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """It used to go on listing until --start-timeout (120 s by default) and then fail."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=free_port()))  # nothing listens there
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscaler", "--log-format", "text", "run",
        "--kubeconfig", str(kubeconfig), "--prometheus-url", f"http://127.0.0.1:{free_port()}",
        "--admin-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_default_sigint,
    )  # fmt: skip
    try:
        assert run.stderr is not None
        seen = b""
        async with asyncio.timeout(30):
            while b"admin" not in seen.lower():  # its admin server is up: start-up is under way
                line = await run.stderr.readline()
                assert line, f"run ended before its start-up: {seen.decode()}"
                seen += line
        await asyncio.sleep(1.0)  # retrying its first listings
        run.send_signal(signum)
        _, err = await asyncio.wait_for(run.communicate(), timeout=10)
    finally:
        if run.returncode is None:
            run.kill()
            await run.wait()
    text = seen.decode() + err.decode()
    assert "Traceback" not in text
    assert run.returncode == 0, text
    assert "stopped during start-up" in text
