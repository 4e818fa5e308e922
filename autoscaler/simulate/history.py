"""What-if on the user's own history: their Prometheus's started counters, replayed as a trace.

An operator deciding whether to switch keep-alive policies wants the figures for their own functions
on their own week, not for a public trace. The loop's own started-invocations query (the same
`function_name` labels) is read as a range at one-minute steps, in chunks below Prometheus's limit
on points per series, and each function's counter becomes calls per minute, which the simulator
replays like a trace's; a chunk Prometheus refuses as too many samples at once (its
`--query.max-samples` caps points x series) is asked for again in halves. `prometheus-api-client`
does the reading: it is synchronous, which suits a batch command, and nothing here runs on an event
loop.

Prometheus does not know how long calls run or how much memory a replica holds: those come from
flags or a small file, and the defaults are stated in the report's assumptions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from autoscaler._promql import FUNCTION_NAME_LABEL, MAX_POINTS
from autoscaler.errors import ConfigError, MetricsError
from autoscaler.simulate.trace import Trace, TraceFunction
from autoscaler.spec import parse_duration

STEP = 60.0  # one sample a minute: the trace's resolution
HISTORY_RULE = (
    "calls per minute = the increase of the started counter between consecutive one-minute samples "
    "of the range query (a drop is a counter reset: the new value counts); the first sample of a "
    "function, and the minutes of a gap, count nothing until the counter is seen again, when the "
    "calls of the gap are counted in the minute before it"
)
_DAYS = re.compile(r"(\d+)d(.*)")
# Prometheus's answer (422) to a query over more samples than its --query.max-samples (50,000,000 by
# default: about 2,500 functions' 10,000 points, as `sum by` holds each input and output sample).
TOO_MANY_SAMPLES = "query processing would load too many samples into memory"


def parse_span(text: str, *, flag: str) -> float:
    """Seconds from `7d`, `36h`, `90m` or `1d12h` (a Go duration, plus days); ConfigError if not."""
    value = text.strip()
    days = 0.0
    match = _DAYS.fullmatch(value)
    if match is not None:
        days, value = float(match.group(1)), match.group(2)
    try:
        seconds = days * 86400.0 + (parse_duration(value) if value else 0.0)
    except ValueError as e:
        raise ConfigError(f"{flag} {text!r}: {e}; use e.g. 7d, 36h or 1d12h") from None
    if seconds <= 0:
        raise ConfigError(f"{flag} {text!r} must be longer than 0; use e.g. 7d, 36h or 1d12h")
    return seconds


def parse_until(text: str | None, *, now: float) -> float:
    """`--until`: an RFC 3339 time, or a span before `now` (`2h` ago); unset: `now`."""
    if text is None:
        return now
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return now - parse_span(text, flag="--until")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


@dataclass(frozen=True, slots=True)
class Sizes:
    """What Prometheus does not know: each function's call duration (s) and replica memory (MB)."""

    duration: float = 0.1
    memory_mb: float = 256.0
    functions: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def of(self, key: str) -> tuple[float, float]:
        return self.functions.get(key, (self.duration, self.memory_mb))


def read_sizes(path: Path, *, duration: float, memory_mb: float) -> Sizes:
    """A YAML file `{functions: {NAME.NAMESPACE: {duration: 1.5s, memory_mb: 512}}}`; ConfigError if bad."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"--sizes {path}: cannot read it as YAML ({e})") from None
    entries = doc.get("functions") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise ConfigError(f"--sizes {path}: expected a mapping `functions: {{NAME.NAMESPACE: {{...}}}}`")
    found: dict[str, tuple[float, float]] = {}
    for key, entry in entries.items():
        if not isinstance(entry, dict) or set(entry) - {"duration", "memory_mb"}:
            raise ConfigError(f"--sizes {path}: {key}: give only `duration` (e.g. 1.5s) and `memory_mb`")
        try:
            seconds = parse_duration(str(entry.get("duration", f"{duration}s")))
            memory = float(entry.get("memory_mb", memory_mb))
        except ValueError as e:
            raise ConfigError(f"--sizes {path}: {key}: {e}") from None
        if seconds <= 0 or not math.isfinite(memory) or memory <= 0:
            raise ConfigError(f"--sizes {path}: {key}: duration and memory_mb must be > 0")
        found[str(key)] = (seconds, memory)
    return Sizes(duration=duration, memory_mb=memory_mb, functions=found)


def minute_counts(samples: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Calls in each minute between consecutive counter samples (NaN: no sample); see HISTORY_RULE."""
    counts = np.zeros(max(0, samples.size - 1), dtype=np.int64)
    seen = np.flatnonzero(~np.isnan(samples))
    if seen.size < 2:
        return counts
    values = samples[seen]
    rises = np.diff(values)
    rises = np.where(rises < 0, values[1:], rises)  # a reset: everything counted since is new
    counts[seen[1:] - 1] = np.rint(rises).astype(np.int64)
    return counts


