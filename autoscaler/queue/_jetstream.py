"""The NATS connection and the two streams, kept behind one small object with one kind of error.

A proxy must start (and serve its synchronous routes) while NATS is still down, and a worker must wait
for NATS instead of crashing: the connection is made in the background and retried for as long as the
process runs, and every caller asks `jetstream()`, which raises QueueUnavailable with a sentence an
operator can act on when there is no connection. nats-py's own errors never leave this package.

The queue stream has work-queue retention: a message stays until a worker acknowledges it, whatever
happens to the worker, so an accepted call is never lost (invariant 3). Dead letters go to a second
stream with limits retention, kept until an operator looks at them, replays or purges them.
"""

from __future__ import annotations

import asyncio
import logging

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from autoscaler.config import QueueSettings
from autoscaler.errors import AutoscalerError
from autoscaler.interfaces import FunctionRef
from autoscaler.queue._message import dead_stream, function_of
from autoscaler.tasks import Background

log = logging.getLogger("autoscaler.queue")

RECONNECT_WAIT = 0.5
DUPLICATE_WINDOW = 120.0  # seconds JetStream drops a republished Nats-Msg-Id
CONSUMER_PAGE = 256  # consumers JetStream lists per request
# Errors nats-py raises for a server that is gone, slow or without JetStream.
NATS_ERRORS: tuple[type[Exception], ...] = (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError)


class QueueUnavailable(AutoscalerError):
    """NATS or JetStream cannot take or give calls right now; the message says which and where."""


class QueueConfigError(AutoscalerError):
    """A stream exists with settings the queue cannot work with."""


# What a caller of the link catches: ours and nats-py's.
UNAVAILABLE: tuple[type[Exception], ...] = (QueueUnavailable, *NATS_ERRORS)


class NatsLink:
    """One connection to NATS, made and re-made in the background; `jetstream()` when it is up."""

    def __init__(self, *, settings: QueueSettings, name: str) -> None:
        if not settings.servers():
            raise QueueConfigError("no --nats-url given")
        self._settings = settings
        self._name = name
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._connected = asyncio.Event()
        self._background = Background()
        self._last_error = "not connected yet"
        self._streams_ready = False
        self._closing = False
        # Bumped at each connection and reconnection: a pull subscription made before a reconnection
        # may be silent after it (nats-io/nats.py#504: the server forgot the pull it held), so a
        # consumer makes its subscription again when this moved.
        self.generation = 0

    @property
    def where(self) -> str:
        return ", ".join(self._settings.servers())

    async def start(self) -> None:
        """Begin connecting; returns at once (see `wait_connected`)."""
        self._background.spawn(self._connect(), name=f"nats connect {self._name}")

    async def _connect(self) -> None:
        async def on_error(error: Exception) -> None:
            text = f"{type(error).__name__}: {error}"
            if text != self._last_error:
                log.warning("NATS at %s: %s", self.where, text)
            self._last_error = text

        async def on_disconnected() -> None:
            self._connected.clear()
            if not self._closing:
                log.warning("NATS at %s disconnected; reconnecting", self.where)

        async def on_reconnected() -> None:
            self.generation += 1
            self._connected.set()
            log.info("NATS at %s reconnected", self.where)

        # With unlimited attempts nats-py keeps trying the first connection too, so this returns only
        # once connected (or is cancelled by close()).
        self._client = await nats.connect(
            servers=self._settings.servers(),
            name=self._name,
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        self._js = self._client.jetstream(timeout=self._settings.publish_timeout)
        self.generation += 1
        self._connected.set()
        log.info("NATS at %s connected", self.where)

    def connected(self) -> bool:
        return self._connected.is_set() and self._client is not None and self._client.is_connected

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout=timeout)
        except TimeoutError:
            return False
        return True

    def jetstream(self) -> JetStreamContext:
        if self._js is None or not self.connected():
            raise QueueUnavailable(
                f"the queue is unavailable: NATS at {self.where} is not reachable ({self._last_error}); "
                "nothing was queued, retry later"
            )
        return self._js

    @property
    def max_payload(self) -> int:
        return self._client.max_payload if self._client is not None else 1024 * 1024

    async def ensure_streams(self) -> None:
        """Create the queue and dead-letter streams when missing (idempotent; raises QueueUnavailable)."""
        if self._streams_ready:
            return
        js = self.jetstream()
        queue = self._settings.queue_name
        try:
            await _ensure(
                js,
                StreamConfig(
                    name=queue,
                    subjects=[f"{queue}.*.*"],
                    retention=RetentionPolicy.WORK_QUEUE,
                    storage=StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW,
                ),
            )
            await _ensure(
                js,
                StreamConfig(
                    name=dead_stream(queue),
                    subjects=[f"{dead_stream(queue)}.*.*"],
                    retention=RetentionPolicy.LIMITS,
                    storage=StorageType.FILE,
                ),
            )
        except QueueConfigError:
            raise
        except NATS_ERRORS as e:
            raise QueueUnavailable(
                f"the queue is unavailable: JetStream at {self.where} did not create stream {queue!r} "
                f"({type(e).__name__}: {e}); is the server started with JetStream (-js)?"
            ) from e
        self._streams_ready = True

    def forget_streams(self) -> None:
        """After a 'no stream' answer: check (and create) the streams again before the next use."""
        self._streams_ready = False

    async def close(self) -> None:
        self._closing = True
        await self._background.close()
        client, self._client = self._client, None
        self._js = None
        self._connected.clear()
        if client is not None and not client.is_closed:
            try:
                await asyncio.wait_for(client.close(), timeout=5)
            except NATS_ERRORS as e:
                log.debug("closing the NATS connection: %r", e)


async def _ensure(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
            log.info("created JetStream stream %s (%s)", config.name, config.retention)
            return
        except nats.js.errors.BadRequestError:
            info = await js.stream_info(config.name)  # another process created it first
    if info.config.retention != config.retention:
        raise QueueConfigError(
            f"JetStream stream {config.name!r} exists with retention {info.config.retention}, "
            f"expected {config.retention}: delete it (nats stream rm {config.name}) or choose another "
            "--queue-name"
        )


async def consumed(js: JetStreamContext, queue: str) -> set[FunctionRef]:
    """Every function with a durable consumer on the queue: called asynchronously at some time.

    Consumers outlive workers, so a restarted worker still knows (and reports 0 pending for) functions
    whose calls were all done before it started; without that, their pending figure would be no data.
    """
    found: set[FunctionRef] = set()
    offset = 0
    while True:
        page = await js.consumers_info(queue, offset=offset)
        for info in page:
            ref = function_of(queue, info.config.filter_subject or "")
            if ref is not None:
                found.add(ref)
        if len(page) < CONSUMER_PAGE:
            return found
        offset += len(page)
