"""Settings, built once from flags and environment variables and passed down.

Every setting has an environment variable `AUTOSCALER_<NAME>` (upper case); a command-line flag
wins over the environment. Validation errors become ConfigError with the setting's name, so a bad
flag is reported as such and never as a stack trace.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from autoscaler.errors import ConfigError
from autoscaler.interfaces import DNS_LABEL
from policies.engine import ZERO_GRACE

DEFAULT_QUERIES = {
    "rps": "sum by (function_name) (rate(gateway_function_invocation_total[{window}]))",
    "inflight": "sum by (function_name) (gateway_function_invocation_inflight)",
    # OpenFaaS Pro's Prometheus scrapes the kubelet into pod_cpu_usage_seconds_total{function_name};
    # any other Prometheus that scrapes cAdvisor (kube-prometheus-stack, most clusters) has
    # container_cpu_usage_seconds_total, where faas-netes names the function's container after the
    # function (pkg/handlers/deploy.go): CONTAINER.NAMESPACE is its function_name. The pod-level
    # (container="") and pause ("POD") series are left out so that nothing counts twice.
    "cpu": "sum by (function_name) (rate(pod_cpu_usage_seconds_total[{window}])) * 1000"
    " or sum by (function_name) (label_join(rate(container_cpu_usage_seconds_total"
    '{container!="",container!="POD"}[{window}]), "function_name", ".", "container", "namespace")) * 1000',
    "started": "sum by (function_name) (gateway_function_invocation_started)",
    # The gateway exports a replica gauge for every function it knows, called or not (openfaas/faas
    # gateway/metrics/exporter.go); so does our proxy. A fresh series proves the source is up and
    # scraped and knows the function, which turns "absent from the counters" into "no calls".
    "source": "max by (function_name) (gateway_service_count)",
    # OpenFaaS Pro's queue-worker metric, which ours exports too: calls not yet acknowledged (waiting,
    # being invoked, waiting for a retry). `max`, because every worker replica reports the whole stream.
    "pending": "max by (function_name) (queue_worker_pending_messages)",
}


# An annotation key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
_ANNOTATION_KEY = re.compile(
    r"(?:[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)


class _Base(BaseSettings):
    # No setting is infinite or NaN: `--interval inf` ticked once and never again, healthy all along.
    model_config = SettingsConfigDict(
        env_prefix="AUTOSCALER_", extra="forbid", frozen=True, allow_inf_nan=False
    )


class MetricsSettings(_Base):
    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus base URL, e.g. http://prometheus.openfaas:9090 "
        "(unset: read load from the in-process proxy)",
    )
    query_timeout: float = Field(
        default=5.0, gt=0, description="seconds before a Prometheus query counts as failed"
    )
    rate_window: str = Field(default="1m", description="range used by rate() in the default queries")
    query_rps: str = Field(
        default=DEFAULT_QUERIES["rps"], description="PromQL for completed req/s by function_name"
    )
    query_inflight: str = Field(
        default=DEFAULT_QUERIES["inflight"], description="PromQL for in-flight requests"
    )
    query_cpu: str = Field(
        default=DEFAULT_QUERIES["cpu"], description="PromQL for CPU millicores by function_name"
    )
    query_started: str = Field(
        default=DEFAULT_QUERIES["started"], description="PromQL for the started-invocations counter"
    )
    query_source: str = Field(
        default=DEFAULT_QUERIES["source"],
        description="PromQL giving a fresh series by function_name for every function the metric source "
        "knows (proof it is up), folded into the started query so it costs none of its own: such a "
        "function absent from the rps, in-flight and started answers had no calls; empty: absence is "
        "never read as idleness",
    )
    query_pending: str = Field(
        default=DEFAULT_QUERIES["pending"],
        description="PromQL for pending asynchronous calls by function_name (what type=queue scales on)",
    )
    stale_after: float = Field(
        default=60.0, gt=0, description="seconds after which a sample counts as stale (missing)"
    )


class ProviderSettings(_Base):
    namespaces: Annotated[list[str], NoDecode] = Field(
        default=["openfaas-fn"], description="namespaces whose Deployments are functions"
    )
    kubeconfig: str | None = Field(
        default=None, description="kubeconfig path (default: in-cluster, then ~/.kube/config)"
    )
    api_timeout: float = Field(
        default=5.0, gt=0, description="seconds per Kubernetes API request (keep below the lease slack)"
    )
    start_timeout: float = Field(
        default=120.0,
        gt=0,
        description="seconds the first listing of every followed namespace may take before start-up fails "
        "(controller-runtime's cache-sync timeout; 50,000 functions list in about a minute)",
    )
    namespaces_annotated: str | None = Field(
        default=None,
        description="also every namespace with this annotation, KEY=VALUE (OpenFaaS: openfaas=1), "
        "followed as namespaces come and go",
    )
    api_qps: float = Field(
        default=20.0, ge=0, description="writes per second to the Kubernetes API past the burst (0: no limit)"
    )
    api_burst: int = Field(default=30, ge=1, description="writes to the Kubernetes API at once, then api_qps")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("namespaces")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not DNS_LABEL.fullmatch(name)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))}: a namespace is a DNS label (lower-case letters, digits "
                "and '-', at most 63), e.g. openfaas-fn"
            )
        return value

    @field_validator("namespaces_annotated")
    @classmethod
    def _annotation(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key, sep, wanted = value.strip().partition("=")
        if not sep or not _ANNOTATION_KEY.fullmatch(key):
            raise ValueError(
                "must be KEY=VALUE with KEY an annotation name, e.g. openfaas=1 "
                "(VALUE * follows the KEY with any value, as OpenFaaS does)"
            )
        return f"{key}={wanted}"


class ControllerSettings(_Base):
    interval: float = Field(default=2.0, gt=0, description="seconds between ticks of the control loop")
    dry_run: bool = Field(default=False, description="log decisions without patching replicas")
    admin_port: int = Field(default=8081, ge=0, le=65535, description="port for /healthz, /readyz, /metrics")
    admin_host: str = Field(default="0.0.0.0", description="address the admin server binds")
    leader_election: bool = Field(
        default=False, description="take a coordination.k8s.io Lease before patching"
    )
    lease_name: str = Field(default="autoscaler-controller", description="Lease object name")
    lease_namespace: str = Field(default="openfaas", description="namespace of the Lease")


class ProxySettings(_Base):
    host: str = Field(default="0.0.0.0", description="address the proxy binds")
    port: int = Field(default=8080, ge=0, le=65535, description="port for /function/NAME routes")
    admin_port: int = Field(default=8082, ge=0, le=65535, description="port for /healthz, /readyz, /metrics")
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="worker processes serving --port together (SO_REUSEPORT), each holding its own cold "
        "requests; the admin port sums their metrics. 1: one process, no supervisor",
    )
    default_namespace: str = Field(default="openfaas-fn", description="namespace when a route has none")
    hold_timeout: float = Field(
        default=60.0, gt=0, description="seconds a request may wait for a cold start (504)"
    )
    max_held: int = Field(default=1000, gt=0, description="held requests per function before 429")
    max_body: int = Field(default=10 * 1024 * 1024, gt=0, description="request body limit in bytes (413)")
    upstream_timeout: float = Field(default=300.0, gt=0, description="seconds for an upstream response")
    shutdown_grace: float = Field(default=30.0, ge=0, description="seconds to finish requests on SIGTERM")
    retry_after: int = Field(
        default=2, ge=0, description="seconds a 429 of a full hold asks callers to wait (Retry-After)"
    )
    upstream_connections: int = Field(
        default=100,
        gt=0,
        description="connections per function replica at most, opened as earlier ones prove themselves; "
        "more requests take the first that frees, in arrival order",
    )
    upstream_idle_timeout: float = Field(
        default=15.0, gt=0, description="seconds an unused kept-alive upstream connection stays open"
    )
    provider_url: str | None = Field(
        default=None,
        description="behind an OpenFaaS gateway: the real provider (faas-netes) that every path other "
        "than /function/ is passed to, e.g. http://faas-netes.openfaas:8081 (unset: those paths are 404)",
    )
    gateway_metrics: bool = Field(
        default=True,
        description="export invocation metrics under the gateway's names (gateway_function_*); turn off "
        "behind an OpenFaaS gateway, which exports them itself, to get autoscaler_proxy_* names instead",
    )
    # The controller waits ZERO_GRACE (30 s) after the last activity before any scale to zero; marks
    # at most half that apart keep a busy function's last-active time inside it (invariant 2).
    mark_interval: float = Field(
        default=5.0,
        gt=0,
        le=ZERO_GRACE / 2,
        description="seconds between last-active marks of a busy scale-to-zero function (an API write "
        "each); at most 15, half the controller's 30 s grace before a scale to zero",
    )
    # Client-side limits, as an edge proxy sets them (nginx, Envoy, Go's http.Server).
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds a client has to send a whole request head, from its connection or its "
        "first byte after a response (nginx client_header_timeout); then 408 and closed",
    )
    keepalive_timeout: float = Field(
        default=75.0, gt=0, description="seconds an idle kept-alive client connection stays open (nginx's 75)"
    )
    max_head_size: int = Field(
        default=64 * 1024,
        ge=1024,
        description="bytes of request line plus headers at most (Envoy 60 KiB, nginx 32 KB); 431 and "
        "closed above",
    )
    body_timeout: float = Field(
        default=60.0,
        gt=0,
        description="seconds between two pieces of a request body (nginx client_body_timeout); then the "
        "client is cut and what it sent of the body freed",
    )
    send_timeout: float = Field(
        default=60.0,
        gt=0,
        description="seconds a response may wait for a client that reads none of it (nginx send_timeout); "
        "then the client is cut and the function's connection dropped",
    )
    max_buffered: int = Field(
        default=128 * 1024 * 1024,
        gt=0,
        description="request body bytes buffered for one function at once, counted before a body is "
        "read; 429 with Retry-After above",
    )
    max_buffered_total: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="request body bytes buffered for all functions together (half the manifest's 512 MiB "
        "memory limit); 429 with Retry-After above",
    )

    @field_validator("provider_url")
    @classmethod
    def _provider_url(cls, value: str | None) -> str | None:
        # Every non-function request goes to this one origin, never to a host named by a request
        # (invariant 4), so it must be a plain http(s) origin with at most a base path.
        if value is None or not value.strip():
            return None  # unset (an empty AUTOSCALER_PROVIDER_URL too): other paths are 404
        import yarl  # only to check a URL given, not to build the parser

        url = yarl.URL(value.strip())
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                "expected an http:// or https:// URL with a host, e.g. http://autoscaler-faas-netes.openfaas:8081"
            )
        if url.user is not None or url.password is not None or url.query_string or url.fragment:
            raise ValueError("expected no user, password, query or fragment in the provider URL")
        return str(url)

    @field_validator("max_buffered_total")
    @classmethod
    def _buffers_fit_a_body(cls, value: int, info: ValidationInfo) -> int:
        # A body the buffers could never take would be refused with 429 for ever: say so at start-up.
        body, per_function = info.data.get("max_body"), info.data.get("max_buffered")
        if body is not None and per_function is not None and body > min(per_function, value):
            raise ValueError(
                f"--max-body ({body}) must fit in --max-buffered ({per_function}) and "
                f"--max-buffered-total ({value})"
            )
        return value


def build(model: type[_Base], overrides: dict[str, Any]) -> Any:
    """Build a settings model from the environment plus flag overrides; errors become ConfigError."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return model(**given)
    except ValidationError as e:
        problems = [
            f"--{name.replace('_', '-')} (env AUTOSCALER_{name.upper()}): {why}" for name, why in _problems(e)
        ]
        raise ConfigError("invalid settings: " + "; ".join(problems)) from e


