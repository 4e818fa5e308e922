"""The functions file: which functions the local provider runs, and how.

A single machine has no Deployments to discover, so the local provider is told its functions by a
YAML file in the spirit of OpenFaaS's `stack.yml`:

    namespace: openfaas-fn          # optional
    functions:
      hello:
        command: "{python} {dir}/functions/hello.py"
        labels: {com.openfaas.scale.min: "1"}
        environment: {GREETING: "hi"}
        annotations: {com.openfaas.ready.http.path: /ready}   # optional, as in stack.yml
        replicas: 1                 # optional, replicas at start (default: the min label, else 1)

Each replica is `command` run as a process (split like a shell would, never through a shell, so
signals reach it) with `PORT` set. In the command, `{python}` is the interpreter running the add-on
and `{dir}` is the directory holding the functions file. A replica is ready once its readiness path
answers as a Kubernetes httpGet probe must (2xx or 3xx): `health_path` if given, else OpenFaaS's
annotation `com.openfaas.ready.http.path` (OpenFaaS Pro makes it the readiness probe's path), else
`com.openfaas.health.http.path` (faas-netes CE gives it to both probes), else "/". `health_path` and
the ready annotation given and different is an error, and so is either key under `labels:`: a
Kubernetes label value cannot hold a '/', so the function would not deploy. Every validation error names
the function and the field, and is raised as ConfigError (the CLI exits 2 on it); so are a file that
is not UTF-8, a key given twice in one mapping (YAML would keep the last function of a name, silently),
a label, variable or annotation whose value is not a single scalar, and YAML that cannot be parsed
(on one line, with where). `check_commands` tells whether each command's program can be run here.
OpenFaaS's readiness-probe timing annotations become the function's `ReadinessProbe`.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from autoscaler.errors import ConfigError, SpecError
from autoscaler.interfaces import DNS_LABEL
from autoscaler.spec import parse_duration, parse_labels

DEFAULT_NAMESPACE = "openfaas-fn"
DEFAULT_READY_PATH = "/"
READY_PATH_ANNOTATION = "com.openfaas.ready.http.path"  # OpenFaaS Pro's custom readiness path
# faas-netes CE (pkg/k8s/probes.go) gives this path to both probes, so it gates readiness there too.
HEALTH_PATH_ANNOTATION = "com.openfaas.health.http.path"
BUILTIN_FILE = Path(__file__).parent / "data" / "functions.yml"

# DNS-1123 label, as for a Deployment name: the function name is also its route.


def _stringify(value: Any) -> Any:
    """YAML reads `1` and `true` as numbers and booleans; labels and env vars are strings.

    Only those scalars are turned into text. A key that is not text, or a value that is a mapping, a
    list or empty (`key:` alone is YAML's null), is refused: written out as 'None' or "{'a': 1}" it
    would reach the function, or fail later with a message about a value nobody wrote.
    """
    if not isinstance(value, Mapping):
        return value
    text = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"key {key!r} is not text; quote it")
        if item is None:
            raise ValueError(
                f"key {key!r} has no value; give one (in quotes for an empty one) or remove the key"
            )
        if isinstance(item, bool):
            text[key] = str(item).lower()
        elif isinstance(item, str | int | float):
            text[key] = str(item)
        else:
            raise ValueError(
                f"key {key!r}: {item!r} is not a single value; give text, a number or true/false"
            )
    return text


class FunctionDef(BaseModel):
    """One function of the file, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    health_path: str | None = None
    replicas: StrictInt | None = Field(default=None, ge=0, le=100)  # `true` is not 1 replica

    _coerce = field_validator("labels", "environment", "annotations", mode="before")(_stringify)

    @field_validator("command")
    @classmethod
    def _splits(cls, value: str) -> str:
        try:
            parts = shlex.split(value)
        except ValueError as e:
            raise ValueError(f"cannot be split into arguments ({e})") from e
        if not parts:
            raise ValueError("is empty")
        return value

    @field_validator("health_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with '/', e.g. /healthz")
        return value

    @field_validator("environment")
    @classmethod
    def _no_port(cls, value: dict[str, str]) -> dict[str, str]:
        if "PORT" in value:
            raise ValueError("must not set PORT: the provider picks a free port for every replica")
        return value


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = DEFAULT_NAMESPACE
    functions: dict[str, FunctionDef]

    @field_validator("namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not DNS_LABEL.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a namespace name: lower-case letters, digits and '-' (at most 63)"
            )
        return value


# OpenFaaS's readiness-probe timing (docs.openfaas.com/reference/workloads; OpenFaaS Pro writes them
# into the probe): seconds as a whole number ("2") or, as OpenFaaS's own examples also write, a Go
# duration ("1s"). faas-netes CE reads only the health probe's initial delay, as a Go duration
# (pkg/k8s/probes.go), and gives it to the readiness probe too.
PROBE_PREFIX = "com.openfaas.ready.http."
PROBE_DELAY = PROBE_PREFIX + "initialDelaySeconds"
PROBE_PERIOD = PROBE_PREFIX + "periodSeconds"
PROBE_TIMEOUT = PROBE_PREFIX + "timeoutSeconds"
PROBE_SUCCESSES = PROBE_PREFIX + "successThreshold"
PROBE_FAILURES = PROBE_PREFIX + "failureThreshold"
HEALTH_DELAY_ANNOTATION = "com.openfaas.health.http.initialDelay"


@dataclass(frozen=True, slots=True)
class ReadinessProbe:
    """When and how often a replica's readiness path is probed; None: the local provider's own pace.

    With none of the timing annotations, a replica is probed every few milliseconds until it first
    passes, and not again: cold starts stay short. With any of them, probing follows kubelet: after
    `initial_delay`, every `period`, ready after `success_threshold` passes in a row, and out of the
    endpoints again after `failure_threshold` failures in a row; what is not given is the OpenFaaS
    chart's (every 2 s, a 1 s timeout, 1 pass, 3 failures).
    """

    initial_delay: float = 0.0
    period: float | None = None
    timeout: float | None = None
    success_threshold: int = 1
    failure_threshold: int | None = None  # None: not probed again once ready


@dataclass(frozen=True, slots=True)
class LocalFunction:
    """A function ready to run: its argv resolved, its initial replicas decided."""

    name: str
    argv: tuple[str, ...]
    labels: Mapping[str, str]
    environment: Mapping[str, str]
    health_path: str  # the readiness path: health_path, else the ready annotation, else "/"
    initial_replicas: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    probe: ReadinessProbe = field(default_factory=ReadinessProbe)


@dataclass(frozen=True, slots=True)
class FunctionsFile:
    """The whole file: a namespace and its functions, in file order."""

    namespace: str
    functions: tuple[LocalFunction, ...]
    source: str


def _initial_replicas(fn: FunctionDef) -> int:
    if fn.replicas is not None:
        return fn.replicas
    return parse_labels(fn.labels).min_replicas


def _ready_path(fn: FunctionDef, *, where: str) -> str:
    """The path a replica's readiness is probed on: `health_path`, else OpenFaaS's ready annotation,
    else its health annotation (which faas-netes CE gives the readiness probe too), else "/"."""
    for key in (READY_PATH_ANNOTATION, HEALTH_PATH_ANNOTATION):
        if key in fn.labels:
            raise ConfigError(
                f"{where}: field labels.{key}: a path belongs under annotations:, as OpenFaaS reads "
                "it (a Kubernetes label value cannot hold a '/'); move it there"
            )
        value = fn.annotations.get(key)
        if value is not None and not value.startswith("/"):
            raise ConfigError(f"{where}: field annotations.{key}: {value!r} must start with '/', e.g. /ready")
    annotated = fn.annotations.get(READY_PATH_ANNOTATION)
    if fn.health_path is not None and annotated is not None and annotated != fn.health_path:
        raise ConfigError(
            f"{where}: fields health_path ({fn.health_path!r}) and annotations.{READY_PATH_ANNOTATION} "
            f"({annotated!r}) name two readiness paths; keep one"
        )
    return fn.health_path or annotated or fn.annotations.get(HEALTH_PATH_ANNOTATION) or DEFAULT_READY_PATH


def parse(data: Any, *, source: str, base_dir: Path) -> FunctionsFile:
    """Validate already-loaded YAML; raise ConfigError naming the function and field at fault."""
    if not isinstance(data, Mapping) or "functions" not in data:
        raise ConfigError(
            f"{source}: expected a mapping with a 'functions:' key, e.g. functions: {{hello: ...}}"
        )
    if not isinstance(data["functions"], Mapping) or not data["functions"]:
        raise ConfigError(f"{source}: 'functions:' must map at least one function name to its settings")
    try:
        model = _File.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: " + "; ".join(_describe(err) for err in e.errors())) from e
    functions = []
    for name, fn in model.functions.items():
        if not DNS_LABEL.fullmatch(name):
            raise ConfigError(
                f"{source}: function {name!r}: the name must be lower-case letters, digits and '-' "
                "(at most 63), since it is also the route /function/NAME"
            )
        try:
            parse_labels(fn.labels)
        except SpecError as e:
            raise ConfigError(
                f"{source}: function {name!r}: field labels.{e.label}: "
                f"{e.value!r} is invalid, expected {e.allowed}"
            ) from e
        argv = tuple(
            part.replace("{python}", sys.executable).replace("{dir}", str(base_dir))
            for part in shlex.split(fn.command)
        )
        functions.append(
            LocalFunction(
                name=name,
                argv=argv,
                labels=dict(fn.labels),
                environment=dict(fn.environment),
                health_path=_ready_path(fn, where=f"{source}: function {name!r}"),
                initial_replicas=_initial_replicas(fn),
                annotations=dict(fn.annotations),
                probe=readiness_probe(fn.annotations, where=f"{source}: function {name!r}"),
            )
        )
    return FunctionsFile(namespace=model.namespace, functions=tuple(functions), source=source)


def readiness_probe(annotations: Mapping[str, str], *, where: str) -> ReadinessProbe:
    """The probe timing the annotations give; ConfigError naming the annotation that is wrong."""

    def seconds(key: str) -> float | None:
        text = annotations.get(key)
        if text is None:
            return None
        try:
            return float(int(text)) if text.strip().isdigit() else parse_duration(text)
        except ValueError:
            raise ConfigError(
                f'{where}: field annotations.{key}: {text!r} is not a number of seconds (e.g. "2" or "2s")'
            ) from None

    def count(key: str) -> int | None:
        text = annotations.get(key)
        if text is None:
            return None
        if not text.strip().isdigit() or int(text) < 1:
            raise ConfigError(
                f"{where}: field annotations.{key}: {text!r} is not a whole number of at least 1"
            )
        return int(text)

    delay = seconds(PROBE_DELAY)
    if delay is None:
        delay = seconds(HEALTH_DELAY_ANNOTATION)
    period, timeout = seconds(PROBE_PERIOD), seconds(PROBE_TIMEOUT)
    for key, value in ((PROBE_PERIOD, period), (PROBE_TIMEOUT, timeout)):
        if value is not None and value <= 0:
            raise ConfigError(f"{where}: field annotations.{key}: {annotations[key]!r} must be longer than 0")
    successes, failures = count(PROBE_SUCCESSES), count(PROBE_FAILURES)
    if delay is None and period is None and timeout is None and successes is None and failures is None:
        return ReadinessProbe()
    return ReadinessProbe(
        initial_delay=delay or 0.0,
        # What an annotation leaves out is the chart's (faas-netes values.yaml, readinessProbe).
        period=period if period is not None else 2.0,
        timeout=timeout if timeout is not None else 1.0,
        success_threshold=successes or 1,
        failure_threshold=failures or 3,
    )


def check_commands(file: FunctionsFile) -> None:
    """ConfigError naming the first function whose program cannot be run from here.

    Apart from `parse`, since a file may be checked on a machine other than the one that runs it; the
    demo calls it before starting, where a missing program otherwise restarts with a back-off while
    every request to the function waits out the hold timeout.
    """
    for fn in file.functions:
        if shutil.which(fn.argv[0]) is None:
            raise ConfigError(
                f"{file.source}: function {fn.name!r}: field command: {fn.argv[0]!r} is neither an "
                "executable file nor a program on PATH; give its path (or {python} and a script)"
            )


def _describe(err: Any) -> str:
    loc = [str(part) for part in err["loc"]]
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"].endswith(("_type", "_parsing")) and isinstance(err.get("input"), str | int | float):
        message += f" (got {err['input']!r})"  # e.g. `replicas: true`, which is not 1 replica
    if len(loc) >= 2 and loc[0] == "functions":
        field = ".".join(loc[2:]) or "settings"
        if err["type"] == "extra_forbidden":
            message = (
                "unknown field; allowed: command, labels, environment, annotations, health_path, replicas"
            )
        elif err["type"] == "model_type":
            message = "expected a mapping with at least 'command:'"
        return f"function {loc[1]!r}: field {field}: {message}"
    return f"field {'.'.join(loc) or 'file'}: {message}"


class _DuplicateKey(Exception):
    def __init__(self, key: object, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps the
    last one silently, so a second function of the same name would replace the first unseen."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges on purpose: its keys may be overridden
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:
                continue  # an unhashable key: the constructor reports it as YAML's own error
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(e: yaml.MarkedYAMLError) -> str:
    """PyYAML's error on one line: what is wrong and where, without its excerpt of the text."""

    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    text = f"{at(e.problem_mark)}: " if e.problem_mark is not None else ""
    text += e.problem or "cannot be parsed"
    if e.context:
        text += f" ({e.context}" + (f" from {at(e.context_mark)})" if e.context_mark is not None else ")")
    return text


def load(path: str | Path) -> FunctionsFile:
    """Read and validate a functions file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read functions file {file}: {e.strerror or e}; check --functions") from e
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{file}: not UTF-8 text (byte {e.start} is {e.object[e.start : e.start + 1]!r}); "
            "save the functions file as UTF-8"
        ) from e
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except _DuplicateKey as e:
        raise ConfigError(
            f"{file}: {e.key!r} is given twice in one mapping, at lines {e.first} and {e.second} (the "
            "second would silently replace the first); give every function, label and variable its own name"
        ) from e
    except yaml.MarkedYAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {_yaml_problem(e)}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {e}") from e
    return parse(data, source=str(file), base_dir=file.resolve().parent)


def load_builtin() -> FunctionsFile:
    """The two example functions shipped with the package (used by `autoscaler demo`)."""
    return load(BUILTIN_FILE)
