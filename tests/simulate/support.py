"""Hand-made traces in the Azure 2019 layout, written to a temporary directory by the tests."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

MINUTES = 1440


def write_trace(
    directory: Path,
    functions: Mapping[str, Sequence[tuple[int, int]]],
    *,
    duration_ms: float | dict[str, float] = 100.0,
    memory_mb: float = 512.0,
    minutes: int = MINUTES,
    reverse_columns: bool = False,
) -> Path:
    """Write invocations/durations/memory CSVs; `functions` maps a hash to (minute, calls) pairs.

    Minutes are 0-based here (minute 0 is the trace's column "1").
    """
    directory.mkdir(parents=True, exist_ok=True)
    minute_names = [str(m) for m in range(1, minutes + 1)]
    inv_header = ["HashOwner", "HashApp", "HashFunction", "Trigger", *minute_names]
    if reverse_columns:
        inv_header = list(reversed(inv_header))
    with (directory / "invocations.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=inv_header)
        writer.writeheader()
        for key, calls in functions.items():
            row = {"HashOwner": "o", "HashApp": key, "HashFunction": key, "Trigger": "http"}
            row.update({name: "0" for name in minute_names})
            for minute, count in calls:
                row[str(minute + 1)] = str(count)
            writer.writerow(row)
    dur_header = ["HashOwner", "HashApp", "HashFunction", "Average", "Count", "Minimum", "Maximum"]
    with (directory / "durations.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=list(reversed(dur_header)) if reverse_columns else dur_header
        )
        writer.writeheader()
        for key in functions:
            ms = duration_ms[key] if isinstance(duration_ms, dict) else duration_ms
            writer.writerow(
                {
                    "HashOwner": "o",
                    "HashApp": key,
                    "HashFunction": key,
                    "Average": ms,
                    "Count": 1,
                    "Minimum": ms,
                    "Maximum": ms,
                }
            )
    mem_header = ["HashOwner", "HashApp", "SampleCount", "AverageAllocatedMb"]
    with (directory / "memory.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=list(reversed(mem_header)) if reverse_columns else mem_header
        )
        writer.writeheader()
        for key in functions:
            writer.writerow(
                {"HashOwner": "o", "HashApp": key, "SampleCount": 1, "AverageAllocatedMb": memory_mb}
            )
    return directory
