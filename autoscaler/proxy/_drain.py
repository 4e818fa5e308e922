"""How a draining proxy lets its callers go without cutting one whose request is on its way.

Under a stream of new connections a drain meets callers that have connected and sent their request
but are not served yet, in two places; both used to end in a reset or an empty answer:
- in the data port's accept queue: closing a listening socket resets every connection in it (with
  `--workers N` each worker's SO_REUSEPORT socket has a queue of its own). The drain keeps a
  duplicate of the socket past the site's close, accepts what it holds and serves it
  (`serve_pending`); only a connection completed in the instant between that last accept and the
  close is still reset;
- accepted, their request not read yet: aiohttp's shutdown closed every connection without a request
  in progress. `settle` waits for those accepted in the last `FIRST_REQUEST_WAIT` seconds to send
  it, closes kept-alive connections as they come between requests, and leaves one mid-request to
  finish; all within the drain's grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from autoscaler.proxy._downstream import ClientServer

log = logging.getLogger("autoscaler.proxy")

FIRST_REQUEST_WAIT = 1.0  # seconds: a connection accepted this recently is waited for (its request)
POLL = 0.05  # seconds between looks at the connections while draining


async def serve_pending(server: ClientServer, sock: socket.socket) -> int:
    """Accept and serve what `sock`'s queue holds, then close it; returns how many were served."""
    loop = asyncio.get_running_loop()
    count = 0
    try:
        sock.setblocking(False)
        while True:
            try:
                connection, _ = sock.accept()
            except OSError:  # EAGAIN: nothing left (EMFILE: the kernel resets the rest on close)
                return count
            await loop.connect_accepted_socket(server, connection)
            count += 1
    finally:
        sock.close()


async def settle(
    server: ClientServer, *, inflight: Callable[[], int], idle: asyncio.Event, grace: float
) -> None:
    """Wait up to `grace` s for the requests in flight and those still coming on fresh connections;
    `idle` is set by the proxy when its last request in flight ends."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    told = False
    while True:
        server.drain()  # kept-alive connections close once between requests
        waiting = inflight() + server.fresh(since=started - FIRST_REQUEST_WAIT)
        if waiting == 0:
            return
        left = started + grace - loop.time()
        if left <= 0:
            log.warning("drain grace of %g s is over; %d request(s) are cut", grace, waiting)
            return
        if not told:
            log.info("draining: waiting up to %g s for %d request(s)", grace, waiting)
            told = True
        idle.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), timeout=min(left, POLL))
