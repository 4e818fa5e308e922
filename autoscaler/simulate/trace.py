"""Read an Azure Functions 2019 trace and turn its per-minute counts into arrival times.

The simulator replays real production traffic, and the public trace is the Azure Functions 2019 day
(Shahrad et al., ATC 2020; CC-BY 4.0). Files are read by column name, never by position, because
published samples differ in column order. The trace has minute resolution; where inside its minute
each call starts is the simulator's own, stated and seeded rule (`spread_arrivals`).
"""

from __future__ import annotations

import contextlib
import csv
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from autoscaler.errors import ConfigError

INVOCATIONS = "invocations.csv"
DURATIONS = "durations.csv"
MEMORY = "memory.csv"
# Calls of one function a replay holds (their start times, 8 bytes each): 400 MB; the Azure day's busiest
# function has about 1.2 M.
MAX_CALLS_PER_FUNCTION = 50_000_000
ARRIVAL_RULE = (
    "each minute's N calls start at N independent uniform offsets inside the minute (a Poisson process "
    "conditioned on the count), drawn by numpy PCG64 seeded with [seed, crc32(HashFunction)]"
)


class TraceError(ConfigError):
    """A trace directory or file is missing, or lacks a column the simulator needs."""


@dataclass(frozen=True, slots=True)
class TraceFunction:
    """One function of the trace: its calls per minute, average duration and memory."""

    key: str  # HashFunction
    app: str  # HashApp
    trigger: str
    counts: npt.NDArray[np.int64] = field(repr=False)  # calls started in each minute
    duration: float  # seconds, the trace's average execution time (cold start excluded)
    memory_mb: float  # the app's average allocated memory

    @property
    def invocations(self) -> int:
        return int(self.counts.sum())


@dataclass(frozen=True, slots=True)
class Trace:
    """The functions of one trace directory, in file order, plus what had to be filled in."""

    path: Path
    functions: list[TraceFunction]
    minutes: int
    durations_filled: int = 0  # functions without a duration row (given the trace's median)
    memory_filled: int = 0  # functions without a memory row (given the trace's median)

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row by column name) of each non-empty row of a CSV file with `required` columns."""
    if not path.is_file():
        raise TraceError(
            f"{path} not found: a trace directory needs {INVOCATIONS}, {DURATIONS} and {MEMORY} "
            "in the Azure Functions 2019 layout (see the trace README)"
        )
    with _text(path) as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in required if name not in header]
        if missing:
            raise TraceError(
                f"{path} lacks column(s) {', '.join(missing)} (it has {', '.join(header[:8])}"
                f"{', ...' if len(header) > 8 else ''}): the Azure 2019 layout names its columns "
                f"{', '.join(required)}"
            )
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise TraceError(
                    f"{path} line {number}: {len(row)} fields where the header has {len(header)}"
                )
            yield number, dict(zip(header, row, strict=True))


@contextlib.contextmanager
def _text(path: Path) -> Iterator[TextIO]:
    """`path` open as UTF-8 text; bytes that are not UTF-8, wherever they come, are a TraceError."""
    with path.open(newline="", encoding="utf-8") as handle:
        try:
            yield handle
        except UnicodeDecodeError as e:
            raise TraceError(f"{path} is not UTF-8 text ({e.reason}): save it as UTF-8 CSV") from None


def _minute_columns(path: Path) -> list[str]:
    with _text(path) as handle:
        header = [name.strip() for name in next(csv.reader(handle), [])]
    minutes = sorted((name for name in header if name.isdigit()), key=int)
    if not minutes or [int(m) for m in minutes] != list(range(1, len(minutes) + 1)):
        raise TraceError(f"{path} needs minute columns named 1, 2, ... N (one per minute of the day)")
    return minutes


def _number(path: Path, line: int, row: dict[str, str], column: str) -> float:
    """The column's value: a finite number of at least 0 (a duration or a memory size)."""
    text = row[column]
    try:
        value = float(text)
    except ValueError:
        raise TraceError(
            f"{path} line {line}: column {column} holds {text!r}, which is not a number"
        ) from None
    if not np.isfinite(value) or value < 0:
        raise TraceError(
            f"{path} line {line}: column {column} holds {text!r}; it must be a finite number of at least 0"
        )
    return value


def _unique(path: Path, seen: dict[tuple[str, ...], int], key: tuple[str, ...], line: int) -> None:
    """TraceError when `key` was on an earlier line: a second row of one function is ambiguous (its
    calls would count twice, or one of two durations would be taken silently)."""
    first = seen.setdefault(key, line)
    if first != line:
        name = "/".join(part for part in key if part)
        raise TraceError(
            f"{path} line {line}: {name} is given again (first at line {first}); keep one row per function"
        )


