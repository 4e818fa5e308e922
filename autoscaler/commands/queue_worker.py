"""`autoscaler queue-worker`: invokes the asynchronous calls queued on JetStream, through the proxy.

Workers scale horizontally: JetStream gives each queued call to one worker at a time, and a call a
worker did not finish (killed, drained past its grace) goes back to the others after the ack wait.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from autoscaler.commands._flags import add_settings_flags, command, run_loop, settings
from autoscaler.config import QueueSettings, QueueWorkerSettings
from autoscaler.errors import ConfigError
from autoscaler.interfaces import DNS_LABEL, FunctionRef

log = logging.getLogger("autoscaler.queue")

CONNECT_WAIT = 5.0  # seconds `queue-replay` waits for NATS before it gives up


async def serve(*, queue: QueueSettings, settings: QueueWorkerSettings) -> int:
    from autoscaler.admin import AdminServer
    from autoscaler.queue import QueueWorker

    worker = QueueWorker(queue=queue, settings=settings)
    admin = AdminServer(
        host=settings.admin_host,
        port=settings.admin_port,
        registry=worker.registry,
        healthy=lambda: (True, "ok"),
        ready=lambda: (worker.ready(), worker.state()),
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await admin.start()  # a ConfigError when it cannot listen
        await worker.start()
        log.info(
            "queue-worker consuming %s from %s, invoking through %s (admin port %d)",
            queue.queue_name, ", ".join(queue.servers()), settings.proxy_url, admin.port,
        )  # fmt: skip
        await stop.wait()
        log.info("signal received: draining for up to %g s", settings.shutdown_grace)
        await worker.drain(grace=settings.shutdown_grace)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await worker.close()
        await admin.stop()
    return 0


def add_parser(subparsers: Any) -> None:
    """Register `autoscaler queue-worker` and `autoscaler queue-replay` on the CLI's subparsers."""
    worker = command(
        subparsers,
        "queue-worker",
        help="invoke the asynchronous calls queued on NATS JetStream, through the proxy",
        description="Pull each function's queued calls (one durable consumer per function), invoke them "
        "through the proxy's /function/ route, retry with back-off, post callbacks, dead-letter the rest.",
        handler=run,
    )
    add_settings_flags(worker, QueueSettings, QueueWorkerSettings)
    replay = command(
        subparsers,
        "queue-replay",
        help="send dead-lettered asynchronous calls back to the queue",
        description="Move the calls in the dead-letter stream (QUEUE-dead) of one function, or of all, back "
        "to the queue, with their original X-Call-Id; each is deleted from the dead letters once re-queued.",
        handler=run_replay,
    )
    replay.add_argument("function", nargs="?", help="NAME[.NAMESPACE] (default: every function)")
    replay.add_argument("--namespace", default="openfaas-fn", help="namespace when FUNCTION has none")
    replay.add_argument("--limit", type=int, default=None, help="replay at most this many")
    add_settings_flags(replay, QueueSettings)


def run(args: argparse.Namespace) -> int:
    queue: QueueSettings = settings(args, QueueSettings)
    worker: QueueWorkerSettings = settings(args, QueueWorkerSettings)
    if queue.nats_url is None:
        raise ConfigError("--nats-url (env AUTOSCALER_NATS_URL) is required, e.g. nats://nats.openfaas:4222")
    return run_loop(serve(queue=queue, settings=worker))


async def replay(*, queue: QueueSettings, function: FunctionRef | None, limit: int | None) -> int:
    from autoscaler.queue import QueueUnavailable
    from autoscaler.queue._jetstream import NATS_ERRORS, NatsLink
    from autoscaler.queue._replay import replay_dead

    link = NatsLink(settings=queue, name="autoscaler-queue-replay")
    await link.start()
    try:
        if not await link.wait_connected(CONNECT_WAIT):
            raise QueueUnavailable(f"NATS at {link.where} is not reachable (waited {CONNECT_WAIT:g}s)")
        try:
            moved = await replay_dead(link, queue=queue.queue_name, function=function, limit=limit)
        except NATS_ERRORS as e:
            raise QueueUnavailable(
                f"replaying from JetStream at {link.where} failed: {type(e).__name__}: {e}"
            ) from e
    finally:
        await link.close()
    which = function.key if function is not None else "every function"
    print(f"replayed {moved} dead letter(s) of {which} to the queue {queue.queue_name!r}")
    return 0


def run_replay(args: argparse.Namespace) -> int:
    queue: QueueSettings = settings(args, QueueSettings)
    if queue.nats_url is None:
        raise ConfigError("--nats-url (env AUTOSCALER_NATS_URL) is required, e.g. nats://nats.openfaas:4222")
    function: FunctionRef | None = None
    if args.function:
        name, _, namespace = args.function.partition(".")
        namespace = namespace or args.namespace
        if not DNS_LABEL.fullmatch(name) or not DNS_LABEL.fullmatch(namespace):
            raise ConfigError(f"invalid function {args.function!r}: expected NAME or NAME.NAMESPACE")
        function = FunctionRef(name=name, namespace=namespace)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1 (got {args.limit})")
    return asyncio.run(replay(queue=queue, function=function, limit=args.limit))
