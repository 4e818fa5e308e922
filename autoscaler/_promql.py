"""Prometheus HTTP API answers -> per-function numbers, with "no data" kept apart from zero.

`autoscaler.metrics` does the I/O; this module is the part that must be exactly right about what
Prometheus said: an error body, a non-JSON answer, a NaN, a stale sample or a series without a
`function_name` label each become either a clear `QueryError` or a missing value (never 0).
It is pure (bytes and numbers in, values out) so the reader can run it off the event loop.

At 50,000 functions an answer is about 4.5 MB, and `json.loads` spends most of its time building a
dict per sample that is thrown away at once. `fast_vector` reads the one shape Prometheus gives a
`by (function_name)` instant query (`{"metric":{"function_name":"..."},"value":[T,"V"]}`, nothing
else) by splitting the text on its quotes, and checks every structural token of that shape; any other
answer (more labels, escapes, warnings, an error) goes the general way, through `decode` and `vector`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yarl

from autoscaler.errors import ConfigError, MetricsError

FUNCTION_NAME_LABEL = "function_name"  # the gateway metrics' label: NAME.NAMESPACE
MAX_POINTS = 10_000  # Prometheus refuses range queries of more than 11,000 points per series


class QueryError(MetricsError):
    """One query failed; the message is complete and names the URL, the cause and what to check."""


@dataclass(slots=True)
class Vector:
    """One instant query's answer: value per function (None = no data) and what was left out."""

    values: dict[str, float | None] = field(default_factory=dict)
    unlabelled: int = 0  # series without a function_name label (the query lacks `by (function_name)`)
    stale: int = 0  # samples older than stale_after
    not_finite: int = 0  # NaN or infinite samples


def base_url(text: str | None) -> yarl.URL:
    """Validate --prometheus-url; the result always ends with `/` so API paths join under it."""
    if not text or not text.strip():
        raise ConfigError(
            "--prometheus-url (env AUTOSCALER_PROMETHEUS_URL) is not set: give Prometheus's base URL, "
            "e.g. http://prometheus.openfaas:9090"
        )
    try:
        url = yarl.URL(text.strip())
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"--prometheus-url {text!r} is not a valid URL ({e}); use e.g. http://prometheus:9090"
        ) from e
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"--prometheus-url {text!r} is not a valid URL: it needs an http:// or https:// scheme "
            "and a host, e.g. http://prometheus.openfaas:9090"
        )
    if url.query_string or url.fragment:
        raise ConfigError(
            f"--prometheus-url {text!r} must not carry a query or fragment; give the base URL only"
        )
    path = url.path if url.path.endswith("/") else url.path + "/"
    return url.with_path(path)


def duration(seconds: float) -> str:
    """Seconds as a duration the API accepts (`timeout`, `lookback_delta`, `step` take float seconds)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def _number(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def decode(body: bytes, *, status: int, where: str, flag: str) -> Any:
    """The `data` member of an API answer, or a QueryError saying what was wrong with it."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        snippet = body[:120].decode("utf-8", "replace").strip()
        if status >= 400:
            raise QueryError(
                f"{where} answered HTTP {status} ({snippet!r}); check --prometheus-url points at Prometheus"
            ) from e
        raise QueryError(
            f"{where} answered unparsable JSON ({e}; starts {snippet!r}); check --prometheus-url"
        ) from e
    if not isinstance(envelope, dict) or "status" not in envelope:
        raise QueryError(f"{where} answered JSON that is not a Prometheus API reply; check --prometheus-url")
    if envelope["status"] != "success":
        kind = envelope.get("errorType", "error")
        raise QueryError(
            f"{where} rejected the query (HTTP {status}, {kind}: {envelope.get('error')}); check {flag}"
        )
    if status >= 400:
        raise QueryError(f"{where} answered HTTP {status} with a success body; check --prometheus-url")
    data = envelope.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("result"), list):
        raise QueryError(f"{where} answered without a result list; check --prometheus-url")
    return data


_FAST_HEAD = '{"status":"success","data":{"resultType":"vector","result":['
_FAST_TAIL = "]}}"
# The tokens between the quotes of one sample, in order; position 5 is the name, 8 the time, 9 the value.
_FAST_TOKENS = ((1, "metric"), (2, ":{"), (3, FUNCTION_NAME_LABEL), (4, ":"), (6, "},"), (7, "value"))


