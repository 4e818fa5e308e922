"""One asynchronous call as it sits on JetStream, and the names of the streams, subjects and consumers.

The body is the message payload byte for byte (no base64: a 1 MiB body stays a 1 MiB message, inside
NATS's limit once the server's `max_payload` leaves room for the headers); everything else about the
HTTP request (method, path, query, headers, callback URL, call id) travels in one JSON header, ASCII
only, so no header value can break the NATS header block.

Each function has its own subject, `QUEUE.NAME.NAMESPACE`, and its own durable pull consumer filtered on
it ("function mode", as OpenFaaS Pro): one slow or failing function never holds up another's calls.
Names and namespaces are DNS labels (no '.', no '_'), so the subject and the durable name
`fn_NAME_NAMESPACE` stay one-to-one with the function.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autoscaler.interfaces import FunctionRef

CALL_HEADER = "Autoscaler-Call"
DEAD_REASON_HEADER = "Autoscaler-Dead-Reason"
DEAD_STATUS_HEADER = "Autoscaler-Dead-Status"
VERSION = 1


class MessageError(ValueError):
    """A message on the queue is not a call this worker can read (it goes to the dead letters)."""


@dataclass(frozen=True, slots=True)
class QueuedCall:
    """What the worker needs to invoke the function as the caller asked, and to answer the callback."""

    ref: FunctionRef
    method: str
    path: str  # after /function/NAME.NAMESPACE: starts with '/'
    query: str  # raw query string without '?', may be empty
    headers: tuple[tuple[str, str], ...]
    call_id: str
    callback_url: str | None
    accepted_at: float  # unix time of the 202
    body: bytes = b""
    retry: Mapping[str, str] = field(default_factory=dict)  # the function's com.openfaas.retry.* labels

    def nats_headers(self) -> dict[str, str]:
        document: dict[str, Any] = {
            "v": VERSION,
            "function": self.ref.key,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": [list(pair) for pair in self.headers],
            "call_id": self.call_id,
            "callback_url": self.callback_url,
            "accepted_at": self.accepted_at,
            "retry": dict(self.retry),
        }
        return {CALL_HEADER: json.dumps(document, ensure_ascii=True, separators=(",", ":"))}

    @classmethod
    def decode(cls, headers: Mapping[str, str] | None, body: bytes) -> QueuedCall:
        """Read a call back from a message; MessageError when it is not one."""
        raw = (headers or {}).get(CALL_HEADER)
        if raw is None:
            raise MessageError(f"no {CALL_HEADER} header: not a call queued by the proxy")
        try:
            doc = json.loads(raw)
            if doc.get("v") != VERSION:
                raise MessageError(f"message version {doc.get('v')!r} is not {VERSION}")
            name, _, namespace = str(doc["function"]).partition(".")
            return cls(
                ref=FunctionRef(name=name, namespace=namespace),
                method=str(doc["method"]),
                path=str(doc["path"]),
                query=str(doc["query"]),
                headers=tuple((str(k), str(v)) for k, v in doc["headers"]),
                call_id=str(doc["call_id"]),
                callback_url=None if doc.get("callback_url") is None else str(doc["callback_url"]),
                accepted_at=float(doc["accepted_at"]),
                body=body,
                retry={str(k): str(v) for k, v in dict(doc.get("retry") or {}).items()},
            )
        except MessageError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise MessageError(f"malformed {CALL_HEADER} header: {e!r}") from e


def subject(queue: str, ref: FunctionRef) -> str:
    """The subject a function's calls are published on."""
    return f"{queue}.{ref.name}.{ref.namespace}"


def function_of(queue: str, subject_name: str) -> FunctionRef | None:
    """The function a subject of `queue` belongs to, or None for anything else."""
    parts = subject_name.split(".")
    if len(parts) != 3 or parts[0] != queue or not parts[1] or not parts[2]:
        return None
    return FunctionRef(name=parts[1], namespace=parts[2])


def durable(ref: FunctionRef) -> str:
    """The durable consumer of one function's subject."""
    return f"fn_{ref.name}_{ref.namespace}"


def dead_stream(queue: str) -> str:
    return f"{queue}-dead"


def dead_subject(queue: str, ref: FunctionRef) -> str:
    return f"{dead_stream(queue)}.{ref.name}.{ref.namespace}"