def check_environment(*models: type[_Base]) -> None:
    """Validate the `AUTOSCALER_*` variables that `models` read, for a command that builds them itself
    (the demo): a bad one is a ConfigError naming the variable, never a stack trace later."""
    for model in models:
        try:
            model()
        except ValidationError as e:
            problems = [f"AUTOSCALER_{name.upper()}: {why}" for name, why in _problems(e)]
            raise ConfigError(
                "invalid environment variable: " + "; ".join(problems) + "; fix or unset it"
            ) from e


def _problems(e: ValidationError) -> list[tuple[str, str]]:
    """(setting name, what is wrong with the value given) for each error of a settings model."""
    problems = []
    for err in e.errors():
        name = ".".join(str(part) for part in err["loc"]) or "settings"
        problems.append((name, f"{err['msg']} (got {err.get('input')!r})"))
    return problems


# A stream name and subject token: no dots, wildcards, spaces or path separators (JetStream's rules).
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class QueueSettings(_Base):
    """Where asynchronous calls are queued: the NATS server and the JetStream stream (the queue)."""

    nats_url: str | None = Field(
        default=None,
        description="NATS server(s) with JetStream, e.g. nats://nats.openfaas:4222 (comma-separated for "
        "a cluster); unset: no /async-function/ route on the proxy",
    )
    queue_name: str = Field(
        default="faas-request",
        description="JetStream stream holding the queued calls (one subject per function under it); "
        "dead letters go to the stream QUEUE-dead",
    )
    async_max_body: int = Field(
        default=1024 * 1024, gt=0, description="body limit of an asynchronous call in bytes (413)"
    )
    publish_timeout: float = Field(
        default=5.0, gt=0, description="seconds to wait for JetStream to acknowledge a queued call (503)"
    )

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        import yarl  # only to check a URL given, not to build the parser

        for part in value.split(","):
            url = yarl.URL(part.strip())
            if url.scheme not in ("nats", "tls", "ws", "wss") or not url.host:
                raise ValueError("expected nats://HOST:PORT (or tls://, ws://, wss://), comma-separated")
        return value.strip()

    @field_validator("queue_name")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        if not _QUEUE_NAME.fullmatch(value):
            raise ValueError("expected letters, digits, '-' and '_' only (at most 64), e.g. faas-request")
        return value

    def servers(self) -> list[str]:
        return [part.strip() for part in (self.nats_url or "").split(",") if part.strip()]


