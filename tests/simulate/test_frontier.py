"""The trade-off curves: adaptive's points against the fixed keep-alive's curve at the same memory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from autoscaler.commands import simulate
from autoscaler.simulate.frontier import against, summary
from autoscaler.simulate.policies import SWEEP, check_policy, family, project_spec
from autoscaler.simulate.report import PolicyResult
from tests.support.cli import run_cli


def row(policy: str, memory: float, cold: float) -> PolicyResult:
    return PolicyResult(policy, 0.0, cold, 0.0, 0.0, 0.0, memory, 0)


FIXED = [row("fixed-1m", 100, 60), row("fixed-10m", 200, 40), row("fixed-60m", 400, 20)]


class TestTheComparison:
    def test_a_point_is_compared_with_the_fixed_curve_interpolated_at_its_memory(self) -> None:
        [point] = against([*FIXED, row("adaptive-p75", 300, 25)])
        assert point.baseline_cold_pct == pytest.approx(30.0)  # halfway from (200, 40) to (400, 20)
        assert point.below_by == pytest.approx(5.0)

    def test_a_point_above_the_curve_is_below_by_a_negative_amount(self) -> None:
        [point] = against([*FIXED, row("adaptive-p50", 150, 55)])
        assert point.below_by == pytest.approx(-5.0)
        assert summary([point]) == "adaptive is nowhere below the fixed curve (1 points compared)"

    def test_nothing_is_extrapolated_beyond_the_cheapest_and_dearest_fixed_points(self) -> None:
        points = against([*FIXED, row("adaptive-p50", 50, 70), row("adaptive-p99", 500, 10)])
        assert [p.baseline_cold_pct for p in points] == [None, None]
        assert summary(points).startswith("no adaptive point falls within the memory range")

    def test_the_summary_names_the_memory_range_and_the_best_point(self) -> None:
        points = against([*FIXED, row("adaptive-p60", 150, 45), row("adaptive-p90", 300, 22)])
        text = summary(points)
        assert "below the fixed curve at 2 of 2 points, between 150 and 300 GB-s" in text
        assert "most at adaptive-p90 (300 GB-s): 22.00 % against 30.00 %, 8.00 points lower" in text


class TestSweptPolicies:
    def test_the_sweep_spans_fixed_windows_of_1_to_120_minutes_and_adaptive_percentiles(self) -> None:
        fixed = [project_spec(name).zero_duration for name in SWEEP if family(name) == "fixed"]
        assert (min(fixed), max(fixed)) == (60.0, 7200.0)
        assert {family(name) for name in SWEEP} == {"fixed", "adaptive"}

    @pytest.mark.parametrize("name", ["fixed-0m", "fixed-2h", "adaptive-p5", "adaptive-p101", "lru"])
    def test_a_policy_the_simulator_does_not_know_is_refused_with_what_it_knows(self, name: str) -> None:
        with pytest.raises(ValueError, match=r"fixed-<N>m .* adaptive-p<P>"):
            check_policy(name)

    def test_a_bad_policy_flag_exits_2_with_one_line(self) -> None:
        done = run_cli("simulate", "--policy", "fixed-0m")
        assert done.returncode == 2
        assert "unknown policy 'fixed-0m'" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_the_sweep_on_the_shipped_sample_reports_both_curves_and_writes_them(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="autoscaler")
    simulate.add_parser(parser.add_subparsers(dest="command"))
    out, picture = tmp_path / "sweep.json", tmp_path / "sweep.png"
    args = parser.parse_args(
        [
            "simulate",
            "--sweep",
            "--functions",
            "12",
            "--json",
            str(out),
            "--plot",
            str(picture),
            "--jobs",
            "1",
        ]
    )
    assert simulate.run(args) == 0
    doc = json.loads(out.read_text())
    assert [r["policy"] for r in doc["results"]] == list(SWEEP)
    curve = doc["adaptive_vs_fixed_curve"]
    assert len(curve["points"]) == sum(family(name) == "adaptive" for name in SWEEP)
    assert curve["summary"].startswith("adaptive is")
    assert set(doc["assumptions"]["policies"]) == set(SWEEP)
    assert picture.stat().st_size > 10_000
