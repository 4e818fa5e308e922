"""The functions file: what it accepts, and errors that name the function and the field."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from autoscaler.errors import ConfigError
from autoscaler.functionsfile import check_commands, load, load_builtin

READY = "com.openfaas.ready.http.path"
READY_RE = re.escape(READY)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "functions.yml"
    path.write_text(text)
    return path


def test_a_function_is_its_command_with_the_interpreter_and_file_directory_filled_in(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
functions:
  hello:
    command: "{python} '{dir}/hello world.py' --flag"
    labels: {com.openfaas.scale.min: 2, com.openfaas.scale.zero: true}
    environment: {RETRIES: 3}
    health_path: /healthz
""",
    )
    file = load(path)
    [fn] = file.functions
    assert file.namespace == "openfaas-fn"
    assert fn.argv == (sys.executable, f"{tmp_path}/hello world.py", "--flag")
    assert fn.labels == {"com.openfaas.scale.min": "2", "com.openfaas.scale.zero": "true"}
    assert fn.environment == {"RETRIES": "3"}
    assert fn.health_path == "/healthz"
    assert fn.initial_replicas == 2  # the min label, as a Deployment would start


def test_replicas_override_the_initial_count_and_health_defaults_to_root(tmp_path: Path) -> None:
    path = write(tmp_path, "namespace: dev\nfunctions:\n  sleepy: {command: ./run, replicas: 0}\n")
    file = load(path)
    assert file.namespace == "dev"
    assert (file.functions[0].initial_replicas, file.functions[0].health_path) == (0, "/")
    assert file.functions[0].annotations == {}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  hello: {labels: {}}", r"function 'hello': field command: Field required"),
        (
            "  hello: {command: run, lables: {}}",
            r"function 'hello': field lables: unknown field; allowed: command, labels, environment, "
            r"annotations, health_path, replicas",
        ),
        (
            "  hello: {command: run, health_path: healthz}",
            r"function 'hello': field health_path: must start with '/'",
        ),
        (
            "  hello: {command: run, environment: {PORT: 80}}",
            r"function 'hello': field environment: must not set PORT",
        ),
        (
            "  hello: {command: run, replicas: -1}",
            r"function 'hello': field replicas: .*greater than or equal to 0",
        ),
        ('  hello: {command: "\'unclosed"}', r"function 'hello': field command: cannot be split"),
        ("  hello: run", r"function 'hello': field settings: expected a mapping"),
        ("  Hello_World: {command: run}", r"function 'Hello_World': the name must be lower-case"),
        (
            "  hello: {command: run, labels: {com.openfaas.scale.min: many}}",
            r"function 'hello': field labels.com.openfaas.scale.min: 'many' is invalid, expected a whole",
        ),
        # Values YAML reads as something other than a scalar are refused, not written out as text.
        ("  hello: {command: run, labels: {x: }}", r"field labels: key 'x' has no value"),
        (
            "  hello: {command: run, labels: {x: {y: 1}}}",
            r"field labels: key 'x': \{'y': 1\} is not a single",
        ),
        ("  hello: {command: run, environment: {A: [1, 2]}}", r"field environment: key 'A': \[1, 2\] is not"),
        ("  hello: {command: run, labels: {1: x}}", r"field labels: key 1 is not text; quote it"),
        (
            "  hello: {command: run, replicas: true}",
            r"field replicas: Input should be a valid integer \(got True\)",
        ),
        (
            "  hello: {command: run, replicas: '2'}",
            r"field replicas: Input should be a valid integer \(got '2'\)",
        ),
    ],
)
def test_an_invalid_function_is_reported_by_name_and_field(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(write(tmp_path, "functions:\n" + body + "\n"))


def test_openfaas_ready_annotation_is_the_readiness_path_when_health_path_is_not_given(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """
functions:
  slow:
    command: run
    annotations:
      com.openfaas.ready.http.path: /ready
      com.openfaas.ready.http.periodSeconds: 2
""",
    )
    [fn] = load(path).functions
    assert fn.health_path == "/ready"
    assert fn.annotations == {
        "com.openfaas.ready.http.path": "/ready",
        "com.openfaas.ready.http.periodSeconds": "2",
    }


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ("{health_path: /a, annotations: {com.openfaas.health.http.path: /c}}", "/a"),
        ("{annotations: {com.openfaas.ready.http.path: /b, com.openfaas.health.http.path: /c}}", "/b"),
        ("{annotations: {com.openfaas.health.http.path: /c}}", "/c"),  # CE probes readiness there too
        ("{annotations: {com.openfaas.ready.http.initialDelay: 2s}}", "/"),
    ],
)
def test_the_readiness_path_is_health_path_then_the_ready_then_the_health_annotation_then_root(
    tmp_path: Path, settings: str, path: str
) -> None:
    text = "functions:\n  slow: " + settings.replace("{", "{command: run, ", 1) + "\n"
    assert load(write(tmp_path, text)).functions[0].health_path == path


