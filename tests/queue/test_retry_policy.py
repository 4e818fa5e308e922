"""The retry schedule, a pure decision stepped on virtual time: OpenFaaS Pro's defaults, the codes it
retries, the cap on the wait, the last attempt, and the function's own labels over the defaults."""

from __future__ import annotations

import logging

import pytest

from autoscaler.queue._retry import policy_for
from policies.retry import NO_ANSWER, RetryPolicy, backoff, decide

NOW = 1_700_000_000.0


class TestTheDefaultSchedule:
    def test_is_ten_attempts_waiting_10s_doubling_up_to_120s(self) -> None:
        policy = RetryPolicy()
        now = NOW
        waits = []
        attempt = 1
        while True:
            decision = decide(policy, attempt=attempt, status=429, now=now)
            if not decision.retry:
                break
            assert decision.at == now + decision.delay
            waits.append(decision.delay)
            now = decision.at  # the next attempt happens exactly when it is due (virtual time)
            attempt += 1
        assert waits == [10, 20, 40, 80, 120, 120, 120, 120, 120]
        assert attempt == 10
        assert now == NOW + sum(waits)
        assert "last of 10 attempts" in decision.reason

    @pytest.mark.parametrize("status", [429, 502, 500, 504, 408])
    def test_retries_the_openfaas_pro_codes(self, status: int) -> None:
        assert decide(RetryPolicy(), attempt=1, status=status, now=NOW).retry

    @pytest.mark.parametrize("status", [200, 202, 400, 404, 503])
    def test_takes_other_statuses_as_final(self, status: int) -> None:
        decision = decide(RetryPolicy(), attempt=1, status=status, now=NOW)
        assert not decision.retry
        assert decision.at == NOW
        assert "is final" in decision.reason

    def test_retries_a_call_that_got_no_answer_at_all(self) -> None:
        decision = decide(RetryPolicy(), attempt=3, status=NO_ANSWER, now=NOW)
        assert decision.retry
        assert decision.delay == 40
        assert "no answer" in decision.reason


class TestAPolicy:
    def test_with_a_zero_initial_wait_retries_at_once(self) -> None:
        assert backoff(RetryPolicy(min_wait=0, max_wait=0), attempt=5) == 0

    def test_never_overflows_on_a_huge_attempt_number(self) -> None:
        assert backoff(RetryPolicy(), attempt=10_000) == 120

    def test_of_one_attempt_never_retries(self) -> None:
        assert not decide(RetryPolicy(attempts=1), attempt=1, status=500, now=NOW).retry

    @pytest.mark.parametrize(
        "kwargs", [{"attempts": 0}, {"min_wait": -1}, {"min_wait": 10, "max_wait": 5}], ids=str
    )
    def test_refuses_impossible_settings(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError, match=r"attempts|negative|below"):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]


class TestTheFunctionsLabels:
    def test_override_the_workers_defaults(self) -> None:
        labels = {
            "com.openfaas.retry.attempts": "3",
            "com.openfaas.retry.codes": "503, 429",
            "com.openfaas.retry.min_wait": "500ms",
            "com.openfaas.retry.max_wait": "2s",
        }
        policy = policy_for(labels, RetryPolicy(), function="f.ns")
        assert policy == RetryPolicy(attempts=3, min_wait=0.5, max_wait=2.0, codes=frozenset({503, 429}))
        waits = [decide(policy, attempt=a, status=503, now=NOW).delay for a in (1, 2)]
        assert waits == [0.5, 1.0]
        assert not decide(policy, attempt=3, status=503, now=NOW).retry

    def test_that_are_invalid_leave_that_setting_at_its_default_and_say_so(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        labels = {"com.openfaas.retry.attempts": "many", "com.openfaas.retry.min_wait": "soon"}
        with caplog.at_level(logging.WARNING, logger="autoscaler.queue"):
            policy = policy_for(labels, RetryPolicy(attempts=4), function="f.ns")
        assert policy == RetryPolicy(attempts=4)
        assert "com.openfaas.retry.attempts='many' is invalid" in caplog.text
        assert "com.openfaas.retry.min_wait='soon' is invalid" in caplog.text

    def test_with_max_wait_below_min_wait_use_min_wait_for_both(self) -> None:
        labels = {"com.openfaas.retry.min_wait": "30s", "com.openfaas.retry.max_wait": "10s"}
        policy = policy_for(labels, RetryPolicy(), function="f.ns")
        assert (policy.min_wait, policy.max_wait) == (30.0, 30.0)
