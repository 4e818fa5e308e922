"""Posting a call's result to its `X-Callback-Url`, with retries of its own.

The callback carries the function's response (body and headers) and the headers OpenFaaS's
queue-worker sets: `X-Call-Id` (the caller's correlation id), `X-Function-Status`, `X-Function-Name`
and `X-Duration-Seconds`. A receiver that is down is retried on a short bounded schedule and then given
up on; the caller of `deliver` records that (a dead letter and a log line). Delivery runs after the
function's concurrency slot was given back, so a dead receiver delays only its own call's ack, never
the next call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from autoscaler.queue._message import QueuedCall
from policies.retry import NO_ANSWER, RetryPolicy, decide

log = logging.getLogger("autoscaler.queue")

CALLBACK_CODES = frozenset({408, 429, 500, 502, 503, 504})
# Function response headers that describe the function's own connection, not its result.
_SKIP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Transfer-Encoding", "TE", "Trailer", "Upgrade", "Content-Length")
)


@dataclass(frozen=True, slots=True)
class FunctionResult:
    status: int  # NO_ANSWER when the proxy gave no HTTP answer
    body: bytes
    headers: tuple[tuple[str, str], ...]
    duration: float  # seconds of the last attempt


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    delivered: bool
    attempts: int
    detail: str  # the receiver's last status or the connection error


def callback_headers(call: QueuedCall, result: FunctionResult) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in result.headers if k.lower() not in _SKIP and not k.lower().startswith("x-call-id")
    )
    headers["X-Call-Id"] = call.call_id
    headers["X-Function-Status"] = str(result.status if result.status != NO_ANSWER else 503)
    headers["X-Function-Name"] = call.ref.key
    headers["X-Duration-Seconds"] = f"{result.duration:.6f}"
    return headers


async def deliver(
    session: aiohttp.ClientSession,
    *,
    call: QueuedCall,
    result: FunctionResult,
    policy: RetryPolicy,
    timeout: float,
    clock: Callable[[], float] = time.time,
) -> CallbackOutcome:
    """POST the result to the call's callback URL until it answers below 500 or the attempts run out."""
    assert call.callback_url is not None
    headers = callback_headers(call, result)
    attempt = 0
    while True:
        attempt += 1
        status = NO_ANSWER
        try:
            async with session.post(
                call.callback_url,
                data=result.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
                detail = f"answered {status}"
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            detail = f"{type(e).__name__}: {e}"
        decision = decide(policy, attempt=attempt, status=status, now=clock())
        if status != NO_ANSWER and status not in policy.codes:
            return CallbackOutcome(delivered=status < 400, attempts=attempt, detail=detail)
        if not decision.retry:
            return CallbackOutcome(delivered=False, attempts=attempt, detail=detail)
        log.info(
            "callback for call %s to %s %s; %s", call.call_id, call.callback_url, detail, decision.reason
        )
        await asyncio.sleep(decision.delay)


def response_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in headers.items())
