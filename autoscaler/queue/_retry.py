"""A function's retry schedule from its `com.openfaas.retry.*` labels, over the worker's defaults.

OpenFaaS Pro reads `com.openfaas.retry.attempts`, `.codes`, `.min_wait` and `.max_wait` from the
function; the acceptor copies them into the queued call, so the schedule a call follows is the one its
function had when it was accepted. A bad value never drops a call: the default is used for that one
setting and a warning says which label, which value and what is allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from autoscaler.config import parse_codes
from autoscaler.spec import parse_duration
from policies.retry import RetryPolicy

log = logging.getLogger("autoscaler.queue")

ATTEMPTS = "com.openfaas.retry.attempts"
CODES = "com.openfaas.retry.codes"
MIN_WAIT = "com.openfaas.retry.min_wait"
MAX_WAIT = "com.openfaas.retry.max_wait"


def policy_for(labels: Mapping[str, str], default: RetryPolicy, *, function: str) -> RetryPolicy:
    """`default` with every valid retry label of the function applied."""
    attempts, codes = default.attempts, default.codes
    min_wait, max_wait = default.min_wait, default.max_wait
    if ATTEMPTS in labels:
        value = labels[ATTEMPTS].strip()
        if value.isdigit() and int(value) >= 1:
            attempts = int(value)
        else:
            _bad(function, ATTEMPTS, value, "a whole number of at least 1")
    if CODES in labels:
        try:
            codes = parse_codes(labels[CODES])
        except ValueError:
            _bad(function, CODES, labels[CODES], "comma-separated HTTP status codes, e.g. 429,503")
    if MIN_WAIT in labels:
        try:
            min_wait = parse_duration(labels[MIN_WAIT])
        except ValueError:
            _bad(function, MIN_WAIT, labels[MIN_WAIT], "a Go duration, e.g. 5s or 1m")
    if MAX_WAIT in labels:
        try:
            max_wait = parse_duration(labels[MAX_WAIT])
        except ValueError:
            _bad(function, MAX_WAIT, labels[MAX_WAIT], "a Go duration, e.g. 2m")
    if max_wait < min_wait:
        log.warning(
            "function %s: retry max_wait %gs is below min_wait %gs; using %gs for both",
            function, max_wait, min_wait, min_wait,
        )  # fmt: skip
        max_wait = min_wait
    return RetryPolicy(attempts=attempts, min_wait=min_wait, max_wait=max_wait, codes=codes)


def _bad(function: str, label: str, value: str, allowed: str) -> None:
    log.warning(
        "function %s: label %s=%r is invalid (expected %s); the default applies",
        function,
        label,
        value,
        allowed,
    )
