"""The collector set-up of the long-running commands (`autoscaler.runtime`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from autoscaler.runtime import THRESHOLDS, YOUNG_THRESHOLD, settle_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class TestSettleCollector:
    @pytest.mark.usefixtures("restored_collector")
    def test_what_is_alive_at_start_up_is_frozen_out_of_collection(self) -> None:
        kept: list[list[int]] = [[] for _ in range(1000)]  # tracked objects alive at start-up
        settle_collector()
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold() == THRESHOLDS
        assert THRESHOLDS[0] == YOUNG_THRESHOLD > 700  # CPython's default young threshold

    @pytest.mark.usefixtures("restored_collector")
    def test_cycles_made_afterwards_are_still_collected(self) -> None:
        settle_collector()

        class Node:
            pass

        first, second = Node(), Node()
        first.other, second.other = second, first  # type: ignore[attr-defined]
        del first, second
        assert gc.collect() >= 2