def _table(
    path: Path, key_columns: tuple[str, ...], value: str, *, optional: tuple[str, ...] = ()
) -> dict[tuple[str, ...], float]:
    """`value` by key, one row per key, from a durations or memory file that has at least one row."""
    table: dict[tuple[str, ...], float] = {}
    lines: dict[tuple[str, ...], int] = {}
    required = tuple(column for column in key_columns if column not in optional)
    for line, row in _rows(path, (*required, value)):
        key = tuple(row.get(column, "") for column in key_columns)
        _unique(path, lines, key, line)
        table[key] = _number(path, line, row, value)
    if not table:
        raise TraceError(
            f"{path} has a header and no rows: every function would be given a made-up {value}; "
            "give the trace's rows, or take them from the same day as the invocations"
        )
    return table


def read_trace(directory: Path, *, functions: int | None = None) -> Trace:
    """Read `directory`; keep the first `functions` functions (file order) when given."""
    if directory.exists() and not directory.is_dir():
        raise TraceError(
            f"--trace {directory} is a file: give the directory that holds {INVOCATIONS}, {DURATIONS} and "
            f"{MEMORY}"
        )
    if not directory.is_dir():
        raise TraceError(f"trace directory {directory} does not exist (pass --trace DIR)")
    if functions is not None and functions < 1:
        raise TraceError(f"--functions must be at least 1, got {functions}")
    inv_path = directory / INVOCATIONS
    minutes = _minute_columns(inv_path) if inv_path.is_file() else []
    picked: list[tuple[str, str, str, npt.NDArray[np.int64]]] = []
    seen: dict[tuple[str, ...], int] = {}
    for line, row in _rows(inv_path, ("HashApp", "HashFunction", *minutes)):
        _unique(inv_path, seen, (row["HashFunction"],), line)
        try:
            counts = np.array([int(row[m]) for m in minutes], dtype=np.int64)
        except (ValueError, OverflowError):
            raise TraceError(f"{inv_path}: function {row['HashFunction']} has a non-integer count") from None
        if (counts < 0).any():
            raise TraceError(f"{inv_path}: function {row['HashFunction']} has a negative count")
        if counts.sum() > MAX_CALLS_PER_FUNCTION:
            raise TraceError(
                f"{inv_path}: function {row['HashFunction']} has {int(counts.sum()):,} calls, more than the "
                f"{MAX_CALLS_PER_FUNCTION:,} a replay holds per function (8 bytes each in memory): "
                "check its counts, or scale the trace down"
            )
        picked.append((row["HashApp"], row["HashFunction"], row.get("Trigger", "unknown"), counts))
        if functions is not None and len(picked) >= functions:
            break
    if not picked:
        raise TraceError(f"{inv_path} has no functions")
    milliseconds = _table(directory / DURATIONS, ("HashApp", "HashFunction"), "Average")
    durations = {key: value / 1000.0 for key, value in milliseconds.items()}
    # The official memory file is per app; some samples are per function (they add HashFunction).
    memory = _table(
        directory / MEMORY, ("HashApp", "HashFunction"), "AverageAllocatedMb", optional=("HashFunction",)
    )
    median_duration = float(np.median(list(durations.values())))
    median_memory = float(np.median(list(memory.values())))
    result: list[TraceFunction] = []
    filled_d = filled_m = 0
    for app, key, trigger, counts in picked:
        duration = durations.get((app, key))
        if duration is None:
            duration, filled_d = median_duration, filled_d + 1
        mem = memory.get((app, key), memory.get((app, "")))
        if mem is None:
            mem, filled_m = median_memory, filled_m + 1
        # A 0 ms average would make concurrency meaningless; the trace's resolution is 1 ms.
        result.append(TraceFunction(key, app, trigger, counts, max(duration, 0.001), mem))
    return Trace(directory, result, len(minutes), filled_d, filled_m)


def spread_arrivals(counts: npt.NDArray[np.int64], *, seed: int, key: str) -> npt.NDArray[np.float64]:
    """Arrival times in seconds from the start of the trace, sorted; see ARRIVAL_RULE."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    total = int(counts.sum())
    starts = np.repeat(np.arange(counts.size, dtype=np.float64) * 60.0, counts)
    arrivals = starts + rng.random(total) * 60.0
    arrivals.sort()
    return arrivals
