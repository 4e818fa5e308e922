"""`autoscaler simulate` end to end: the table, the JSON contract, the plot, and clear input errors."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autoscaler.commands import simulate
from autoscaler.errors import ConfigError
from tests.simulate.support import write_trace
from tests.support.cli import run_cli

RESULT_KEYS = {
    "policy",
    "cold_start_pct",
    "cold_start_pct_p75_function",
    "p99_wait_s",
    "replica_seconds",
    "idle_replica_seconds",
    "wasted_memory_gb_s",
    "scale_events",
}


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="autoscaler")
    simulate.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["simulate", *argv])


def _trace(tmp_path: Path) -> Path:
    return write_trace(
        tmp_path / "trace",
        {
            "cron": [(m, 1) for m in range(0, 240, 20)],
            "burst": [(5, 40), (6, 40), (90, 10)],
            "once": [(100, 1)],
        },
        minutes=240,
    )


def test_the_json_report_has_the_contract_keys_and_the_assumptions(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code = simulate.run(_args("--trace", str(_trace(tmp_path)), "--json", str(out), "--jobs", "1"))
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["trace"].endswith("trace")
    assert [row["policy"] for row in doc["results"]] == [
        "adaptive",
        "fixed-10m",
        "openfaas",
        "knative",
        "keda-hpa",
    ]
    for row in doc["results"]:
        assert set(row) == RESULT_KEYS
        assert 0 < row["cold_start_pct"] <= 100
        assert row["scale_events"] >= 2
        assert row["idle_replica_seconds"] <= row["replica_seconds"]
    assumptions = doc["assumptions"]
    for key in ("cold_start", "scrape_interval", "rate_window", "tick", "seed", "arrivals", "prometheus"):
        assert key in assumptions
    assert assumptions["cold_start"] == 2.0
    assert "uniform" in assumptions["arrivals"]
    assert doc["invocations"] == 12 + 90 + 1


def test_chosen_policies_and_cold_start_are_honoured(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    argv = [
        "--trace",
        str(_trace(tmp_path)),
        "--policy",
        "knative",
        "--policy",
        "openfaas",
        "--cold-start",
        "5s",
    ]
    simulate.run(_args(*argv, "--json", str(out), "--jobs", "1"))
    doc = json.loads(out.read_text())
    assert [row["policy"] for row in doc["results"]] == ["knative", "openfaas"]
    assert doc["assumptions"]["cold_start"] == 5.0
    assert all(row["p99_wait_s"] <= 5.0 for row in doc["results"])


def test_the_cross_function_prior_policy_runs_from_the_command_line_in_worker_processes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "report.json"
    argv = ("--trace", str(_trace(tmp_path)), "--policy", "adaptive-prior", "--policy", "adaptive")
    assert simulate.run(_args(*argv, "--json", str(out), "--jobs", "2")) == 0
    doc = json.loads(out.read_text())
    assert [row["policy"] for row in doc["results"]] == ["adaptive-prior", "adaptive"]
    assert all(0 < row["cold_start_pct"] <= 100 for row in doc["results"])
    assert "idle times" in doc["assumptions"]["policies"]["adaptive-prior"]


def test_the_plot_is_a_png_with_a_function_timeline(tmp_path: Path) -> None:
    png = tmp_path / "out" / "plot.png"
    simulate.run(
        _args("--trace", str(_trace(tmp_path)), "--plot", str(png), "--function", "cron", "--jobs", "1")
    )
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_an_unknown_function_for_the_timeline_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--function 'nope' matches 0 functions"):
        simulate.run(_args("--trace", str(_trace(tmp_path)), "--function", "nope", "--jobs", "1"))


def test_a_bad_duration_flag_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        _args("--cold-start", "fast")


@pytest.mark.slow
def test_the_command_runs_in_worker_processes_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoscaler",
            "simulate",
            "--trace",
            str(_trace(tmp_path)),
            "--json",
            str(out),
            "--jobs",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "adaptive" in done.stdout
    assert "keda-hpa" in done.stdout
    serial = tmp_path / "serial.json"
    simulate.run(_args("--trace", str(_trace(tmp_path)), "--json", str(serial), "--jobs", "1"))
    assert json.loads(out.read_text())["results"] == json.loads(serial.read_text())["results"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--functions", "-3"), "--functions must be at least 1, got -3"),
        (("--trace", "/nonexistent-trace-dir"), "trace directory /nonexistent-trace-dir does not exist"),
        (("--policy", "nope"), "unknown policy 'nope'"),
        (("--cold-start", "soon"), "not a Go duration: 'soon'"),
        # A history flag without --prometheus-url was ignored without a word.
        (("--since", "3d"), "--since shapes the history read from Prometheus: give --prometheus-url too"),
        (("--memory-mb", "512", "--namespace", "dev"), "--memory-mb, --namespace shape the history read"),
    ],
)
def test_wrong_flag_values_exit_2_with_a_clear_message(argv: tuple[str, ...], expected: str) -> None:
    done = run_cli("simulate", *argv)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_the_help_lists_every_policy_the_error_for_an_unknown_one_lists() -> None:
    listed = run_cli("simulate", "--policy", "nope").stderr.split("choose from ", 1)[1]
    help_text = " ".join(run_cli("simulate", "--help").stdout.split())
    for form in ("adaptive-prior", "adaptive-priced", "adaptive-paper", "adaptive-share<P>", "fixed-<N>m"):
        assert form in listed
        assert form in help_text


def test_functions_given_the_median_duration_are_counted_beside_the_table(tmp_path: Path) -> None:
    trace = _trace(tmp_path)
    durations = trace / "durations.csv"
    lines = durations.read_text().splitlines()
    durations.write_text("\n".join(lines[:-1]) + "\n")  # the last function loses its row
    done = run_cli("simulate", "--trace", str(trace), "--policy", "fixed-10m", "--jobs", "1")
    assert done.returncode == 0, done.stderr
    assert (
        "1 function(s) without a row in durations.csv were given the trace's median duration" in done.stdout
    )
    assert "memory.csv" not in done.stdout


def test_the_verdict_gives_each_ratio_beside_its_goal_and_names_the_baselines_as_good_on_both(
    tmp_path: Path,
) -> None:
    done = run_cli("simulate", "--trace", str(_trace(tmp_path)), "--jobs", "1")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # the console may wrap the line
    assert re.search(
        r"p75-function cold starts x[\d.]+ \(goal <= x0\.5\), wasted memory x[\d.]+ \(goal <= x0\.85\);", text
    )
    assert re.search(r"(no baseline as good on both|as good on both: [a-z0-9, -]+); goal (NOT )?met", text)
    assert "colder and cheaper" not in text  # the old words, for a test of "at most as cold"
