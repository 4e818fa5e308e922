"""List-then-watch loops that keep a local cache in step with the cluster, and never die.

The provider answers `functions()`, `endpoints()` and `wait_ready()` from memory, so the cache must
follow the cluster through everything a long-lived watch meets: the server closing the stream at
its timeout (reconnect at once from the last resourceVersion), a 410 Gone for a compacted version
(re-list: the list replaces the cache, so nothing that changed meanwhile is lost), a dropped
connection or failing API (reconnect after the retry policy's back-off, `policies.backoff`), and
bugs in a handler (logged, the stream goes on). `autoscaler.tasks.restarting()` restarts a loop that still
crashes, with a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.watch import Watch

from autoscaler.errors import ProviderError
from autoscaler.providers.kubernetes._calls import RetryPolicy, wrap

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ListCall = Callable[[], Awaitable[tuple[list[Obj], str]]]

# A stream that ends this fast without a single event is a failure (e.g. a proxy closing it), not
# the server's timeout: back off instead of reconnecting in a hot loop.
_MIN_HEALTHY_STREAM = 1.0

# Listings in flight at once, per event loop. 500 namespaces start 1,000 of them together; sent all
# at once, those the API server answers last wait past the request timeout, are retried and queue up
# again (`bench/proxy_scale_bench.py` at 50,000 functions: 2,210 lists for 1,000, and no start
# within a minute). Watches are not limited: they are cheap to open and stay open.
LISTS_AT_ONCE = 16
_listing_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def listing_slot() -> asyncio.Semaphore:
    """The running loop's limit on listings in flight (`LISTS_AT_ONCE`)."""
    loop = asyncio.get_running_loop()
    slot = _listing_slots.get(loop)
    if slot is None:
        slot = _listing_slots[loop] = asyncio.Semaphore(LISTS_AT_ONCE)
    return slot


async def read_list(response: aiohttp.ClientResponse) -> tuple[list[Obj], str]:
    """(items, resourceVersion) of a list call made with `_preload_content=False`.

    The JSON goes straight to plain dicts: the client's own decoding would first build a model
    object per item (V1Deployment and all its parts) only to turn it back into a dict, which at
    50,000 Deployments is most of a first listing's time and memory.
    """
    async with response:
        body = await response.read()
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body, error.headers = body, response.headers
            raise error
    data = json.loads(body)
    version = str((data.get("metadata") or {}).get("resourceVersion") or "")
    return list(data.get("items") or []), version


class _Watch(Watch):
    """kubernetes-asyncio's Watch, less what costs without serving us.

    Its constructor builds an ApiClient of its own, only to turn each event into a model object:
    that is an SSL context with the system's CA certificates loaded (0.1-0.4 s of the event loop)
    per watch request, so at 500 namespaces (1,000 watches) seconds of a blocked loop at start and
    at every reconnect. We read `raw_object`, so the event's object stays the decoded dict.
    """

    def __init__(self) -> None:  # deliberately not Watch.__init__: no ApiClient
        self._raw_return_type = "object"
        self._stop = False
        self.resource_version = None
        self.resp = None

    def unmarshal_event(self, data: str | bytes, response_type: str | None) -> Any:
        return super().unmarshal_event(data, None)  # None: no model object

    async def close(self) -> None:
        if self.resp is not None:
            self.resp.release()
            self.resp = None


class Reflector:
    """Lists one resource in one namespace, then watches it from the list's resourceVersion."""

    def __init__(
        self,
        *,
        what: str,
        list_call: ListCall,
        watch_func: Callable[..., Any],
        watch_args: tuple[Any, ...],
        watch_kwargs: dict[str, Any],
        on_sync: Callable[[list[Obj]], None],
        on_event: Callable[[str, Obj], None],
        backoff: RetryPolicy,
        watch_timeout: float,
        connect_timeout: float,
    ) -> None:
        self.what = what
        self._list_call = list_call
        self._watch_func = watch_func
        self._watch_args = watch_args
        self._watch_kwargs = watch_kwargs
        self._on_sync = on_sync
        self._on_event = on_event
        self._backoff = backoff
        self._watch_timeout = max(1, int(watch_timeout))
        self._connect_timeout = connect_timeout
        self.synced = asyncio.Event()
        self.resource_version: str | None = None
        self.last_error: ProviderError | None = None
        self.lists = 0  # full listings done (the first one, then one per resync)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._relist()
                    failures = 0
                if await self._watch_once():
                    failures = 0
            except asyncio.CancelledError:
                raise
            except ApiException as e:
                if e.status == 410:
                    # The version we hold was compacted away: a fresh list is the only way back.
                    log.info(
                        "watch of %s: resourceVersion %s expired, re-listing",
                        self.what,
                        self.resource_version,
                    )
                    self.resource_version = None
                    continue
                failures = await self._pause(failures + 1, e)
            except Exception as e:
                failures = await self._pause(failures + 1, e)

    async def _relist(self) -> None:
        async with listing_slot():
            items, version = await self._list_call()
        self.lists += 1
        self._deliver(self._on_sync, items)
        self.resource_version = version
        self.last_error = None
        self.synced.set()

    async def _watch_once(self) -> bool:
        """One watch request until the server ends it; True when it delivered anything."""
        loop = asyncio.get_running_loop()
        started, delivered = loop.time(), 0
        timeout = aiohttp.ClientTimeout(
            sock_connect=self._connect_timeout, sock_read=self._watch_timeout + self._connect_timeout
        )
        async with _Watch() as watch:
            stream = watch.stream(
                self._watch_func,
                *self._watch_args,
                resource_version=self.resource_version,
                timeout_seconds=self._watch_timeout,
                allow_watch_bookmarks=True,
                _request_timeout=timeout,
                **self._watch_kwargs,
            )
            async for event in stream:
                if not isinstance(event, dict):
                    raise ProviderError(
                        f"watch of {self.what}: unexpected line in the stream: {str(event)[:200]!r}"
                    )
                raw: Obj = event["raw_object"]
                version = (raw.get("metadata") or {}).get("resourceVersion")
                delivered += 1
                if event["type"] != "BOOKMARK":
                    self._deliver(self._on_event, event["type"], raw)
                if version:
                    self.resource_version = str(version)
        if not delivered and loop.time() - started < _MIN_HEALTHY_STREAM:
            raise ProviderError(f"watch of {self.what}: the server closed the stream at once", retryable=True)
        return delivered > 0

    def _deliver(self, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            log.exception("watch of %s: handler %s failed; the watch goes on", self.what, handler.__name__)

    async def _pause(self, failures: int, e: Exception) -> int:
        self.last_error = wrap(e, what=f"watch of {self.what}")
        delay = self._backoff.backoff(failures)
        log.warning("%s; reconnecting in %.2fs (failure %d)", self.last_error, delay, failures)
        await asyncio.sleep(delay)
        return failures