def test_health_path_and_the_ready_annotation_may_both_name_the_same_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "functions:\n  slow:\n    command: run\n    health_path: /ready\n"
        "    annotations: {com.openfaas.ready.http.path: /ready}\n",
    )
    assert load(path).functions[0].health_path == "/ready"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            f"  hello: {{command: run, health_path: /healthz, annotations: {{{READY}: /ready}}}}",
            rf"function 'hello': fields health_path \('/healthz'\) and annotations\.{READY_RE} \('/ready'\) "
            "name two readiness paths",
        ),
        (
            f"  hello: {{command: run, annotations: {{{READY}: ready}}}}",
            rf"function 'hello': field annotations\.{READY_RE}: 'ready' must start with '/'",
        ),
        (
            f"  hello: {{command: run, labels: {{{READY}: /ready}}}}",
            rf"function 'hello': field labels\.{READY_RE}: a path belongs under annotations:",
        ),
        (
            "  hello: {command: run, labels: {com.openfaas.health.http.path: /healthz}}",
            r"function 'hello': field labels\.com\.openfaas\.health\.http\.path: a path belongs under",
        ),
        (
            "  hello: {command: run, annotations: {com.openfaas.health.http.path: healthz}}",
            r"function 'hello': field annotations\.com\.openfaas\.health\.http\.path: 'healthz' must start",
        ),
        (
            f"  hello: {{command: run, annotations: [{READY}]}}",
            r"function 'hello': field annotations: Input should be a valid dictionary",
        ),
    ],
)
def test_a_readiness_path_given_twice_or_wrongly_is_reported_by_function_and_fields(
    tmp_path: Path, body: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(write(tmp_path, "functions:\n" + body + "\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("functions: {}", r"must map at least one function"),
        ("- hello", r"expected a mapping with a 'functions:' key"),
        ("functions: [", r"not valid YAML: line 1, column 13: expected the node content"),
        (
            "functions:\n  hello:\n    labels: {a: [1\n",
            r"^[^\n]*: not valid YAML: line 4, column 1: expected ',' or ']', but got '<stream end>' "
            r"\(while parsing a flow sequence from line 3, column 17\)$",
        ),
        (
            "namespace: Dev_1\nfunctions: {hello: {command: run}}",
            r"field namespace: 'Dev_1' is not a namespace name",
        ),
    ],
)
def test_a_malformed_file_says_what_shape_is_expected(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load(write(tmp_path, text))


def test_a_command_that_cannot_be_run_from_here_is_named_with_its_function(tmp_path: Path) -> None:
    file = load(
        write(
            tmp_path, "functions:\n  ok: {command: '{python} x.py'}\n  bad: {command: 'no-such-program -v'}\n"
        )
    )
    with pytest.raises(ConfigError, match=r"function 'bad': field command: 'no-such-program' is neither"):
        check_commands(file)
    check_commands(load_builtin())  # the interpreter and the shipped scripts resolve


def test_a_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read functions file .*nope\.yml"):
        load(tmp_path / "nope.yml")


def test_the_builtin_file_has_a_warm_function_and_one_that_scales_to_zero() -> None:
    file = load_builtin()
    by_name = {fn.name: fn for fn in file.functions}
    assert set(by_name) == {"hello", "wordcount"}
    assert by_name["hello"].initial_replicas == 1
    assert by_name["wordcount"].labels["com.openfaas.scale.zero"] == "true"
    assert by_name["wordcount"].initial_replicas == 0
    assert all(Path(fn.argv[1]).is_file() for fn in file.functions)
