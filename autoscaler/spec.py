"""Scaling labels -> a validated ScalingSpec, with errors a platform engineer can act on.

Label names and defaults are OpenFaaS Pro's, so existing functions work unchanged; the project's own
extensions use the `autoscaler.dev/` prefix. A bad label raises SpecError naming the label, the value
and what is allowed; the loop then leaves that function alone and says why (never crashes).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import TypedDict

from autoscaler.errors import SpecError
from policies.model import KeepAlive, ScaleType, ScalingSpec
from policies.stabilize import MAX_WINDOW

PREFIX = "com.openfaas.scale."
MIN = PREFIX + "min"
MAX = PREFIX + "max"
TARGET = PREFIX + "target"
TYPE = PREFIX + "type"
PROPORTION = PREFIX + "target-proportion"
ZERO = PREFIX + "zero"
ZERO_DURATION = PREFIX + "zero-duration"
DOWN_WINDOW = PREFIX + "down.window"
PROJECT_PREFIX = "autoscaler.dev/"
KEEPALIVE = PROJECT_PREFIX + "keepalive"
# Behaviour knobs the peers have (Knative's names, OpenFaaS-like spelling): see the README's table.
SCALE_UP_RATE = PROJECT_PREFIX + "max-scale-up-rate"
SCALE_DOWN_RATE = PROJECT_PREFIX + "max-scale-down-rate"
ACTIVATION_SCALE = PROJECT_PREFIX + "activation-scale"
SCALE_DOWN_DELAY = PROJECT_PREFIX + "scale-down-delay"
BURST_THRESHOLD = PROJECT_PREFIX + "burst-threshold"
BURST_WINDOW = PROJECT_PREFIX + "burst-window"
ACTIVATION_THRESHOLD = PROJECT_PREFIX + "activation-threshold"

MAX_DELAY = 3600.0  # Knative: 0s <= scale-down-delay <= 1h
BURST_PERCENT = (110.0, 1000.0)  # Knative: panic-threshold-percentage from 110 to 1000
BURST_WINDOWS = (6.0, 3600.0)  # Knative: stable window from 6s to 1h

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration (`90s`, `15m`, `1h30m`, `1.5h`, `250ms`, `0`) into seconds.

    Raises ValueError with the accepted syntax; negative durations are refused (none makes sense here).
    """
    value = text.strip()
    if value == "0":
        return 0.0
    if not value:
        raise ValueError("empty duration")
    if value.startswith("-"):
        raise ValueError(f"{text!r} is negative; a duration here is 0 or more")
    pos = 0
    total = 0.0
    while pos < len(value):
        match = _PART.match(value, pos)
        if match is None:
            raise ValueError(f"not a Go duration: {text!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total


def format_duration(seconds: float) -> str:
    """Seconds back into a short Go duration (`15m`, `1h30m`, `90.5s`) for messages."""
    if seconds <= 0:
        return "0s"
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)


def _int(labels: Mapping[str, str], label: str, default: int, *, least: int) -> int:
    raw = labels.get(label)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SpecError(label, raw, f"a whole number >= {least}") from None
    if value < least:
        raise SpecError(label, raw, f"a whole number >= {least}")
    return value


def _float(
    labels: Mapping[str, str], label: str, default: float, *, allowed: str, upper: float | None
) -> float:
    raw = labels.get(label)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise SpecError(label, raw, allowed) from None
    if not math.isfinite(value) or value <= 0 or (upper is not None and value > upper):
        raise SpecError(label, raw, allowed)
    return value


def _duration(labels: Mapping[str, str], label: str, default: float, *, allowed: str) -> float:
    raw = labels.get(label)
    if raw is None:
        return default
    try:
        return parse_duration(raw)
    except ValueError:
        raise SpecError(label, raw, allowed) from None


def _choice(labels: Mapping[str, str], label: str, options: tuple[str, ...], default: str) -> str:
    raw = labels.get(label)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value not in options:
        raise SpecError(label, raw, "one of " + ", ".join(options))
    return value


def zero_enabled(labels: Mapping[str, str]) -> bool:
    """Whether the labels opt the function into scale to zero, read as `parse_labels` reads them.

    The proxy asks this for every request it forwards (to decide whether to mark the function
    active), where a full parse would cost too much; a value `parse_labels` refuses reads as no.
    """
    return labels.get(ZERO, "").strip().lower() == "true"


