"""`autoscaler explain`: the loop's decision for one function, explained, without touching anything.

Offline it takes labels and a load on the command line; with a function name it reads the function from
the cluster and its load from Prometheus, then runs the very same `decide` the loop runs. Against a
cluster it also says where each label was read (the pod template, where OpenFaaS writes them, or the
Deployment's own metadata), which labels the two disagree on, and for a function made from a
Function resource (the CRD) that owner and its spec.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import fields as dataclass_fields
from typing import Any

from autoscaler.commands._flags import GoDuration, add_settings_flags, command, number, settings
from autoscaler.config import MetricsSettings, ProviderSettings
from autoscaler.errors import ConfigError, SpecError
from autoscaler.spec import format_duration, knob_notes, parse_labels, unknown_labels, unsupported
from policies.engine import FunctionState, decide
from policies.model import Decision, Load, ScaleType, ScalingSpec


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--label {pair!r} is not KEY=VALUE (e.g. --label com.openfaas.scale.max=10)")
        labels[key.strip()] = value.strip()
    return labels


def _load_for(spec: ScalingSpec, value: float, *, active: bool) -> Load:
    inflight = value if spec.type is ScaleType.CAPACITY else 0.0
    pending = value if spec.type is ScaleType.QUEUE else 0.0
    return Load(
        rps=value, inflight=inflight, cpu=value, started_total=1.0 if active else 0.0, pending=pending
    )


def explain_offline(
    *, labels: dict[str, str], load: float | None, replicas: int, idle: float | None, now: float
) -> tuple[ScalingSpec, Decision]:
    """Decide once for a function described on the command line. Raises SpecError on bad labels."""
    spec = parse_labels(labels)
    state = FunctionState(last_active=now - (idle or 0.0), last_started_total=0.0)
    active = idle is None and load is not None and load > 0
    observed = None if load is None else _load_for(spec, load, active=active)
    return spec, decide(spec=spec, load=observed, current=replicas, state=state, now=now)


# Seconds `explain NAME` waits for its first listing unless --start-timeout says otherwise (run's 120 s
# suits a controller that waits for its cluster, not a command a user waits on).
EXPLAIN_START_TIMEOUT = 10.0

_SOURCES = {"template": "pod template", "deployment": "Deployment", "both": "pod template and Deployment"}
_SPECIAL = ("spec", "labels", "label_sources", "conflicts", "owner_spec", "behaviour", "unknown_labels")
_DURATIONS = ("zero_duration", "down_window", "scale_down_delay", "burst_window")


def _text_line(key: str, value: Any) -> str:
    """One line of the text output; `valid` and a missing load in words (the JSON keeps the values)."""
    if key == "valid":
        return "decided from load: " + ("yes" if value else "no, it keeps its current replicas")
    if key == "load" and value is None:
        return "load: no data"
    return f"{key}: {value}"


def _render(result: dict[str, Any], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(result)
    lines = [_text_line(key, value) for key, value in result.items() if key not in _SPECIAL]
    if "labels" in result:
        sources = result.get("label_sources") or {}
        lines.insert(
            0,
            "labels: "
            + ", ".join(
                f"{k}={v}" + (f" ({_SOURCES.get(sources[k], sources[k])})" if k in sources else "")
                for k, v in sorted(result["labels"].items())
            ),
        )
    lines.extend(f"conflict: {conflict}" for conflict in result.get("conflicts") or ())
    lines.extend(f"behaviour: {note}" for note in result.get("behaviour") or ())
    lines.extend(f"warning: {note}" for note in result.get("unknown_labels") or ())
    if result.get("owner_spec") is not None:
        lines.append("owner spec: " + json.dumps(result["owner_spec"], sort_keys=True))
    if result.get("spec"):
        spec = result["spec"]
        lines.append(
            "spec: "
            + ", ".join(f"{k}={format_duration(v) if k in _DURATIONS else v}" for k, v in spec.items())
        )
    return "\n".join(lines)


def _result(
    spec: ScalingSpec, decision: Decision, labels: Mapping[str, str], /, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "desired": decision.desired,
        "current": decision.current,
        "reason": decision.message,
        "code": decision.reason.value,
        "valid": decision.valid,
    }
    note = unsupported(spec)
    if note is not None:
        body["warning"] = note  # what the loop's UnsupportedScalingType Event says
    notes = knob_notes(spec)
    if notes:
        body["behaviour"] = notes  # what the knobs that are set do over time (one decision cannot show it)
    unread = unknown_labels(labels)
    if unread:
        body["unknown_labels"] = unread  # what the loop's UnknownScalingLabel Events say
    body.update(extra)
    # The settings the labels gave (what the spec is made from; not what it derives, e.g. its words).
    fields = {f.name: getattr(spec, f.name) for f in dataclass_fields(spec) if f.init}
    if not fields["type_label"]:
        del fields["type_label"]  # only a custom type keeps the label as written
    body["spec"] = {k: (v.value if hasattr(v, "value") else v) for k, v in fields.items()}
    return body


async def _explain_live(args: argparse.Namespace) -> dict[str, Any]:
    metrics: MetricsSettings = settings(args, MetricsSettings)
    providers: ProviderSettings = settings(args, ProviderSettings)
    if not metrics.prometheus_url:
        raise ConfigError(
            "explain NAME needs --prometheus-url (or AUTOSCALER_PROMETHEUS_URL) to read the load"
        )
    from autoscaler.interfaces import FunctionRef
    from autoscaler.metrics import PrometheusReader  # the cluster's clients: once the flags are good
    from autoscaler.providers.kubernetes import KubernetesProvider

    ref = FunctionRef.parse(args.function, default_namespace=providers.namespaces[0])
    update: dict[str, Any] = {"namespaces": [ref.namespace], "namespaces_annotated": None}
    if "start_timeout" not in providers.model_fields_set:
        update["start_timeout"] = EXPLAIN_START_TIMEOUT  # one answer is wanted, not a controller's patience
    providers = providers.model_copy(update=update)
    provider = await KubernetesProvider.create(settings=providers)
    reader = PrometheusReader(settings=metrics)
    try:
        await provider.start()
        info = provider.get(ref)
        if info is None:
            raise ConfigError(
                f"no function {ref.key}: no Deployment {ref.name!r} in namespace {ref.namespace!r} with "
                "a faas_function or com.openfaas.scale.* label (on it or its pod template) or owned by "
                "a Function"
            )
        snapshot = await reader.read()
    finally:
        await reader.close()
        await provider.close()
    load = snapshot.loads.get(ref.key)
    now = time.time()
    where: dict[str, Any] = {"labels": dict(info.labels), "label_sources": dict(info.label_sources)}
    if info.conflicts:
        where["conflicts"] = list(info.conflicts)
    if info.owner is not None:
        where["owner"] = info.owner
        where["owner_spec"] = None if info.owner_spec is None else dict(info.owner_spec)
    try:
        spec = parse_labels(info.labels)
    except SpecError as e:
        return {"function": ref.key, **where, "error": str(e), "current": info.replicas}
    state = FunctionState(last_active=info.last_active)
    decision = decide(
        spec=spec, load=load, current=info.replicas, state=state, now=now, last_wake=info.last_active
    )
    return _result(
        spec,
        decision,
        info.labels,
        function=ref.key,
        **where,
        ready=info.ready_replicas,
        load=None if load is None else load.value(spec.type),
        metrics_error=snapshot.error,
    )


def add_parser(subparsers: Any) -> None:
    """Register `autoscaler explain` on the CLI's subparsers."""
    parser = command(
        subparsers,
        "explain",
        help="say what the loop would decide for given labels and load (offline), or for a live function",
        description="Offline: --label KEY=VALUE ... --load X --replicas N. Live: explain NAME[.NAMESPACE] "
        "reads the function from the cluster and its load from Prometheus.",
        handler=run,
    )
    add = parser.add_argument
    add("function", nargs="?", help="NAME[.NAMESPACE] of a live function (needs a cluster)")
    add("--label", action="append", default=[], metavar="KEY=VALUE", help="a scaling label (repeat)")
    add("--load", type=number(), default=None, help="load in the function's scale type (offline)")
    add("--replicas", type=number(whole=True), default=1, help="current replicas (offline, default 1)")
    add(
        "--idle",
        action=GoDuration,
        default=None,
        help="time since the last started invocation, Go duration (offline)",
    )
    add("--json", action="store_true", help="print one JSON object")
    add_settings_flags(parser, MetricsSettings, ProviderSettings)


def run(args: argparse.Namespace) -> int:
    if args.function:
        result = asyncio.run(_explain_live(args))
        print(_render(result, as_json=args.json))
        return 2 if "error" in result else 0
    labels = _labels(args.label)
    try:
        spec, decision = explain_offline(
            labels=labels, load=args.load, replicas=args.replicas, idle=args.idle, now=time.time()
        )
    except SpecError as e:
        raise ConfigError(str(e)) from e
    print(_render(_result(spec, decision, labels, load=args.load), as_json=args.json))
    return 0
