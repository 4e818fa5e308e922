"""`autoscaler demo` refuses bad input with one line and exit 2, before anything starts.

A bad `AUTOSCALER_*` variable (the demo's stack builds the proxy's, the loop's and the metrics'
settings itself), a functions file that is not UTF-8 or names a function twice, and a bad duration
flag: each is a message that names what is wrong, never a stack trace.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from autoscaler.functionsfile import load
from tests.support.cli import run_cli


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("--log-format", "text", "demo", *args, env=env)


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused run (exit 2, nothing on stdout, no traceback)."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTOSCALER_MAX_HELD", "abc"),  # the proxy's settings
        ("AUTOSCALER_HOLD_TIMEOUT", "-1"),
        ("AUTOSCALER_INTERVAL", "often"),  # the loop's
        ("AUTOSCALER_QUERY_TIMEOUT", "soon"),  # the metrics'
        ("AUTOSCALER_QUEUE_NAME", "no spaces"),  # the queue's and its worker's
        ("AUTOSCALER_RETRY_CODES", "teapot"),
    ],
)
def test_a_bad_environment_variable_is_one_line_naming_it(variable: str, value: str) -> None:
    line = refused(demo(env={variable: value}))
    assert line.startswith("autoscaler demo: error: invalid environment variable: ")
    assert variable in line
    assert repr(value) in line


def test_a_functions_file_that_is_not_utf8_is_one_line_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "functions.yml"
    path.write_bytes('functions:\n  hello:\n    command: "echo caf\xe9"\n'.encode("latin-1"))
    line = refused(demo("--functions", str(path)))
    assert str(path) in line
    assert "not UTF-8" in line


def test_a_function_named_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "functions.yml"
    path.write_text(
        "functions:\n"
        "  hello:\n"
        '    command: "{python} {dir}/hello.py"\n'
        "  other:\n"
        '    command: "{python} {dir}/other.py"\n'
        "  hello:\n"
        '    command: "{python} {dir}/again.py"\n'
    )
    line = refused(demo("--functions", str(path)))
    assert "'hello' is given twice" in line
    assert "lines 2 and 6" in line


def test_a_label_given_twice_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "functions.yml"
    path.write_text(
        "functions:\n"
        "  hello:\n"
        '    command: "x"\n'
        "    labels:\n"
        '      com.openfaas.scale.min: "1"\n'
        '      com.openfaas.scale.min: "2"\n'
    )
    assert "lines 5 and 6" in refused(demo("--functions", str(path)))


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "functions.yml"
    path.write_text(
        'functions:\n  hello: &base\n    command: "x"\n  other:\n    <<: *base\n    command: "y"\n'
    )
    other = load(path).functions[1]
    assert (other.name, other.argv) == ("other", ("y",))


@pytest.mark.parametrize("value", ["5", "soon", "0s"])
def test_a_bad_zero_duration_names_the_flag_and_the_value(value: str) -> None:
    done = demo("--zero-duration", value)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        f"--zero-duration: {value!r} must be" in done.stderr
        or f"--zero-duration: not a Go duration: {value!r}" in done.stderr
    )