def parse_labels(labels: Mapping[str, str]) -> ScalingSpec:
    """Build a ScalingSpec from a function's labels; raises SpecError on the first invalid one."""
    minimum = _int(labels, MIN, 1, least=0)
    maximum = _int(labels, MAX, 20, least=1)
    if minimum > maximum:
        raise SpecError(MIN, labels.get(MIN, str(minimum)), f"at most {MAX} ({maximum})")
    target = _float(labels, TARGET, 50.0, allowed="a number > 0 (load per replica)", upper=None)
    kind, type_label = _scale_type(labels)
    proportion = _float(
        labels, PROPORTION, 0.90, allowed="a number > 0 and <= 1 (fraction of target)", upper=1.0
    )
    _choice(labels, ZERO, ("true", "false"), "false")  # refuses a wrong value
    zero = zero_enabled(labels)
    zero_duration = _duration(
        labels, ZERO_DURATION, 900.0, allowed="a Go duration > 0 such as 90s, 15m or 1h30m"
    )
    if zero_duration <= 0:
        raise SpecError(ZERO_DURATION, labels[ZERO_DURATION], "a Go duration > 0 such as 90s, 15m or 1h30m")
    window_raw = labels.get(DOWN_WINDOW)
    window = 0.0
    if window_raw is not None and window_raw.strip().lower() not in ("", "off"):
        window = _duration(labels, DOWN_WINDOW, 0.0, allowed="off or a Go duration of at most 5m")
        if window > MAX_WINDOW:
            raise SpecError(DOWN_WINDOW, window_raw, "off or a Go duration of at most 5m")
    keepalive = KeepAlive(_choice(labels, KEEPALIVE, tuple(k.value for k in KeepAlive), "fixed"))
    return ScalingSpec(
        min_replicas=minimum,
        max_replicas=maximum,
        target=target,
        type=kind,
        target_proportion=proportion,
        zero=zero,
        zero_duration=zero_duration,
        down_window=window,
        keepalive=keepalive,
        type_label=type_label,
        **_knobs(labels, maximum=maximum),
    )


class _Knobs(TypedDict):
    max_scale_up_rate: float
    max_scale_down_rate: float
    activation_scale: int
    scale_down_delay: float
    burst_threshold: float
    burst_window: float
    activation_threshold: float


def _knobs(labels: Mapping[str, str], *, maximum: int) -> _Knobs:
    """The behaviour knobs (`autoscaler.dev/`), as ScalingSpec fields; SpecError on a bad one."""
    rate = "off, or a factor > 1 (e.g. 2: at most double / halve per decision)"
    activation = _int(labels, ACTIVATION_SCALE, 1, least=1)
    if activation > maximum:
        raise SpecError(
            ACTIVATION_SCALE, labels[ACTIVATION_SCALE], f"a whole number from 1 to {MAX} ({maximum})"
        )
    delay_allowed = "a Go duration from 0s to 1h, such as 30s or 15m"
    delay = _duration(labels, SCALE_DOWN_DELAY, 0.0, allowed=delay_allowed)
    if delay > MAX_DELAY:
        raise SpecError(SCALE_DOWN_DELAY, labels[SCALE_DOWN_DELAY], delay_allowed)
    window_allowed = "a Go duration from 6s to 1h, such as 60s"
    window = _duration(labels, BURST_WINDOW, 60.0, allowed=window_allowed)
    if not BURST_WINDOWS[0] <= window <= BURST_WINDOWS[1]:
        raise SpecError(BURST_WINDOW, labels[BURST_WINDOW], window_allowed)
    return {
        "max_scale_up_rate": _rate(labels, SCALE_UP_RATE, allowed=rate),
        "max_scale_down_rate": _rate(labels, SCALE_DOWN_RATE, allowed=rate),
        "activation_scale": activation,
        "scale_down_delay": delay,
        "burst_threshold": _burst_threshold(labels),
        "burst_window": window,
        "activation_threshold": _threshold(labels),
    }


