"""Markers that follow from what a test uses, so they cannot drift from the tests they describe.

- `prometheus`: the test starts a real Prometheus (it uses a fixture of `PROMETHEUS_FIXTURES`, directly
  or through another fixture); `nats`: it starts a real nats-server (`NATS_FIXTURES`). Added here at
  collection; a test that starts a server some other way must carry the marker by hand, and
  `ChildServer.check_marked` (tests/support/child.py) fails it when it does not.
- `slow`: the test takes more than about `SLOW_SECONDS` (set-up, call and tear-down). Every test
  starting a Prometheus is slow (start-up, then a full rate window of scrapes before anything can be
  asserted); other slow tests are marked by hand. At the end of a run, the terminal summary names the
  tests that took longer than `SLOW_SECONDS` without the marker.

`pytest -m "not slow"` is the fast subset.

Order: pytest-xdist hands each worker a whole file (or class) at a time, in the order collected, so a
long file collected last finishes alone while the other workers sit idle. `tests/durations.json` keeps
how long each file or class took in a past run, and collection puts the longest first (the others keep
their order after them). `pytest --store-durations` writes it again from the run it ends; it only
steers the order, so a stale or missing entry costs time, never a result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from tests.support import child

PROMETHEUS_FIXTURES = frozenset({"prometheus_factory", "module_prometheus_factory"})
NATS_FIXTURES = frozenset({"nats_server"})
SLOW_SECONDS = 3.0
DURATIONS = Path(__file__).with_name("durations.json")


class _HasNodeid(Protocol):
    @property
    def nodeid(self) -> str: ...


_Node = TypeVar("_Node", bound=_HasNodeid)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write how long each test file or class took to {DURATIONS.name} (it orders the next runs)",
    )


def scope_of(nodeid: str) -> str:
    """The unit pytest-xdist's `--dist loadscope` hands out: a test's class, else its file."""
    return nodeid.split("[", 1)[0].rsplit("::", 1)[0]


def stored_durations() -> dict[str, float]:
    """`tests/durations.json` as {scope: seconds}; empty if it is missing or not such a mapping."""
    try:
        stored = json.loads(DURATIONS.read_text())
        return {str(scope): float(seconds) for scope, seconds in stored.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def markers_for(fixturenames: Iterable[str]) -> list[str]:
    """The markers a test using these fixtures (the transitive closure pytest computes) must carry."""
    used = set(fixturenames)
    markers = []
    if used & PROMETHEUS_FIXTURES:
        markers += ["prometheus", "slow"]
    if used & NATS_FIXTURES:
        markers.append("nats")
    return markers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in markers_for(getattr(item, "fixturenames", ())):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)
    sort_longest_first(items, stored_durations())


def sort_longest_first(items: list[_Node], stored: dict[str, float]) -> None:
    """Longest stored scope first; the sort is stable, so the rest keep their collected order."""
    items.sort(key=lambda item: -stored.get(scope_of(item.nodeid), 0.0))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Warm the Prometheus pool's common shapes in a process that will run Prometheus tests."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None and session.config.getoption("numprocesses", None):
        return  # pytest-xdist's controller: its workers run the tests
    if session.config.option.collectonly:
        return  # nothing will run
    if not any(item.get_closest_marker("prometheus") for item in session.items):
        return
    from tests.support.prometheus import find_binary
    from tests.support.prometheus_pool import COMMON_SHAPES, POOL

    binary = find_binary()
    if binary is not None and POOL.enabled:
        POOL.prewarm(COMMON_SHAPES, binary=binary)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    child.running = item
    try:
        return (yield)
    finally:
        child.running = None


_durations: dict[str, float] = {}
_unmarked: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if "slow" not in report.keywords:
        _unmarked.add(report.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not session.config.getoption("store_durations") or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    scopes: dict[str, float] = {}
    for nodeid, seconds in _durations.items():
        scope = scope_of(nodeid)
        scopes[scope] = scopes.get(scope, 0.0) + seconds
    kept = {scope: round(seconds, 1) for scope, seconds in sorted(scopes.items()) if seconds >= 1.0}
    DURATIONS.write_text(json.dumps(kept, indent=1) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    late = sorted(
        ((seconds, nodeid) for nodeid, seconds in _durations.items()
         if nodeid in _unmarked and seconds > SLOW_SECONDS),
        reverse=True,
    )  # fmt: skip
    if late:
        terminalreporter.section(f"tests over {SLOW_SECONDS:g}s without the slow marker")
        for seconds, nodeid in late:
            terminalreporter.line(f"{seconds:6.2f}s {nodeid}")
