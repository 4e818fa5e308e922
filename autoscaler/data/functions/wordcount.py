"""Example function `wordcount`: scales to zero when idle, and starts slowly.

Run by the local provider as `{python} wordcount.py` with PORT set. Its start-up takes about a second
(as a function loading a model does), which is what makes a cold start visible: the proxy holds the
first requests until this replica answers its health check, then forwards them. On SIGTERM it
finishes the requests in flight before exiting.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from aiohttp import web

PORT = int(os.environ["PORT"])
STARTUP_SECONDS = float(os.environ.get("STARTUP_SECONDS", "1.0"))
WORK_MS = float(os.environ.get("WORK_MS", "30"))


async def count(request: web.Request) -> web.Response:
    """Count the words of the request body (or of `?text=`)."""
    text = await request.text() if request.can_read_body else request.query.get("text", "")
    await asyncio.sleep(WORK_MS / 1000)
    words = text.split()
    return web.json_response({"words": len(words), "unique": len(set(words)), "port": PORT}, dumps=json.dumps)


def main() -> None:
    time.sleep(STARTUP_SECONDS)  # simulated model load, before the port opens
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", count)
    web.run_app(app, host="127.0.0.1", port=PORT, print=None, shutdown_timeout=30.0, access_log=None)


if __name__ == "__main__":
    main()