def grid(start: float, end: float) -> tuple[float, int]:
    """The first sample time (on a minute) and the number of samples from `start` to `end`."""
    first = math.ceil(start / STEP) * STEP
    points = int((math.floor(end / STEP) * STEP - first) // STEP) + 1
    if points < 2:
        raise ConfigError(
            f"the range from {_iso(start)} to {_iso(end)} holds less than two minutes: widen --since"
        )
    return first, points


def read_history(
    *,
    url: str,
    query: str,
    start: float,
    end: float,
    namespaces: tuple[str, ...] = (),
    sizes: Sizes | None = None,
    timeout: float = 30.0,
) -> Trace:
    """Every function's calls per minute from `start` to `end` (unix seconds) as a Trace.

    Raises MetricsError when Prometheus cannot be read and ConfigError when nothing matches.
    """
    first, points = grid(start, end)
    samples = _read(url=url, query=query, first=first, points=points, timeout=timeout)
    keys = sorted(k for k in samples if not namespaces or k.rpartition(".")[2] in namespaces)
    if not keys:
        where = f" in namespace(s) {', '.join(namespaces)}" if namespaces else ""
        raise ConfigError(
            f"Prometheus at {url} has no series of {query!r} by {FUNCTION_NAME_LABEL}{where} between "
            f"{_iso(first)} and {_iso(first + (points - 1) * STEP)}"
        )
    sizes = sizes or Sizes()
    functions = []
    for key in keys:
        duration, memory = sizes.of(key)
        functions.append(
            TraceFunction(
                key=key,
                app=key,
                trigger="http",
                counts=minute_counts(samples[key]),
                duration=duration,
                memory_mb=memory,
            )
        )
    return Trace(path=Path(f"prometheus {_iso(first)} .. {_iso(first + (points - 1) * STEP)}"),
                 functions=functions, minutes=points - 1)  # fmt: skip


def _read(
    *, url: str, query: str, first: float, points: int, timeout: float
) -> dict[str, npt.NDArray[np.float64]]:
    """Each series' samples, in chunks of at most MAX_POINTS; a chunk refused as too many samples in
    halves (Prometheus's --query.max-samples caps points x series, so many functions need fewer points)."""
    from prometheus_api_client import PrometheusConnect
    from prometheus_api_client.prometheus_connect import RETRY_ON_STATUS
    from urllib3.util.retry import Retry

    # The client's own default retries a refused connection three times over 6 s, logging each: an
    # address nobody answers at is a mistake to report at once. Busy answers (429, 5xx) are retried.
    retry = Retry(total=3, connect=0, backoff_factor=0.5, status_forcelist=RETRY_ON_STATUS)
    client = PrometheusConnect(url=url.rstrip("/"), disable_ssl=True, retry=retry)
    samples: dict[str, npt.NDArray[np.float64]] = {}
    offset, chunk = 0, MAX_POINTS
    while offset < points:
        last = min(points, offset + chunk) - 1
        try:
            result = client.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(first + offset * STEP, UTC),
                end_time=datetime.fromtimestamp(first + last * STEP, UTC),
                step=f"{STEP:g}s",
                params={"timeout": f"{timeout:g}s"},
            )
        except Exception as e:  # requests' and the client's own errors alike: one clear line
            too_many = TOO_MANY_SAMPLES in str(e)
            if too_many and last > offset:
                chunk = (last - offset + 1) // 2  # and so for the chunks after it
                continue
            raise MetricsError(
                f"cannot read the history from Prometheus at {url} ({type(e).__name__}: {e}); "
                "check --prometheus-url and --query-started"
                + (", or raise Prometheus's --query.max-samples" if too_many else "")
            ) from e
        _take(result, samples, first=first, points=points)
        offset = last + 1
    return samples


def _take(result: Any, into: dict[str, npt.NDArray[np.float64]], *, first: float, points: int) -> None:
    if not isinstance(result, list):
        raise MetricsError(f"the history query answered {type(result).__name__}, not a range of series")
    for series in result:
        key = (series.get("metric") or {}).get(FUNCTION_NAME_LABEL)
        if not key:
            continue
        row = into.setdefault(str(key), np.full(points, np.nan))
        for stamp, raw in series.get("values") or []:
            index = round((float(stamp) - first) / STEP)
            if 0 <= index < points:
                value = float(raw)
                row[index] = value if math.isfinite(value) else np.nan


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
