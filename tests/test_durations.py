"""The stored durations that order the run (tests/conftest.py) name tests that exist, longest first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DURATIONS, scope_of, sort_longest_first, stored_durations

ROOT = Path(__file__).resolve().parent.parent


def test_every_stored_duration_names_a_test_file_of_the_project() -> None:
    stored = stored_durations()
    assert stored, f"{DURATIONS} is missing or empty: run pytest --store-durations"
    missing = [scope for scope in stored if not (ROOT / scope.split("::", 1)[0]).is_file()]
    assert not missing, f"stale entries in {DURATIONS.name} (run pytest --store-durations): {missing}"


@dataclass
class Node:
    nodeid: str


def test_the_longest_stored_scopes_go_first_and_the_others_keep_their_order() -> None:
    items = [Node(n) for n in ("a.py::t1", "b.py::t1", "b.py::t2[x]", "c.py::T::t", "d.py::t", "c.py::T::u")]
    sort_longest_first(items, {"c.py::T": 30.0, "b.py": 10.0, "gone.py": 99.0})

    assert [item.nodeid for item in items] == [
        "c.py::T::t", "c.py::T::u", "b.py::t1", "b.py::t2[x]", "a.py::t1", "d.py::t"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("nodeid", "scope"),
    [
        ("tests/a.py::test_x", "tests/a.py"),
        ("tests/a.py::test_x[1::2]", "tests/a.py"),
        ("tests/a.py::TestY::test_x[p]", "tests/a.py::TestY"),
    ],
)
def test_a_scope_is_the_class_of_a_test_method_else_its_file(nodeid: str, scope: str) -> None:
    assert scope_of(nodeid) == scope
