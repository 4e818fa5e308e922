"""`autoscaler explain` and `--help`, through the command line's entry point (tests/support/cli.py).

A closed stdout is a process's matter, so that one test starts `python -m autoscaler`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from policies.model import ScalingSpec
from tests.support.cli import run_cli


def autoscaler(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


def test_explain_prints_the_decision_as_json() -> None:
    done = autoscaler(
        "explain",
        "--label",
        "com.openfaas.scale.type=capacity",
        "--label",
        "com.openfaas.scale.target=5",
        "--label",
        "com.openfaas.scale.target-proportion=1.0",
        "--load",
        "15",
        "--replicas",
        "2",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["desired"] == 3
    assert result["code"] == "ScaleUp"
    assert "capacity load 15" in result["reason"]


def test_explain_uses_the_default_proportion_when_none_is_given() -> None:
    done = autoscaler(
        "explain",
        "--label",
        "com.openfaas.scale.type=capacity",
        "--label",
        "com.openfaas.scale.target=5",
        "--load",
        "15",
        "--replicas",
        "2",
        "--json",
    )
    assert json.loads(done.stdout)["desired"] == 4  # 15 / (5 x 0.9) = 3.33 -> 4


def test_explain_shows_when_an_idle_function_goes_to_zero() -> None:
    done = autoscaler(
        "explain", "--label", "com.openfaas.scale.zero=true", "--idle", "20m", "--load", "0", "--json"
    )
    result = json.loads(done.stdout)
    assert (result["desired"], result["code"]) == (0, "ScaleToZero")


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("com.openfaas.scale.min=abc", "com.openfaas.scale.min='abc' is invalid"),
        ("com.openfaas.scale.type=", "one of rps, capacity, cpu, queue"),
        ("com.openfaas.scale.zero-duration=15 minutes", "Go duration"),
        ("no-equals-sign", "is not KEY=VALUE"),
    ],
)
def test_explain_with_an_invalid_label_exits_2_and_says_why(label: str, expected: str) -> None:
    done = autoscaler("explain", "--label", label, "--load", "1")
    assert done.returncode == 2
    assert expected in done.stderr
    assert "--idle" not in done.stderr
    assert "Traceback" not in done.stderr


def test_explain_with_a_bad_idle_duration_says_how_to_write_one() -> None:
    done = autoscaler("explain", "--idle", "20 minutes", "--load", "0")
    assert done.returncode == 2
    assert "--idle: not a Go duration: '20 minutes'" in done.stderr
    assert "Go duration" in done.stderr


def test_help_lists_every_command() -> None:
    done = autoscaler("--help")
    assert done.returncode == 0
    for command in ("run", "proxy", "explain"):
        assert command in done.stdout


def test_run_help_documents_each_flag_with_its_env_var() -> None:
    done = autoscaler("run", "--help")
    assert done.returncode == 0
    for flag in ("--interval", "--dry-run", "--prometheus-url", "--namespaces", "--query-rps"):
        assert flag in done.stdout
    assert "AUTOSCALER_INTERVAL" in done.stdout


def test_a_bad_flag_value_exits_2_naming_the_flag() -> None:
    done = autoscaler("run", "--interval", "soon", "--prometheus-url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert "--interval" in done.stderr
    assert "'soon'" in done.stderr


def test_run_without_prometheus_says_what_to_do() -> None:
    done = autoscaler("run")
    assert done.returncode == 2
    assert "--prometheus-url" in done.stderr
    assert "autoscaler demo" in done.stderr


def test_a_live_explanation_in_text_says_where_labels_came_from_the_conflicts_and_the_owner_spec() -> None:
    from autoscaler.commands.explain import _render

    text = _render(
        {
            "function": "nodeinfo.openfaas-fn",
            "labels": {"com.openfaas.scale.max": "3", "faas_function": "nodeinfo", "team": "a"},
            "label_sources": {
                "com.openfaas.scale.max": "template",
                "faas_function": "both",
                "team": "deployment",
            },
            "conflicts": [
                "label com.openfaas.scale.max: the pod template says '3', the Deployment's metadata '5'"
            ],
            "owner": "Function/nodeinfo",
            "owner_spec": {"name": "nodeinfo", "image": "ghcr.io/openfaas/nodeinfo:latest"},
            "desired": 1,
        },
        as_json=False,
    )

    assert text.splitlines() == [
        "labels: com.openfaas.scale.max=3 (pod template), "
        "faas_function=nodeinfo (pod template and Deployment), team=a (Deployment)",
        "function: nodeinfo.openfaas-fn",
        "owner: Function/nodeinfo",
        "desired: 1",
        "conflict: label com.openfaas.scale.max: the pod template says '3', the Deployment's metadata '5'",
        'owner spec: {"image": "ghcr.io/openfaas/nodeinfo:latest", "name": "nodeinfo"}',
    ]


def test_explain_scales_a_queue_function_on_its_pending_calls_and_sends_it_to_zero_when_drained() -> None:
    def explain(*extra: str) -> dict[str, object]:
        done = autoscaler(
            "explain",
            "--label", "com.openfaas.scale.type=queue",
            "--label", "com.openfaas.scale.target=10",
            "--label", "com.openfaas.scale.target-proportion=1",
            "--label", "com.openfaas.scale.zero=true",
            "--json", *extra,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout)
        return result

    drained = explain("--idle", "20m", "--load", "0")
    assert (drained["desired"], drained["code"]) == (0, "ScaleToZero")
    assert "warning" not in drained or not drained["warning"]
    backlog = explain("--load", "35", "--replicas", "1")
    assert (backlog["desired"], backlog["code"]) == (4, "ScaleUp")
    assert backlog["spec"]["type"] == "queue"  # type: ignore[index]


def test_explain_names_a_custom_scale_type_as_written() -> None:
    done = autoscaler("explain", "--label", "com.openfaas.scale.type=Latency", "--load", "3")
    assert done.returncode == 0, done.stderr
    assert "code: UnsupportedType" in done.stdout
    assert "warning: com.openfaas.scale.type='Latency' is not a scaling type" in done.stdout
    assert "type_label=Latency" in done.stdout


def test_explain_into_a_closed_pipe_stops_quietly() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written, as `| head` can be
    try:
        done = subprocess.run(
            [sys.executable, "-m", "autoscaler", "explain", "--load", "100"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert done.returncode == 141
    assert done.stderr == ""


def test_explain_shows_the_settings_the_labels_give_and_nothing_the_spec_derives() -> None:
    done = autoscaler("explain", "--label", "com.openfaas.scale.max=5", "--load", "3", "--json")
    assert done.returncode == 0, done.stderr
    shown = set(json.loads(done.stdout)["spec"])
    settings = {f.name for f in dataclasses.fields(ScalingSpec) if f.init} - {"type_label"}
    assert shown == settings  # no `formula_words`: the message's fixed words, not a setting


def test_a_function_with_no_data_reads_as_keeping_its_replicas_not_as_invalid() -> None:
    text = autoscaler("explain", "--replicas", "3").stdout.splitlines()
    assert "decided from load: no, it keeps its current replicas" in text
    assert "load: no data" in text
    assert not any(line.startswith("valid:") for line in text)
    result = json.loads(autoscaler("explain", "--replicas", "3", "--json").stdout)
    assert (result["valid"], result["load"], result["desired"]) == (
        False,
        None,
        3,
    )  # the JSON keeps its values


def test_a_label_nothing_reads_is_a_warning_naming_the_one_it_resembles() -> None:
    text = autoscaler("explain", "--label", "com.openfaas.scale.zero_duration=1m", "--load", "1").stdout
    assert (
        "warning: label com.openfaas.scale.zero_duration is not one this autoscaler reads, so it has no "
        "effect; did you mean com.openfaas.scale.zero-duration?"
    ) in text.splitlines()
    factor = json.loads(autoscaler("explain", "--label", "com.openfaas.scale.factor=20", "--json").stdout)
    assert factor["unknown_labels"] == [
        "label com.openfaas.scale.factor is not read by this autoscaler: the Community Edition's alert "
        "scaler reads it; this autoscaler scales by target"
    ]