def fast_vector(body: bytes, *, now: float, stale_after: float) -> Vector | None:
    """`vector(decode(body))` for the common shape of a successful answer, or None for any other.

    None means "not this shape", never an error: the caller then parses the general way, which also
    words the errors. The result is the same as the general path's, counts included.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.startswith(_FAST_HEAD) or not text.endswith(_FAST_TAIL) or "\\" in text:
        return None
    tokens = text[len(_FAST_HEAD) : -len(_FAST_TAIL)].split('"')
    count = len(tokens) // 10
    if len(tokens) != count * 10 + 1:
        return None
    if count == 0:
        return Vector() if tokens == [""] else None
    if tokens[0] != "{" or tokens[-1] != "]}" or tokens[10:-1:10].count("]},{") != count - 1:
        return None
    if any(tokens[at::10].count(token) != count for at, token in _FAST_TOKENS):
        return None
    names = tokens[5::10]
    try:
        stamps = {raw: float(raw[2:-1]) for raw in set(tokens[8::10]) if raw[:2] == ":[" and raw[-1:] == ","}
        values = list(map(float, tokens[9::10]))
    except ValueError:
        return None
    if len(stamps) != len(set(tokens[8::10])) or "" in names:
        return None
    out = Vector()
    fresh = all(now - stamp <= stale_after for stamp in stamps.values())
    # A negative value (`,"-`) takes the loop: its sum from 0.0 turns -0 into 0, as `vector` does.
    if fresh and all(map(math.isfinite, values)) and ',"-' not in text:
        out.values = dict(zip(names, values, strict=True))
        if len(out.values) == count:
            return out
    sums: dict[str, float] = {}
    for name, raw, value in zip(names, tokens[8::10], values, strict=True):
        if not math.isfinite(value):
            out.not_finite += 1
            value = math.nan
        elif now - stamps[raw] > stale_after:
            out.stale += 1
            value = math.nan
        sums[name] = sums.get(name, 0.0) + value
    out.values = {name: (total if math.isfinite(total) else None) for name, total in sums.items()}
    return out


def vector(data: Any, *, now: float, stale_after: float, where: str, flag: str) -> Vector:
    """Group an instant vector by function_name; series of one function are summed.

    A NaN or infinite sample, or one older than `stale_after` seconds at `now`, makes that
    function's value None (no data) rather than dropping it silently into a sum.
    """
    kind = data.get("resultType")
    if kind != "vector":
        raise QueryError(
            f"{where} returned a {kind}, not an instant vector by {FUNCTION_NAME_LABEL}; check {flag}"
        )
    out = Vector()
    sums: dict[str, float] = {}
    for item in data["result"]:
        try:
            name = item["metric"].get(FUNCTION_NAME_LABEL)
            stamp, raw = item["value"]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise QueryError(
                f"{where} answered a malformed sample {item!r}; check --prometheus-url"
            ) from None
        if not name:
            out.unlabelled += 1
            continue
        value = _number(raw)
        if not math.isfinite(value):
            out.not_finite += 1
            value = math.nan
        elif now - _number(stamp) > stale_after:
            out.stale += 1
            value = math.nan
        sums[name] = sums.get(name, 0.0) + value
    out.values = {name: (total if math.isfinite(total) else None) for name, total in sums.items()}
    return out


def matrix(
    data: Any, *, start: float, step: float, points: int, where: str, into: dict[str, np.ndarray]
) -> None:
    """Add a range query's series to `into` (function -> values on the grid start + i*step; NaN = no data)."""
    kind = data.get("resultType")
    if kind != "matrix":
        raise QueryError(f"{where} returned a {kind}, not a range vector by {FUNCTION_NAME_LABEL}")
    for item in data["result"]:
        try:
            name = item["metric"].get(FUNCTION_NAME_LABEL)
            pairs = item["values"]
        except (KeyError, TypeError, AttributeError):
            raise QueryError(f"{where} answered a malformed series {item!r}") from None
        if not name:
            continue
        row = into.get(name)
        if row is None:
            row = into[name] = np.full(points, np.nan)
        if not pairs:
            continue
        raw = np.asarray(pairs, dtype=object)
        stamps = raw[:, 0].astype(np.float64)
        values = np.array([_number(v) for v in raw[:, 1]], dtype=np.float64)
        index = np.rint((stamps - start) / step).astype(np.int64)
        keep = (index >= 0) & (index < points)
        values[~np.isfinite(values)] = np.nan
        # Series of one function are summed where both have a point, as the instant path does.
        current = row[index[keep]]
        row[index[keep]] = np.where(np.isnan(current), values[keep], current + values[keep])
