"""The trace reader: columns by name, clear errors, and a stated, seeded spreading of arrivals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoscaler.simulate import DEFAULT_TRACE
from autoscaler.simulate.trace import TraceError, read_trace, spread_arrivals
from tests.simulate.support import write_trace


def test_columns_are_read_by_name_whatever_their_order(tmp_path: Path) -> None:
    calls = {"aaa": [(0, 3), (10, 1)], "bbb": [(1439, 2)]}
    plain = read_trace(write_trace(tmp_path / "plain", calls, duration_ms=250.0, memory_mb=300.0))
    turned = read_trace(
        write_trace(tmp_path / "turned", calls, duration_ms=250.0, memory_mb=300.0, reverse_columns=True)
    )
    for trace in (plain, turned):
        assert [fn.key for fn in trace.functions] == ["aaa", "bbb"]
        assert trace.minutes == 1440
        first = trace.functions[0]
        assert first.counts[0] == 3
        assert first.counts[10] == 1
        assert first.invocations == 4
        assert first.duration == pytest.approx(0.25)
        assert first.memory_mb == pytest.approx(300.0)
        assert trace.functions[1].counts[1439] == 2


def test_a_missing_column_is_named_in_the_error(tmp_path: Path) -> None:
    directory = write_trace(tmp_path / "t", {"aaa": [(0, 1)]})
    text = (directory / "durations.csv").read_text().replace("Average", "Mean")
    (directory / "durations.csv").write_text(text)
    with pytest.raises(TraceError, match=r"durations.csv lacks column\(s\) Average"):
        read_trace(directory)


def test_a_missing_file_or_directory_says_what_a_trace_needs(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="does not exist"):
        read_trace(tmp_path / "nowhere")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(TraceError, match=r"a-file is a file: give the directory that holds invocations\.csv"):
        read_trace(tmp_path / "a-file")
    directory = write_trace(tmp_path / "t", {"aaa": [(0, 1)]})
    (directory / "memory.csv").unlink()
    with pytest.raises(TraceError, match=r"invocations\.csv, durations\.csv and memory\.csv"):
        read_trace(directory)


def test_functions_without_a_duration_or_memory_row_get_the_median_and_are_counted(tmp_path: Path) -> None:
    directory = write_trace(tmp_path / "t", {"aaa": [(0, 1)], "bbb": [(0, 1)]})
    lines = (directory / "durations.csv").read_text().splitlines()
    (directory / "durations.csv").write_text("\n".join(lines[:2]) + "\n")
    trace = read_trace(directory)
    assert trace.durations_filled == 1
    assert trace.memory_filled == 0
    assert trace.functions[1].duration == pytest.approx(0.1)


def _edit(directory: Path, name: str, change: object) -> None:
    path = directory / name
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(lines)) + "\n")  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        (
            "memory.csv",
            "nan",
            r"memory\.csv line 2: column AverageAllocatedMb holds 'nan'; it must be a finite",
        ),
        ("memory.csv", "-1", r"memory\.csv line 2: column AverageAllocatedMb holds '-1'"),
        ("durations.csv", "inf", r"durations\.csv line 2: column Average holds 'inf'; it must be a finite"),
        ("durations.csv", "-250", r"durations\.csv line 2: column Average holds '-250'"),
    ],
)
def test_a_duration_or_memory_that_is_not_a_finite_number_of_at_least_0_is_named_by_line(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    directory = write_trace(tmp_path / "t", {"aaa": [(0, 1)]}, duration_ms=250.0, memory_mb=300.0)
    _edit(directory, name, lambda lines: [lines[0], lines[1].replace("250.0", value).replace("300.0", value)])
    with pytest.raises(TraceError, match=says):
        read_trace(directory)


@pytest.mark.parametrize("name", ["invocations.csv", "durations.csv", "memory.csv"])
def test_a_function_given_twice_in_one_file_is_refused_with_both_lines(tmp_path: Path, name: str) -> None:
    directory = write_trace(tmp_path / "t", {"aaa": [(0, 1)], "bbb": [(0, 1)]})
    _edit(directory, name, lambda lines: [*lines, lines[1]])
    with pytest.raises(TraceError, match=rf"{name} line 4: .*aaa is given again \(first at line 2\)"):
        read_trace(directory)


@pytest.mark.parametrize("name", ["durations.csv", "memory.csv"])
def test_a_durations_or_memory_file_with_no_rows_is_refused_not_filled_in_for_every_function(
    tmp_path: Path, name: str
) -> None:
    directory = write_trace(tmp_path / "t", {"aaa": [(0, 1)]})
    _edit(directory, name, lambda lines: lines[:1])
    with pytest.raises(TraceError, match=rf"{name} has a header and no rows"):
        read_trace(directory)


def test_only_the_first_n_functions_are_read_when_asked(tmp_path: Path) -> None:
    directory = write_trace(tmp_path / "t", {"a": [(0, 1)], "b": [(0, 1)], "c": [(0, 1)]})
    assert [fn.key for fn in read_trace(directory, functions=2).functions] == ["a", "b"]


def test_arrivals_stay_inside_their_minute_and_repeat_with_the_seed() -> None:
    counts = np.zeros(1440, dtype=np.int64)
    counts[[0, 5, 1439]] = [4, 2, 3]
    first = spread_arrivals(counts, seed=7, key="fn")
    again = spread_arrivals(counts, seed=7, key="fn")
    other = spread_arrivals(counts, seed=8, key="fn")
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.size == 9
    assert np.all(np.diff(first) >= 0)
    minutes = np.floor(first / 60).astype(int)
    assert minutes.tolist() == [0, 0, 0, 0, 5, 5, 1439, 1439, 1439]


def test_arrivals_of_one_function_do_not_depend_on_the_others() -> None:
    counts = np.zeros(1440, dtype=np.int64)
    counts[100] = 5
    assert np.array_equal(
        spread_arrivals(counts, seed=0, key="x"), spread_arrivals(counts.copy(), seed=0, key="x")
    )
    assert not np.array_equal(
        spread_arrivals(counts, seed=0, key="x"), spread_arrivals(counts, seed=0, key="y")
    )


def test_the_shipped_slice_reads_and_carries_its_attribution() -> None:
    trace = read_trace(DEFAULT_TRACE)
    assert len(trace.functions) == 40
    assert trace.minutes == 1440
    assert trace.durations_filled == 0
    assert trace.memory_filled == 0
    attribution = (DEFAULT_TRACE / "ATTRIBUTION.md").read_text()
    assert "CC-BY 4.0" in attribution
    assert "Shahrad" in attribution
