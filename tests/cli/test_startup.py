"""A command's start-up imports only what its flags need: `--help` and a usage error stay cheap.

Every `autoscaler` process builds the parser of every command, and the test suite alone starts well
over a hundred of them; numpy, rich, the Kubernetes, NATS and HTTP clients and the Prometheus client
belong to the commands that run, not to printing a help or refusing a flag. These tests list what
such a process really imported, so a top-level import of a heavy module cannot slip back in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

HEAVY = ("numpy", "matplotlib", "kubernetes_asyncio", "nats", "aiohttp", "rich", "prometheus_client")

# Runs each argv through the CLI's entry point in one process, and reports after each which heavy
# modules are loaded by then (the first case that imports one is the one named).
CHILD = """
import contextlib, io, json, sys
from autoscaler.cli import main
heavy, cases, report = json.loads(sys.argv[1]), json.loads(sys.argv[2]), []
for argv in cases:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    report.append({"argv": argv, "code": code, "heavy": sorted(m for m in heavy if m in sys.modules)})
print(json.dumps(report))
"""

HELP = [["--help"], ["--version"]] + [
    [name, "--help"] for name in ("run", "proxy", "queue-worker", "queue-replay", "explain", "demo")
]
BAD_INPUT = [
    ["run", "--bogus"],
    ["demo", "--bogus"],
    ["simulate", "--bogus"],
    ["run", "--interval", "abc"],
    ["run"],
    ["proxy", "--port", "abc"],
    ["proxy", "--provider-url", "ftp://gateway"],
    ["queue-worker", "--retry-codes", "9"],
    ["queue-replay", "--limit", "many"],
    ["explain", "figlet"],
    ["explain", "--idle", "soon"],
    ["demo", "--port", "99999"],
    ["simulate", "--jobs", "0"],
    ["simulate", "--cold-start", "0s"],
]


def _environment() -> dict[str, str]:
    """This process's environment without AUTOSCALER_* settings (one could turn a usage error into a run)."""
    return {key: value for key, value in os.environ.items() if not key.startswith("AUTOSCALER_")}


def _imports_after(cases: list[list[str]]) -> list[dict[str, Any]]:
    argv = [sys.executable, "-c", CHILD, json.dumps(HEAVY), json.dumps(cases)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=_environment())
    assert done.returncode == 0, done.stderr
    report: list[dict[str, Any]] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_a_bad_flag_of_the_real_command_imports_none_of_the_heavy_modules() -> None:
    argv = [sys.executable, "-X", "importtime", "-m", "autoscaler", "run", "--bogus"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=_environment())
    assert done.returncode == 2
    assert "unrecognized arguments: --bogus" in done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "import time:" in line}
    assert "autoscaler.cli" in imported  # the list is the real one
    assert sorted({name.split(".")[0] for name in imported} & set(HEAVY)) == []


@pytest.mark.parametrize("kind", ["help", "bad input"])
def test_help_and_usage_errors_import_none_of_the_heavy_modules(kind: str) -> None:
    cases = HELP if kind == "help" else BAD_INPUT
    report = _imports_after(cases)
    assert [entry["code"] for entry in report] == [0 if kind == "help" else 2] * len(cases)
    assert [(entry["argv"], entry["heavy"]) for entry in report if entry["heavy"]] == []


def test_the_simulate_help_imports_only_numpy_for_the_policy_names_it_shows() -> None:
    # Its --policy help names the simulator's policies, which live with its numpy code; the report's
    # rich, the plot's matplotlib and every client stay out.
    [entry] = _imports_after([["simulate", "--help"]])
    assert entry["code"] == 0
    assert set(entry["heavy"]) <= {"numpy"}


def test_the_proxy_command_looks_for_a_worker_where_its_supervisor_puts_the_settings() -> None:
    # `autoscaler proxy` checks the variable itself, before importing the proxy; the two names are one.
    from autoscaler.commands import proxy
    from autoscaler.proxy import _workers

    assert proxy.WORKER_ENV == _workers.WORKER_ENV