class QueueWorkerSettings(_Base):
    """How `autoscaler queue-worker` invokes queued calls and delivers their callbacks."""

    proxy_url: str = Field(
        default="http://autoscaler-proxy.openfaas:8080",
        description="the wake-up proxy calls are invoked through (its /function/ route), so a function "
        "at zero is woken, not failed",
    )
    max_inflight: int = Field(default=1, gt=0, description="concurrent calls per function (OpenFaaS default)")
    adaptive_concurrency: bool = Field(
        default=True,
        description="start each function at one call at a time, add one after a round of successes, "
        "halve on repeated 429s, up to --max-inflight (off: always --max-inflight)",
    )
    ack_wait: float = Field(
        default=30.0,
        gt=0,
        description="seconds JetStream waits for an ack before redelivering; a running call extends it "
        "every third of this (a killed worker's calls come back after it)",
    )
    invoke_timeout: float = Field(
        default=360.0, gt=0, description="seconds for one synchronous invocation through the proxy"
    )
    retry_attempts: int = Field(default=10, gt=0, description="attempts per call, the first included")
    retry_codes: str = Field(
        default="429,502,500,504,408", description="function statuses that are retried, comma-separated"
    )
    retry_min_wait: float = Field(default=10.0, ge=0, description="seconds before the first retry")
    retry_max_wait: float = Field(default=120.0, ge=0, description="longest wait between retries")
    callback_attempts: int = Field(default=5, gt=0, description="attempts to deliver one callback")
    callback_min_wait: float = Field(default=1.0, ge=0, description="seconds before a callback's retry")
    callback_max_wait: float = Field(default=30.0, ge=0, description="longest wait between callback tries")
    callback_timeout: float = Field(default=10.0, gt=0, description="seconds per callback request")
    discover_interval: float = Field(
        default=2.0, gt=0, description="seconds between looks for functions with queued calls"
    )
    admin_port: int = Field(default=8083, ge=0, le=65535, description="port for /healthz, /readyz, /metrics")
    admin_host: str = Field(default="0.0.0.0", description="address the admin server binds")
    shutdown_grace: float = Field(
        default=30.0, ge=0, description="seconds to finish running calls on SIGTERM (the rest is redelivered)"
    )

    @field_validator("retry_codes")
    @classmethod
    def _codes(cls, value: str) -> str:
        parse_codes(value)
        return value

    def codes(self) -> frozenset[int]:
        return parse_codes(self.retry_codes)

    @field_validator("proxy_url")
    @classmethod
    def _proxy_url(cls, value: str) -> str:
        import yarl  # only to check a URL given, not to build the parser

        url = yarl.URL(value.strip())
        if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
            raise ValueError("expected http://HOST:PORT of the wake-up proxy, e.g. http://127.0.0.1:8080")
        return str(url).rstrip("/")


def parse_codes(text: str) -> frozenset[int]:
    """`429,502,500` into status codes; ValueError naming the bad part."""
    codes = set()
    for part in text.split(","):
        if not part.strip():
            continue
        if not part.strip().isdigit() or not 100 <= int(part) <= 599:
            raise ValueError(f"expected comma-separated HTTP status codes 100-599 (got {part.strip()!r})")
        codes.add(int(part))
    return frozenset(codes)
