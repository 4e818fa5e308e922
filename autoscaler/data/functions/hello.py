"""Example function `hello`: an always-warm greeter that scales on requests per second.

Run by the local provider as `{python} hello.py` with PORT set. It takes a moment to start (as a real
function loading its dependencies does) and, on SIGTERM, stops accepting connections and finishes the
requests in flight before exiting, so scaling it down loses nothing.
"""

from __future__ import annotations

import asyncio
import os
import time

from aiohttp import web

PORT = int(os.environ["PORT"])
STARTUP_SECONDS = float(os.environ.get("STARTUP_SECONDS", "0.3"))
WORK_MS = float(os.environ.get("WORK_MS", "20"))
GREETING = os.environ.get("GREETING", "Hello")


async def handle(request: web.Request) -> web.Response:
    """Answer after `?ms=` (default WORK_MS) milliseconds of simulated work."""
    work = float(request.query.get("ms", WORK_MS)) / 1000
    if work > 0:
        await asyncio.sleep(min(work, 30.0))
    body = await request.text()
    who = body.strip() or request.query.get("name", "world")
    return web.Response(text=f"{GREETING}, {who}! (replica on port {PORT})\n")


def main() -> None:
    time.sleep(STARTUP_SECONDS)  # simulated start-up work, before the port opens
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=PORT, print=None, shutdown_timeout=30.0, access_log=None)


if __name__ == "__main__":
    main()
