"""Ctrl-C on `autoscaler proxy` whose API server is unreachable: a quiet exit, at any moment.

The proxy cannot list its functions and keeps retrying; Ctrl-C may arrive while the modules are
still loading, while the provider is starting or while it is retrying. Each is exit 130 (128 +
SIGINT, what a shell reports for Ctrl-C) with no stack trace.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.support.child import free_port

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


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("after", [0.3, 0.8, 2.0])
async def test_ctrl_c_on_a_proxy_without_its_api_server_exits_130_without_a_traceback(
    tmp_path: Path, after: float
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=free_port()))  # nothing listens there
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
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # As a shell starts a foreground command: SIGINT at its default, even where this test runs
        # with it ignored (a background job of a non-interactive shell, as CI may start it).
        preexec_fn=_default_sigint,
    )
    try:
        await asyncio.sleep(after)
        proxy.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proxy.communicate(), timeout=30)
    finally:
        if proxy.returncode is None:
            proxy.kill()
            await proxy.wait()
    text = err.decode()
    assert "Traceback" not in text
    # Before the interpreter installs its own handler, SIGINT's default action ends the process.
    assert proxy.returncode in (130, -signal.SIGINT), text
