"""What the demo shows while it runs: a live table on a terminal, plain lines anywhere else.

One row per function (replicas, desired, load, held requests, the loop's last reason), refreshed a
few times a second with rich when stdout is a terminal. When it is not (a pipe, a CI log, a test),
a live table would print escape codes, so the same facts come out as a plain line on each change.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from autoscaler.demo.stack import LocalStack


@dataclass(frozen=True, slots=True)
class Row:
    function: str
    replicas: int  # ready
    desired: int
    load: str
    held: int
    reason: str

    def line(self) -> str:
        return (
            f"{self.function}: replicas={self.replicas} desired={self.desired} load={self.load} "
            f"held={self.held} last change={self.reason}"
        )


def rows(stack: LocalStack) -> list[Row]:
    stats = stack.proxy.invocation_stats()
    views = stack.controller.views
    last = {event.function: event.reason for event in stack.provider.events()}
    out = []
    for ref in stack.refs:
        info = stack.provider.get(ref)
        if info is None:
            continue
        view = views.get(ref.key)
        load = "no data"
        if view is not None and view.load is not None and view.spec is not None:
            load = f"{view.load:.1f} {view.spec.type.value}"
        held = stats[ref.key].held if ref.key in stats else 0
        reason = last.get(ref.key, "-")
        out.append(Row(ref.name, info.ready_replicas, info.replicas, load, held, reason))
    return out


class View:
    """Live table (terminal) or change lines (anything else) over a running stack."""

    def __init__(self, *, stack: LocalStack, out: TextIO | None = None) -> None:
        self._stack = stack
        self._out = out or sys.stdout
        self._console = Console(file=self._out)
        self.live = self._console.is_terminal
        self._live: Live | None = None
        self._phase = ""
        self._last: dict[str, tuple[int, int, int, str]] = {}
        self._started = time.monotonic()
        self.peaks: dict[str, int] = {}

    def __enter__(self) -> View:
        if self.live:
            self._live = Live(self._render(), console=self._console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live table, leaving its last state on screen; later output goes below it."""
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.__exit__(None, None, None)
            self._live = None

    def say(self, text: str) -> None:
        """A line of narration above the table (or in the log of lines)."""
        if self._live is not None:
            self._live.console.print(text)
        else:
            print(text, file=self._out, flush=True)

    def phase(self, text: str) -> None:
        self._phase = text
        self.say(f"[{self._elapsed():5.1f}s] {text}")

    def refresh(self) -> None:
        current = rows(self._stack)
        for row in current:
            self.peaks[row.function] = max(self.peaks.get(row.function, 0), row.replicas)
        if self.live:
            if self._live is not None:
                self._live.update(self._render(current))
            return
        for row in current:
            key = (row.replicas, row.desired, row.held, row.reason)
            if self._last.get(row.function) != key:
                self._last[row.function] = key
                print(f"[{self._elapsed():5.1f}s] {row.line()}", file=self._out, flush=True)

    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _render(self, current: list[Row] | None = None) -> Group:
        table = Table(title=f"{self._stack.url}  {self._phase}", title_justify="left")
        for column in ("function", "replicas", "desired", "load", "held requests", "last change"):
            table.add_column(
                column, justify="right" if column in ("replicas", "desired", "held requests") else "left"
            )
        for row in current if current is not None else rows(self._stack):
            table.add_row(
                row.function, str(row.replicas), str(row.desired), row.load, str(row.held), row.reason
            )
        events = self._stack.provider.events()[-4:]
        lines = [
            Text(f"{e.function.partition('.')[0]}: {e.message}", style="yellow" if e.warning else "dim")
            for e in events
        ]
        return Group(table, *lines)
