"""Asynchronous calls on NATS JetStream: accepted by the proxy, invoked later by `autoscaler queue-worker`.

Public API: `AsyncAcceptor` (the proxy's `/async-function/` hook), `QueueWorker` (pull, invoke through
the proxy, retry, callback, dead letters) and `QueuedCall` (one call as it sits on the queue).
"""

from autoscaler.queue._accept import AsyncAcceptor
from autoscaler.queue._jetstream import QueueConfigError, QueueUnavailable
from autoscaler.queue._message import QueuedCall, dead_stream, dead_subject, subject
from autoscaler.queue._worker import QueueWorker

__all__ = [
    "AsyncAcceptor",
    "QueueConfigError",
    "QueueUnavailable",
    "QueueWorker",
    "QueuedCall",
    "dead_stream",
    "dead_subject",
    "subject",
]
