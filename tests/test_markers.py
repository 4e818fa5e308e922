"""Markers mean what they say: a test that starts a real Prometheus or nats-server carries the marker,
so `-m "not prometheus"` or `-m "not slow"` really leaves the binary and the wait out.

tests/conftest.py adds the markers from the fixtures a test uses; these tests check that hook on the
tests of this run and on a collected sample of real test files, and the run-time guard that fails a
test starting a server without its marker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import conftest
from tests.support.child import ChildServer

TESTS = Path(__file__).resolve().parent


def _wants(item: pytest.Item) -> list[str]:
    return conftest.markers_for(getattr(item, "fixturenames", ()))


def test_every_test_of_this_run_that_uses_a_server_fixture_carries_its_marker(
    request: pytest.FixtureRequest,
) -> None:
    missing = [
        f"{item.nodeid}: {name}"
        for item in request.session.items
        for name in _wants(item)
        if item.get_closest_marker(name) is None
    ]
    assert missing == []


def test_the_markers_follow_the_fixtures_transitively() -> None:
    assert conftest.markers_for(["tmp_path"]) == []
    assert conftest.markers_for(["live", "module_prometheus_factory"]) == ["prometheus", "slow"]
    assert conftest.markers_for(["stack", "nats_server"]) == ["nats"]


class _Collected:
    def __init__(self) -> None:
        self.marks: dict[str, set[str]] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.marks = {
            item.nodeid.rpartition("::")[2]: {mark.name for mark in item.iter_markers()}
            for item in session.items
        }


def _collect(*paths: Path) -> dict[str, set[str]]:
    """The markers of each test of `paths` (by its name), as a fresh collection gives them."""
    collected = _Collected()
    code = pytest.main(
        ["--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *map(str, paths)],
        plugins=[collected],
    )
    assert code == pytest.ExitCode.OK
    return collected.marks


def test_on_a_sample_of_files_the_server_markers_select_exactly_the_tests_that_start_one() -> None:
    # None of these carries a server marker by hand: the fixtures alone decide.
    marks = _collect(TESTS / "controller/test_keepalive_seeding.py", TESTS / "e2e/test_explain_live.py")
    with_prometheus = {name for name, found in marks.items() if "prometheus" in found}
    assert {name for name in with_prometheus if not name.startswith("test_explain")} == {
        "test_the_history_query_selects_exactly_the_named_functions_in_a_real_prometheus"
    }
    explain = {name for name in marks if name.startswith("test_explain")}
    assert len(explain) == 6
    assert explain <= with_prometheus
    assert all("slow" in marks[name] and "nats" not in marks[name] for name in with_prometheus)
    assert len(marks) > len(with_prometheus)  # the file's other tests stay unmarked


class _Server(ChildServer):
    name = "some-server"
    marker = "prometheus"


def test_starting_a_server_without_its_marker_fails_the_test(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("prometheus") is None
    with pytest.raises(AssertionError, match="starts some-server without the `prometheus` marker"):
        _Server().check_marked()


@pytest.mark.prometheus
def test_with_its_marker_the_same_start_passes(request: pytest.FixtureRequest) -> None:
    _Server().check_marked()
