"""Settings come from flags and `AUTOSCALER_*` environment variables; flags win; bad values say which."""

from __future__ import annotations

import pytest

from autoscaler.config import ControllerSettings, ProviderSettings, ProxySettings, build
from autoscaler.errors import ConfigError
from tests.support.cli import run_cli


def test_environment_variables_set_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSCALER_INTERVAL", "5")
    monkeypatch.setenv("AUTOSCALER_DRY_RUN", "true")
    monkeypatch.setenv("AUTOSCALER_NAMESPACES", "team-a, team-b")
    controller = build(ControllerSettings, {})
    assert (controller.interval, controller.dry_run) == (5.0, True)
    assert build(ProviderSettings, {}).namespaces == ["team-a", "team-b"]


def test_a_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSCALER_INTERVAL", "5")
    assert build(ControllerSettings, {"interval": "0.5"}).interval == 0.5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("interval", "0"),
        ("interval", "-1"),
        ("admin_port", "70000"),
        ("interval", "inf"),  # it ticked once and never again, healthy all along
        ("interval", "nan"),
    ],
)
def test_out_of_range_values_are_refused_naming_flag_and_env_var(field: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(ControllerSettings, {field: value})
    message = str(caught.value)
    assert f"--{field.replace('_', '-')}" in message
    assert f"AUTOSCALER_{field.upper()}" in message
    assert repr(value) in message


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("mark_interval", "16", "less than or equal to 15"),
        ("mark_interval", "0", "greater than 0"),
        ("upstream_connections", "0", "greater than 0"),
        ("upstream_idle_timeout", "0", "greater than 0"),
        ("retry_after", "-1", "greater than or equal to 0"),
    ],
)
def test_proxy_settings_out_of_range_are_refused_saying_the_bound(field: str, value: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(ProxySettings, {field: value})
    message = str(caught.value)
    assert f"--{field.replace('_', '-')} (env AUTOSCALER_{field.upper()})" in message
    assert why in message


def test_a_bad_environment_variable_exits_2_with_its_name() -> None:
    done = run_cli("run", "--prometheus-url", "http://127.0.0.1:9", env={"AUTOSCALER_INTERVAL": "often"})
    assert done.returncode == 2
    assert "AUTOSCALER_INTERVAL" in done.stderr
    assert "'often'" in done.stderr


@pytest.mark.parametrize("value", ["Bad_NS", "ok,also ok", "-x"])
def test_a_namespace_that_is_not_a_dns_label_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(ProviderSettings, {"namespaces": value})
    message = str(caught.value)
    assert "--namespaces" in message
    assert "a namespace is a DNS label" in message
