"""`--namespaces-annotated KEY=VALUE`: a wrong value is refused at once, in one line, with exit 2."""

from __future__ import annotations

import subprocess

import pytest

from autoscaler.config import ProviderSettings, build
from autoscaler.errors import ConfigError
from tests.support.cli import run_cli


def autoscaler(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env)


@pytest.mark.parametrize("value", ["openfaas", "=1", "open faas=1", "-openfaas=1"])
@pytest.mark.parametrize("command", [["run", "--prometheus-url", "http://127.0.0.1:9"], ["proxy"]])
def test_a_value_that_is_not_key_equals_value_exits_2_in_one_line(command: list[str], value: str) -> None:
    done = autoscaler(*command, f"--namespaces-annotated={value}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--namespaces-annotated" in lines[0]
    assert "KEY=VALUE" in lines[0]
    assert repr(value) in lines[0]
    assert "Traceback" not in done.stderr


def test_the_environment_variable_is_checked_the_same_way() -> None:
    done = autoscaler(
        "run", "--prometheus-url", "http://127.0.0.1:9", env={"AUTOSCALER_NAMESPACES_ANNOTATED": "openfaas"}
    )
    assert done.returncode == 2
    assert "AUTOSCALER_NAMESPACES_ANNOTATED" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("openfaas=1", "openfaas=1"),
        (" openfaas=* ", "openfaas=*"),
        ("example.com/tenant=blue", "example.com/tenant=blue"),
        ("openfaas=", "openfaas="),
    ],
)
def test_good_values_are_kept(value: str, kept: str) -> None:
    settings = build(ProviderSettings, {"namespaces_annotated": value})
    assert settings.namespaces_annotated == kept


def test_unset_means_only_the_configured_namespaces() -> None:
    assert build(ProviderSettings, {}).namespaces_annotated is None
    with pytest.raises(ConfigError, match="namespaces-annotated"):
        build(ProviderSettings, {"namespaces_annotated": "no-equals"})
