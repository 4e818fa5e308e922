"""The image (which no machine here can build) runs as non-root from pinned, consistent dependencies."""

from __future__ import annotations

import json
import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.manifests.conftest import ROOT, Obj, pod_specs

LINUX_CPYTHON_311 = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "python_version": "3.11",
    "extra": "",
}


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"requirements.lock: {line!r} is not pinned as NAME==VERSION"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_the_image_runs_as_a_numeric_non_root_user_with_an_exec_form_entrypoint() -> None:
    final = _final_stage()
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", final[0][1]), final[0]
    users = [arg for op, arg in final if op == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "USER must be numeric: runAsNonRoot cannot check a user name"
    assert int(uid) != 0, "USER must not be root"
    entrypoint = [arg for op, arg in final if op == "ENTRYPOINT"]
    assert json.loads(entrypoint[-1]) == ["autoscaler"], "exec form: no shell needed at runtime"
    assert [arg for op, arg in final if op == "RUN"] == [], "the runtime stage runs nothing at build time"


def test_the_pods_run_as_the_image_s_user(base: list[Obj]) -> None:
    (user,) = [arg for op, arg in _final_stage() if op == "USER"]
    for name, spec in pod_specs(base):
        assert str(spec["securityContext"]["runAsUser"]) == user.split(":")[0], name


def test_dependencies_are_installed_only_from_exact_pins_that_satisfy_pyproject() -> None:
    runs = " ".join(arg for op, arg in _instructions() if op == "RUN")
    assert "--no-deps -r requirements.lock" in runs
    assert re.search(r"pip install --no-deps \.", runs), (
        "the project itself must not pull unpinned dependencies"
    )
    pins = _lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        if requirement.marker is not None and not requirement.marker.evaluate(LINUX_CPYTHON_311):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} (pyproject.toml) has no pin in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {requirement.specifier}"
        )
    assert "autoscaler" not in pins


def test_the_build_copies_only_files_that_exist_and_that_dockerignore_lets_through() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for op, arg in _instructions():
        if op != "COPY" or arg.startswith("--from"):
            continue
        *sources, _ = arg.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"
