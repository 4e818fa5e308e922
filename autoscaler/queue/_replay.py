"""Replaying dead letters: an operator's way to send calls that ran out of attempts back to the queue.

A dead letter keeps the call exactly as it was accepted (the same headers, body and `X-Call-Id`, so the
function and the callback receiver can tell it is the same call), plus why and with which status it
died. Replaying publishes it to its function's subject again and, only once JetStream acknowledged
that, deletes it from the dead-letter stream: a replay interrupted halfway leaves every call in one of
the two streams, never in neither.
"""

from __future__ import annotations

import logging

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from autoscaler.interfaces import FunctionRef
from autoscaler.queue._jetstream import NatsLink
from autoscaler.queue._message import (
    DEAD_REASON_HEADER,
    DEAD_STATUS_HEADER,
    dead_stream,
    function_of,
    subject,
)

log = logging.getLogger("autoscaler.queue")

BATCH = 100
FETCH_WAIT = 5.0


async def replay_dead(
    link: NatsLink, *, queue: str, function: FunctionRef | None = None, limit: int | None = None
) -> int:
    """Move up to `limit` dead letters (of `function`, or all) back to the queue; how many were moved."""
    await link.ensure_streams()
    js = link.jetstream()
    dead = dead_stream(queue)
    wanted = f"{dead}.{function.name}.{function.namespace}" if function is not None else f"{dead}.*.*"
    sub = await js.pull_subscribe(
        wanted,
        stream=dead,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            inactive_threshold=30.0,  # the server removes this one-off consumer if we vanish
        ),
    )
    moved = 0
    try:
        # The dead letters there are now, counted once: a fetch that comes back empty on a busy server
        # does not end the replay early, and letters that die while we replay wait for the next one.
        todo = (await sub.consumer_info()).num_pending or 0
        if limit is not None:
            todo = min(todo, limit)
        while todo > 0:
            try:
                messages = await sub.fetch(batch=min(BATCH, todo), timeout=FETCH_WAIT)
            except nats.errors.TimeoutError:
                log.warning("no dead letter within %.0f s, %d still to replay; stopping", FETCH_WAIT, todo)
                break
            for msg in messages:
                ref = function_of(dead, msg.subject)
                todo -= 1
                if ref is None:
                    await msg.ack()
                    continue
                headers = {
                    k: v
                    for k, v in (msg.headers or {}).items()
                    if k not in (DEAD_REASON_HEADER, DEAD_STATUS_HEADER) and not k.startswith("Nats-")
                }
                sequence = msg.metadata.sequence.stream
                # A fresh message id: the original one may still be inside the duplicate window.
                headers["Nats-Msg-Id"] = f"replay-{dead}-{sequence}"
                await js.publish(subject(queue, ref), msg.data, stream=queue, headers=headers)
                await js.delete_msg(dead, sequence)
                await msg.ack()
                moved += 1
                log.info("replayed dead letter %d of %s to the queue", sequence, ref.key)
    finally:
        await sub.unsubscribe()
    return moved
