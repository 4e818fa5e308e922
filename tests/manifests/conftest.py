"""Builds the kustomize base with the real `kubectl kustomize`, once per test session.

kubectl comes from Debian's `kubernetes-client` package (scripts/test.sh installs it); `$KUBECTL`
points at another one. The manifests are written for every kustomize from the one in that package
(kubectl 1.20, kustomize v2.0.3) to current ones.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
INSTALL_HINT = "kubectl is missing: apt-get install -y kubernetes-client (or set KUBECTL to a kubectl binary)"

Obj = dict[str, Any]


def kubectl() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        pytest.fail(INSTALL_HINT)
    return found


@functools.cache
def _build(directory: Path) -> tuple[Obj, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def build(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize DIRECTORY` yields (fresh copies, safe to change)."""
    return yaml.safe_load(yaml.safe_dump(list(_build(directory))))  # type: ignore[no-any-return]


def only(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[Obj]) -> list[tuple[str, Obj]]:
    """(Deployment name, pod spec) of every Deployment."""
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in deployments]


@pytest.fixture
def base() -> list[Obj]:
    return build(MANIFESTS)


@pytest.fixture
def example() -> list[Obj]:
    return build(MANIFESTS / "example")
