"""The fast reading of Prometheus answers gives what the general JSON path gives, or steps aside.

`_promql.fast_vector` reads only the exact shape of a `by (function_name)` instant vector; anything
else (more labels, escaped names, warnings, an error) must make it return None so that the general
path, which also words the errors, reads it. Where it does read an answer, values, NaN, stale samples
and sums must come out as the general path's. A real Prometheus's answers are checked in
`test_prometheus_reader.py`; these tests cover the shapes a healthy one rarely writes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from autoscaler import _promql

NOW = 1_000_000.0


def body(result: list[dict[str, Any]], **envelope: Any) -> bytes:
    data = {"status": "success", "data": {"resultType": "vector", "result": result}, **envelope}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()  # as Prometheus writes


def sample(name: str, value: str, stamp: float = NOW) -> dict[str, Any]:
    return {"metric": {"function_name": name}, "value": [stamp, value]}


def general(raw: bytes) -> _promql.Vector:
    data = _promql.decode(raw, status=200, where="test", flag="--flag")
    return _promql.vector(data, now=NOW, stale_after=60.0, where="test", flag="--flag")


def same(a: _promql.Vector, b: _promql.Vector) -> bool:
    return (a.values, a.stale, a.not_finite, a.unlabelled) == (b.values, b.stale, b.not_finite, b.unlabelled)


VALUES = st.sampled_from(["0", "-0", "-1.5", "1.5", "1e+06", "NaN", "+Inf", "-Inf", "42"])
NAMES = st.sampled_from(["a.fn", "b.fn", "été.fn", "c-1.ns"])
STAMPS = st.sampled_from([NOW, NOW - 30.0, NOW - 61.0, 999_999.123])


@given(st.lists(st.tuples(NAMES, VALUES, STAMPS), max_size=8))
def test_any_answer_of_the_common_shape_reads_as_the_general_path_reads_it(
    samples: list[tuple[str, str, float]],
) -> None:
    raw = body([sample(name, value, stamp) for name, value, stamp in samples])
    fast = _promql.fast_vector(raw, now=NOW, stale_after=60.0)
    assert fast is not None
    assert same(fast, general(raw))
    assert [math.copysign(1, v) for v in fast.values.values() if v == 0] == [
        math.copysign(1, v) for v in general(raw).values.values() if v == 0
    ]  # -0 reads as 0 both ways


def test_an_empty_answer_is_an_empty_vector() -> None:
    fast = _promql.fast_vector(body([]), now=NOW, stale_after=60.0)
    assert fast is not None
    assert fast.values == {}


def test_other_shapes_are_left_to_the_general_path() -> None:
    others = [
        body([{"metric": {"code": "200", "function_name": "a.fn"}, "value": [NOW, "1"]}]),  # more labels
        body([{"metric": {}, "value": [NOW, "1"]}]),  # no function_name: counted as unlabelled there
        body([sample('we"ird.fn', "1")]),  # an escaped name
        body([sample("a.fn", "1")], warnings=["something"]),  # warnings after the data
        body([sample("a.fn", "1")])[:-5],  # cut short
        json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode(),  # spaced
        b'{"status":"error","errorType":"bad_data","error":"parse error"}',
        b"not json at all",
        body([{"metric": {"function_name": "a.fn"}, "value": [NOW, "x"]}]),  # a value that is no number
    ]
    for raw in others:
        assert _promql.fast_vector(raw, now=NOW, stale_after=60.0) is None, raw