def _burst_threshold(labels: Mapping[str, str]) -> float:
    """Burst mode's trigger as a factor of the current replicas' capacity (`200` or `200%`: 2.0); 0 = off."""
    raw = labels.get(BURST_THRESHOLD)
    if raw is None or raw.strip().lower() == "off":
        return 0.0
    allowed = "off, or a percentage from 110 to 1000 of what the current replicas carry, such as 200"
    try:
        percent = float(raw.strip().removesuffix("%"))
    except ValueError:
        raise SpecError(BURST_THRESHOLD, raw, allowed) from None
    if not BURST_PERCENT[0] <= percent <= BURST_PERCENT[1]:  # NaN fails both comparisons
        raise SpecError(BURST_THRESHOLD, raw, allowed)
    return percent / 100.0


def _threshold(labels: Mapping[str, str]) -> float:
    """KEDA's activationThreshold: a load figure >= 0 in the function's scale type; 0 when unset."""
    raw = labels.get(ACTIVATION_THRESHOLD)
    if raw is None:
        return 0.0
    allowed = "a number >= 0 (load in the function's scale type, e.g. req/s for rps)"
    try:
        value = float(raw.strip())
    except ValueError:
        raise SpecError(ACTIVATION_THRESHOLD, raw, allowed) from None
    if not math.isfinite(value) or value < 0:
        raise SpecError(ACTIVATION_THRESHOLD, raw, allowed)
    return value


def _rate(labels: Mapping[str, str], label: str, *, allowed: str) -> float:
    """A rate limit factor; 0.0 when unset or `off`."""
    raw = labels.get(label)
    if raw is None or raw.strip().lower() == "off":
        return 0.0
    try:
        value = float(raw.strip())
    except ValueError:
        raise SpecError(label, raw, allowed) from None
    if not math.isfinite(value) or value <= 1:
        raise SpecError(label, raw, allowed)
    return value


_MEASURED = tuple(t.value for t in ScaleType if t.measured)
_TYPE_VALUES = frozenset(t.value for t in ScaleType)


def _scale_type(labels: Mapping[str, str]) -> tuple[ScaleType, str]:
    """The scale type, and the label as written for a custom type; any unknown value is a custom type.

    OpenFaaS allows custom types this loop does not measure: those are not an error that freezes the
    function, only a scale type without a load figure (see `unsupported`).
    """
    raw = labels.get(TYPE)
    if raw is None:
        return ScaleType.RPS, ""
    value = _type_value(raw)
    if not value:
        raise SpecError(TYPE, raw, "one of " + ", ".join(_MEASURED))
    if value == ScaleType.UNSUPPORTED.value or value not in _TYPE_VALUES:
        return ScaleType.UNSUPPORTED, raw.strip()
    return ScaleType(value), ""


def _type_value(raw: str) -> str:
    return raw.strip().lower()


def scaled_by_cpu(labels: Mapping[str, str]) -> bool:
    """Whether `parse_labels` would give these labels the CPU type (read without parsing the rest)."""
    raw = labels.get(TYPE)
    return raw is not None and _type_value(raw) == ScaleType.CPU.value


def unsupported(spec: ScalingSpec) -> str | None:
    """Why the loop cannot scale this function by load, or None when it can (the Event's message)."""
    if spec.type.measured:
        return None
    measured = ", ".join(_MEASURED)
    what = f"{TYPE}={spec.type_label!r} is not a scaling type this autoscaler measures ({measured})"
    zero = (
        f"scale to zero after {format_duration(spec.zero_duration)} idle and waking on traffic still apply"
        if spec.zero
        else "waking on traffic still applies"
    )
    return f"{what}: replicas are not scaled by load; {zero}"


def knob_notes(spec: ScalingSpec) -> list[str]:
    """One sentence per behaviour knob that is not at its default, for `autoscaler explain`."""
    notes: list[str] = []
    if spec.scale_down_delay > 0:
        notes.append(
            f"{SCALE_DOWN_DELAY}={format_duration(spec.scale_down_delay)}: the replicas go down only once "
            "a lower recommendation has held for the whole delay, then to the highest one it held; "
            "each step down waits a whole delay again"
        )
    if spec.burst_threshold > 0:
        notes.append(
            f"{BURST_THRESHOLD}={spec.burst_threshold * 100:g}%: when one tick's {spec.type} figure needs "
            f"{spec.burst_threshold * 100:g}% of the current replicas or more, burst mode scales up on it "
            f"and scales nothing down (to zero neither) until {format_duration(spec.burst_window)} "
            f"({BURST_WINDOW}) have passed without another such tick"
        )
    if spec.activation_threshold > 0:
        notes.append(
            f"{ACTIVATION_THRESHOLD}={spec.activation_threshold:g}: "
            + (
                f"the loop leaves the function at zero while its {spec.type} figure is at most "
                f"{spec.activation_threshold:g} (a request still wakes it through the proxy)"
                if spec.zero
                else f"has no effect without {ZERO}=true (only a function the loop sends to zero waits)"
            )
        )
    return notes


