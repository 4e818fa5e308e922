"""The cross-function prior: built online from the other functions, it never looks ahead.

A function with fewer than `min_idle_times` idle times of its own takes its windows from the idle
times other functions had by its latest call; its decisions before any time t must then be the same
whether or not the trace goes on after t.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoscaler.simulate.policies import PRIOR, SimSettings, prior_for, simulate_function
from autoscaler.simulate.trace import TraceFunction, read_trace
from policies.adaptive import HybridHistogram
from policies.prior import IdlePrior
from tests.support.child import shared_path


def test_an_idle_time_is_known_only_after_the_minute_of_the_call_that_ended_it() -> None:
    prior = IdlePrior.from_minute_counts([np.array([1, 0, 0, 2, 1, 0, 0, 0, 1])])
    assert prior.known_at.tolist() == [240.0, 300.0, 540.0]
    assert prior.idle_bins.tolist() == [2, 0, 3]
    histogram, beyond = prior.counts(before=300.0, exclude=-1)
    assert (histogram[:4].tolist(), beyond) == ([0, 0, 1, 0], 0)  # the gap ended at 4 min is not known yet
    assert prior.counts(before=1e9, exclude=0)[0].sum() == 0  # a function is not its own prior


@pytest.mark.parametrize(
    ("per_function", "want"),
    [(1, [10]), (2, [10, 20]), (20, [10, 20, 30])],
)
def test_each_function_brings_at_most_its_first_idle_times(per_function: int, want: list[int]) -> None:
    series = np.zeros(100, dtype=np.int64)
    series[[0, 11, 32, 63]] = 1
    prior = IdlePrior.from_minute_counts([series], per_function=per_function)
    assert prior.idle_bins.tolist() == want


def test_a_function_without_history_starts_from_the_others_and_the_old_policy_stays_fixed() -> None:
    # Twenty functions called every 30 minutes; a newcomer is called twice.
    every_30 = np.zeros(1440, dtype=np.int64)
    every_30[::30] = 1
    newcomer = np.zeros(1440, dtype=np.int64)
    prior = IdlePrior.from_minute_counts([every_30] * 20 + [newcomer])
    learned = HybridHistogram(fixed_keepalive=600.0, prior=prior, owner=20)
    alone = HybridHistogram(fixed_keepalive=600.0)
    for policy in (learned, alone):
        policy.observe_call(now=5000.0)
        policy.observe_call(now=5100.0)
    assert alone.windows(now=5100.0) == (0.0, 600.0)
    prewarm, keep = learned.windows(now=5100.0)
    assert learned.mode == "prior"
    assert prewarm == pytest.approx(29 * 60 * 0.9)  # 29 empty minutes between calls 30 minutes apart
    assert prewarm + keep == pytest.approx(31 * 60 * 1.1)


def _cut(fn: TraceFunction, minute: int) -> TraceFunction:
    counts = fn.counts.copy()
    counts[minute:] = 0
    return TraceFunction(fn.key, fn.app, fn.trigger, counts, fn.duration, fn.memory_mb)


@pytest.mark.slow
def test_decisions_before_t_do_not_change_when_the_calls_after_t_are_removed() -> None:
    functions = read_trace(shared_path("traces", "azure2019-1000")).functions[:300]
    minute = 9 * 60
    cut = [_cut(fn, minute) for fn in functions]
    full_prior, cut_prior = prior_for(functions), prior_for(cut)
    changed = 0
    for owner in range(0, 300, 15):
        settings = SimSettings()
        runs = [
            simulate_function(
                fns[owner],
                policies=(PRIOR,),
                settings=settings,
                end=86400.0,
                keep_changes=True,
                prior=p,
                owner=owner,
            )[PRIOR].changes
            for fns, p in ((functions, full_prior), (cut, cut_prior))
        ]
        before = [[change for change in run if change[0] < minute * 60] for run in runs]
        assert before[0] == before[1], functions[owner].key
        changed += runs[0] != runs[1]
    assert changed > 0  # the cut did change later decisions: the comparison was not vacuous


def test_the_simulator_knows_the_policy_and_refuses_it_without_a_prior(tmp_path: Path) -> None:
    from autoscaler.simulate.policies import check_policy, describe, is_project
    from tests.simulate.support import write_trace

    assert check_policy(PRIOR) == PRIOR
    assert is_project(PRIOR)
    assert "policies.prior.IdlePrior" in describe(PRIOR)
    fn = read_trace(write_trace(tmp_path / "t", {"f": [(1, 2), (9, 1)]}, minutes=30)).functions[0]
    with pytest.raises(ValueError, match="needs the trace's prior"):
        simulate_function(fn, policies=(PRIOR,), settings=SimSettings(), end=1800.0)
    done = simulate_function(
        fn, policies=(PRIOR,), settings=SimSettings(), end=1800.0, prior=prior_for([fn]), owner=0
    )
    assert done[PRIOR].invocations == 3
