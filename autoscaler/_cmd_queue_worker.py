"""`autoscaler queue-worker`: invokes the asynchronous calls queued on JetStream, through the proxy.

Workers scale horizontally: JetStream gives each queued call to one worker at a time, and a call a
worker did not finish (killed, drained past its grace) goes back to the others after the ack wait.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from autoscaler.cli import settings_overrides
from autoscaler.config import QueueSettings, QueueWorkerSettings, build
from autoscaler.errors import ConfigError

log = logging.getLogger("autoscaler.queue")


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
        try:
            await admin.start()
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {settings.admin_host}:{settings.admin_port} ({e.strerror or e}); "
                "choose another --admin-port (0 picks a free port)"
            ) from e
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


def run(args: argparse.Namespace) -> int:
    queue: QueueSettings = build(QueueSettings, settings_overrides(args, QueueSettings))
    settings: QueueWorkerSettings = build(QueueWorkerSettings, settings_overrides(args, QueueWorkerSettings))
    if queue.nats_url is None:
        raise ConfigError("--nats-url (env AUTOSCALER_NATS_URL) is required, e.g. nats://nats.openfaas:4222")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(serve(queue=queue, settings=settings))
    return uvloop.run(serve(queue=queue, settings=settings))