# -- the proxy's concurrency limit ---------------------------------------------------------------

MAX_INFLIGHT = PROJECT_PREFIX + "max-inflight"
# The OpenFaaS watchdog's limit: an environment variable of the function (stack.yml `environment:`,
# which faas-netes writes into the function container's env); unset or 0 means no limit.
MAX_INFLIGHT_ENV = "max_inflight"
FROM_LABEL = f"label {MAX_INFLIGHT}"
FROM_ENV = f"environment {MAX_INFLIGHT_ENV}"


def max_inflight(labels: Mapping[str, str]) -> int | None:
    """Requests one replica takes at once (`autoscaler.dev/max-inflight`); None when unset or 0.

    The proxy sends a replica no more than this and queues the rest, as Knative does above
    `containerConcurrency`; 0 means no limit, as `max_inflight` does for the OpenFaaS watchdog.
    Raises SpecError for anything but a whole number >= 0.
    """
    if MAX_INFLIGHT not in labels:
        return None
    return _int(labels, MAX_INFLIGHT, 0, least=0) or None


def limit_source(labels: Mapping[str, str], env: str | None) -> tuple[str, str] | None:
    """(where, raw value) of the function's declared concurrency limit, or None when it declares none.

    Our label wins over the environment's `max_inflight` when both are set: it is the proxy's own
    setting, and an operator can change it without redeploying the function's environment.
    """
    raw = labels.get(MAX_INFLIGHT)
    if raw is not None:
        return FROM_LABEL, raw
    if env is not None:
        return FROM_ENV, env
    return None


def parse_limit(where: str, raw: str) -> int | None:
    """The limit `raw` declares (None for 0); raises ValueError naming `where` unless a whole number >= 0."""
    if where == FROM_LABEL:
        return max_inflight({MAX_INFLIGHT: raw})
    digits = raw.strip()
    if not (digits.isascii() and digits.isdigit()):  # what the watchdog's strconv.Atoi reads, less signs
        raise ValueError(f"{where}={raw!r} is invalid: a whole number >= 0")
    return int(digits) or None


# -- labels no part of the add-on reads ---------------------------------------------------------

# OpenFaaS labels of the same prefix that other parts of OpenFaaS read: named, not taken for typos.
_OPENFAAS_ELSEWHERE = {
    PREFIX + "factor": "the Community Edition's alert scaler reads it; this autoscaler scales by target",
}


def unknown_labels(labels: Mapping[str, str]) -> list[str]:
    """A warning for each `com.openfaas.scale.*` or `autoscaler.dev/*` label nothing here reads.

    A misspelt key (`com.openfaas.scale.maxx`, `...zero_duration`) is otherwise silently ignored: the
    function then scales by a default its owner did not choose. The closest known key is suggested.
    """
    # Looked at for every function listed (50,000 at start-up): the common case, none, costs one pass.
    suspects = [
        key for key in labels if key not in _KNOWN_LABELS and key.startswith((PREFIX, PROJECT_PREFIX))
    ]
    warnings = []
    for key in sorted(suspects):
        if key in _OPENFAAS_ELSEWHERE:
            warnings.append(f"label {key} is not read by this autoscaler: {_OPENFAAS_ELSEWHERE[key]}")
            continue
        close = difflib.get_close_matches(key, sorted(_KNOWN_LABELS), n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"label {key} is not one this autoscaler reads, so it has no effect{hint}")
    return warnings


_KNOWN_LABELS = frozenset(
    (
        MIN, MAX, TARGET, TYPE, PROPORTION, ZERO, ZERO_DURATION, DOWN_WINDOW, KEEPALIVE, SCALE_UP_RATE,
        SCALE_DOWN_RATE, ACTIVATION_SCALE, SCALE_DOWN_DELAY, BURST_THRESHOLD, BURST_WINDOW,
        ACTIVATION_THRESHOLD, MAX_INFLIGHT,
    )
)  # fmt: skip
