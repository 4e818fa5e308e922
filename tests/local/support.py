"""Helpers for the local provider's tests: a functions file built in place, and process checks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoscaler.functionsfile import FunctionsFile, parse
from autoscaler.interfaces import FunctionRef
from autoscaler.providers.local import ReplicaTiming

MakeProvider = Callable[..., Any]  # the `make_provider` fixture: `await make_provider(env=...)`
FIXTURE = Path(__file__).parent / "fixture_function.py"
REF = FunctionRef(name="echo", namespace="openfaas-fn")
READY = "com.openfaas.ready.http.path"  # OpenFaaS's readiness-path annotation


def functions_file(
    *,
    replicas: int = 1,
    env: dict[str, str] | None = None,
    command: str | None = None,
    annotations: dict[str, str] | None = None,
) -> FunctionsFile:
    echo: dict[str, Any] = {
        "command": command or f"{sys.executable} {FIXTURE}",
        "environment": env or {},
        "replicas": replicas,
    }
    if annotations is not None:
        echo["annotations"] = annotations
    return parse({"functions": {"echo": echo}}, source="test", base_dir=FIXTURE.parent)


FAST = ReplicaTiming(ready_timeout=10.0, grace=5.0, drain_delay=0.1, backoff_base=0.3, backoff_max=2.0)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found
