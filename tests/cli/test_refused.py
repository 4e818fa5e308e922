"""Mistakes found by trying the commands as a new user would: each is refused, never a stack trace.

Numbers that are not finite or below their floor, report files the simulator could not write after a
whole run, trace files that are not UTF-8 or hold more calls than a replay can, a kubeconfig that is
not YAML (or not a mapping), and an admin port another program holds (`run` also closed nothing it
had opened and logged an unclosed session after its error). Every refusal is one line, argparse's
included (it printed 12 lines of usage first, and asked for a COMMAND when an option was unknown). All
exit 2.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_interrupt import KUBECONFIG
from tests.support.child import free_port
from tests.support.cli import run_cli

SAMPLE = Path(__file__).resolve().parents[2] / "autoscaler" / "data" / "traces" / "azure2019-sample"


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The error line of a refused command (exit 2, no traceback, one line)."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[-1]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("explain", "--load", "nan"), "--load"),
        (("explain", "--load", "inf"), "--load"),
        (("explain", "--load", "1e400"), "--load"),
        (("explain", "--load", "-5"), "--load"),
        (("explain", "--replicas", "-1", "--load", "1"), "--replicas"),
        (("simulate", "--seed", "-1"), "--seed"),
    ],
)
def test_a_number_that_is_not_finite_or_below_its_floor_is_a_usage_error_naming_the_flag(
    args: tuple[str, ...], flag: str
) -> None:
    line = refused(run_cli(*args))
    assert f"argument {flag}:" in line
    value = args[args.index(flag) + 1]
    assert repr(value) in line
    if value in ("nan", "inf", "1e400"):
        assert f"{value!r} is not a finite number" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--bogus",), "autoscaler: error: unrecognized arguments: --bogus; see autoscaler --help"),
        ((), "autoscaler: error: give a command: run, proxy, queue-worker, explain, demo, simulate;"),
        (
            ("run", "--bogus", "x"),
            "autoscaler run: error: unrecognized arguments: --bogus x; see autoscaler run --help",
        ),
        (
            ("demo", "--functions"),
            "autoscaler demo: error: argument --functions: expected one argument (give it a",
        ),
        (("simulate", "--cold-start", "-1s"), "one that starts with '-' goes as --flag=VALUE"),
        (("simulate", "--cold-start=-1s"), "--cold-start: '-1s' is negative; a duration here is 0 or more"),
    ],
)
def test_a_mistake_on_the_command_line_is_one_line_naming_it_and_where_the_help_is(
    args: tuple[str, ...], expected: str
) -> None:
    assert expected in refused(run_cli(*args))


def test_a_plot_file_of_a_format_that_cannot_be_drawn_is_refused_before_the_run(tmp_path: Path) -> None:
    line = refused(run_cli("simulate", "--trace", str(SAMPLE), "--plot", str(tmp_path / "out.txt")))
    assert "--plot" in line
    assert ".png" in line


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_a_report_file_that_is_a_directory_is_refused_before_the_run(tmp_path: Path, flag: str) -> None:
    line = refused(run_cli("simulate", "--trace", str(SAMPLE), flag, str(tmp_path)))
    assert f"{flag} {tmp_path} is a directory" in line


def _trace(tmp_path: Path) -> Path:
    trace = tmp_path / "trace"
    shutil.copytree(SAMPLE, trace)
    for path in trace.iterdir():
        path.chmod(0o644)
    return trace


def test_an_invocations_file_that_is_not_utf8_is_one_line_saying_so(tmp_path: Path) -> None:
    trace = _trace(tmp_path)
    invocations = trace / "invocations.csv"
    lines = invocations.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b",", b",\xff", 1)  # a byte that starts no UTF-8 character
    invocations.write_bytes(b"\n".join(lines))
    line = refused(run_cli("simulate", "--trace", str(trace), "--jobs", "1"))
    assert "is not UTF-8 text" in line
    assert str(invocations) in line


def test_a_count_beyond_what_a_replay_holds_is_one_line_naming_the_function(tmp_path: Path) -> None:
    trace = _trace(tmp_path)
    invocations = trace / "invocations.csv"
    lines = invocations.read_text().split("\n")
    header, cells = lines[0].split(","), lines[1].split(",")
    cells[header.index("1")] = "1000000000000"  # a trillion calls in its first minute
    lines[1] = ",".join(cells)
    invocations.write_text("\n".join(lines))
    line = refused(run_cli("simulate", "--trace", str(trace), "--jobs", "1"))
    assert cells[header.index("HashFunction")] in line
    assert "a replay holds per function" in line


@pytest.mark.parametrize("text", ["clusters: [x\n  - : :", "hello"])
def test_a_kubeconfig_that_is_not_a_yaml_mapping_is_one_line_naming_it(tmp_path: Path, text: str) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(text)
    for command in ("run", "proxy"):
        args = ["--prometheus-url", "http://127.0.0.1:9"] if command == "run" else []
        line = refused(run_cli(command, "--kubeconfig", str(kubeconfig), *args))
        assert f"{kubeconfig} is unusable" in line


def test_an_admin_port_another_program_holds_is_one_line_saying_to_pick_another(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=free_port()))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        # A process of its own: `run` installs signal handlers, which only a main thread may.
        done = subprocess.run(
            [
                sys.executable, "-m", "autoscaler", "run", "--kubeconfig", str(kubeconfig),
                "--prometheus-url", "http://127.0.0.1:9",
                "--admin-host", "127.0.0.1", "--admin-port", str(port),
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    line = refused(done)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "--admin-port" in line


@pytest.mark.slow
def test_explain_with_the_api_server_down_gives_up_in_its_own_ten_seconds_naming_the_address(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    port = free_port()
    kubeconfig.write_text(KUBECONFIG.format(port=port))
    started = time.monotonic()
    done = run_cli(
        "--log-level", "error", "explain", "hello", "--kubeconfig", str(kubeconfig),
        "--prometheus-url", "http://127.0.0.1:9",
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "no first listing from the Kubernetes API server within 10s" in line
    assert f"cannot connect to 127.0.0.1:{port} (Connection refused)" in line
    assert "ConnectionKey" not in line  # aiohttp's repr, which it printed before
    assert took < 30  # not run's 120 s


def test_run_with_a_prometheus_url_that_is_not_one_is_one_line_and_leaves_nothing_open(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=free_port()))
    done = subprocess.run(
        [
            sys.executable, "-m", "autoscaler", "run",
            "--kubeconfig", str(kubeconfig), "--prometheus-url", "notaurl",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    line = refused(done)  # before, "Unclosed client session" followed the error
    assert "--prometheus-url 'notaurl' is not a valid URL" in line


@pytest.mark.parametrize("given", [True, False])
def test_a_kubeconfig_that_does_not_exist_is_one_line_naming_it(tmp_path: Path, given: bool) -> None:
    missing = tmp_path / "home" / ".kube" / "config"
    flags = ["--kubeconfig", str(missing)] if given else []
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    done = subprocess.run(
        [sys.executable, "-m", "autoscaler", "run", *flags, "--prometheus-url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60, check=False, env={**env, "HOME": str(tmp_path / "home")},
    )  # fmt: skip
    line = refused(done)  # before: the client's "Config not found" line, then a complaint about its contents
    assert str(missing) in line
    assert "current-context" not in line
