"""Reads every function's load from Prometheus with five queries per tick, whatever the function count.

One query per function would cost 10,000 round trips a tick on a large cluster; instead each load
figure (rps, in-flight, CPU, started counter, pending asynchronous calls) is one `by (function_name)`
instant query, and the queries run concurrently on one aiohttp session without blocking the event loop.

Invariant 1 lives here as much as in the policies: a failed, slow, malformed, NaN or stale answer
becomes "no data" (None) for exactly the figures it concerns, never 0. If every query fails the
snapshot carries an error naming the URL and the cause, and no loads at all.

Absence is idleness only where it is proven. `--query-source` lists every function the metric source
(the gateway, our proxy) knows, from a series it exports for each whether called or not; it is folded
into the started query as `(started) or 0 * (source)`, so the source's word costs no query of its own.
A function in that answer with a fresh value is proven: its started counter (or the source's series)
comes fresh from the exporter that also exports its rps and in-flight figures, so its absence from
the rps or in-flight answer (each of which succeeded) means no calls there: that figure reads 0. The
CE gateway exports no in-flight gauge at all, so its functions are judged by their started counter, as
OpenFaaS itself does. A source that is down or not scraped goes stale in Prometheus and proves
nothing; a failed started query proves nothing either: the function stays "no data".

Pending asynchronous calls (`type=queue`) come from the queue-worker's
`queue_worker_pending_messages{function_name,queue_name}` (OpenFaaS Pro's name): the calls on the
queue not yet acknowledged, i.e. waiting, being invoked or waiting for a retry. Every worker replica
reports the same stream-wide count, so the query takes the `max`, never the sum. A function the source
knows (proven, as above) reads 0 pending only while the workers answer for at least one function (a
worker reports every function with calls on the stream, and 0 for the functions it consumes); with no
worker series at all, pending is no data, never 0. That test is made here, on the answers, not in
PromQL (`(pending) or ((0 * (source)) and on () count(pending))` cost Prometheus one more pass over
every function's source series per tick, and the pending series twice, to say what the started answer
already says).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping

import aiohttp
import numpy as np
import yarl
from prometheus_client import CollectorRegistry, Counter, Histogram

from autoscaler import _promql
from autoscaler._promql import QueryError
from autoscaler.config import MetricsSettings
from autoscaler.interfaces import LoadSnapshot
from policies.model import Load

log = logging.getLogger(__name__)

# Load field -> settings field holding its PromQL (the flag is the settings name with dashes).
FIELDS: Mapping[str, str] = {
    "rps": "query_rps",
    "inflight": "query_inflight",
    "cpu": "query_cpu",
    "started_total": "query_started",
    "pending": "query_pending",
}
# Load fields whose absence from a successful answer reads as 0 for a function the source knows (CPU
# is measured elsewhere, by the kubelet, so the source's word says nothing about it; pending only while
# the workers answer at all, see `_answered`).
_COUNTED = ("rps", "inflight")
PENDING = "pending"
PROVEN_BY = "started_total"  # the answer that carries the source's proof
_LOAD_FIELDS = ("rps", "inflight", "cpu", "started_total", "pending")  # `Load`'s fields, in its order
# Bodies above this size are parsed in a worker thread so a 10,000-function answer never stalls the loop.
_THREAD_PARSE_BYTES = 256 * 1024


class PrometheusReader:
    """`LoadReader` over the Prometheus HTTP API (`/api/v1/query`, `/api/v1/query_range`).

    `session` is borrowed when given (and then not closed); otherwise the reader opens its own on
    first use. `registry` receives the reader's own metrics; `clock` (unix seconds) judges staleness.
    """

    def __init__(
        self,
        *,
        settings: MetricsSettings,
        session: aiohttp.ClientSession | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = _promql.base_url(settings.prometheus_url)
        self._settings = settings
        self._session = session
        self._own_session = session is None
        self._clock = clock
        window = settings.rate_window
        raw = {name: str(getattr(settings, key)) for name, key in FIELDS.items()}
        source = settings.query_source.strip()
        self.proves = bool(source)  # whether absence can ever be read as 0
        if source:
            raw["started_total"] = started_query(raw["started_total"], source=source)
        self.queries: dict[str, str] = {name: text.replace("{window}", window) for name, text in raw.items()}
        self.errors_total: collections.Counter[str] = collections.Counter()  # failed queries per load field
        self.last_errors: dict[str, str] = {}  # load field -> why its last query failed (empty when all fine)
        self._reported: str | None = None
        self._last_loads: dict[str, Load] = {}  # the last read's, reused where the figures repeat
        self._query_errors: Counter | None = None
        self._read_seconds: Histogram | None = None
        if registry is not None:
            self._query_errors = Counter(
                "autoscaler_prometheus_query_errors",
                "Prometheus load queries that failed, by load field",
                ["query"],
                registry=registry,
            )
            self._read_seconds = Histogram(
                "autoscaler_prometheus_read_seconds",
                "Seconds to read every function's load from Prometheus (all queries)",
                registry=registry,
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            )

    @property
    def url(self) -> str:
        """The Prometheus base URL, as used in error messages."""
        return str(self._base)

    async def read(self, *, unused: frozenset[str] = frozenset()) -> LoadSnapshot:
        """Issue the queries concurrently, but none for an `unused` figure (it reads None); see the
        module docstring for what failure gives."""
        started = time.perf_counter()
        now = self._clock()
        names = [name for name in self.queries if name not in unused or name == PROVEN_BY]
        results = await asyncio.gather(*(self._instant(name, now=now) for name in names))
        if self._read_seconds is not None:
            self._read_seconds.observe(time.perf_counter() - started)

        vectors: dict[str, _promql.Vector] = {}
        self.last_errors = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, QueryError):
                self.last_errors[name] = str(result)
                self.errors_total[name] += 1
                if self._query_errors is not None:
                    self._query_errors.labels(query=name).inc()
            else:
                vectors[name] = result
        self._report(vectors)

        if not vectors:
            causes = list(dict.fromkeys(self.last_errors.values()))
            return LoadSnapshot(loads={}, error="; ".join(causes), queries=len(names))
        proof = vectors.get(PROVEN_BY) if self.proves else None
        known = set() if proof is None else {fn for fn, value in proof.values.items() if value is not None}
        self._last_loads = _loads(vectors, known=known, previous=self._last_loads)
        return LoadSnapshot(loads=self._last_loads, queries=len(names))

    async def history(self, *, query: str, start: float, end: float, step: float) -> dict[str, np.ndarray]:
        """Range query grouped by function_name: function -> values at `start + i*step` up to `end`.

        Missing points are NaN. Long ranges are fetched in chunks of at most 10,000 points (the API's
        limit is 11,000). Raises MetricsError on any failure: this is start-up seeding, not the tick.
        """
        if not step > 0 or not math.isfinite(step):
            raise ValueError(f"history step must be a positive number of seconds, got {step!r}")
        if not end >= start:
            raise ValueError(f"history end ({end!r}) must not be before start ({start!r})")
        promql = query.replace("{window}", self._settings.rate_window)
        points = math.floor((end - start) / step + 1e-9) + 1
        where = f"Prometheus at {self.url} (range query {promql!r})"
        series: dict[str, np.ndarray] = {}
        for first in range(0, points, _promql.MAX_POINTS):
            last = min(points, first + _promql.MAX_POINTS) - 1
            params = {
                "query": promql,
                "start": repr(start + first * step),
                "end": repr(start + last * step),
                "step": _promql.duration(step),
                "timeout": _promql.duration(self._settings.query_timeout),
            }
            status, body = await self._get("api/v1/query_range", params=params, where=where)
            data = _promql.decode(body, status=status, where=where, flag="the history query")
            _promql.matrix(data, start=start, step=step, points=points, where=where, into=series)
        return series

    async def close(self) -> None:
        """Close the session if the reader opened it (a borrowed session stays open)."""
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> PrometheusReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ---------------------------------------------------------------------------------

    async def _instant(self, name: str, *, now: float) -> _promql.Vector | QueryError:
        flag = _flag(name)
        where = f"Prometheus at {self.url}"
        params = {
            "query": self.queries[name],
            "timeout": _promql.duration(self._settings.query_timeout),
            # Honoured by Prometheus versions that support it: series with no sample within
            # stale_after are not returned at all (older versions ignore the parameter).
            "lookback_delta": _promql.duration(self._settings.stale_after),
        }
        try:
            status, body = await self._get("api/v1/query", params=params, where=where)

            def parse() -> _promql.Vector:
                if status == 200:
                    fast = _promql.fast_vector(body, now=now, stale_after=self._settings.stale_after)
                    if fast is not None:
                        return fast
                data = _promql.decode(body, status=status, where=where, flag=flag)
                return _promql.vector(
                    data,
                    now=now,
                    stale_after=self._settings.stale_after,
                    where=f"the {name} query",
                    flag=flag,
                )

            if len(body) > _THREAD_PARSE_BYTES:
                return await asyncio.to_thread(parse)
            return parse()
        except QueryError as e:
            return e

    async def _get(self, path: str, *, params: dict[str, str], where: str) -> tuple[int, bytes]:
        """One GET under the base URL; every transport failure becomes a QueryError saying what to check."""
        timeout = self._settings.query_timeout
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        try:
            async with self._session.get(
                self._base.join(yarl.URL(path)),
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                return response.status, await response.read()
        except aiohttp.ClientConnectorError as e:
            # asyncio words a refused connection "Connect call failed (...)"; the errno says it plainly.
            errno = e.os_error.errno
            cause = os.strerror(errno) if errno and errno > 0 else (e.os_error.strerror or str(e.os_error))
            raise QueryError(f"{where} unreachable: {cause}; check --prometheus-url") from e
        except TimeoutError as e:
            raise QueryError(
                f"{where} did not answer within {timeout:g}s; check its load or raise --query-timeout"
            ) from e
        except aiohttp.ClientError as e:
            raise QueryError(
                f"{where} request failed: {type(e).__name__}: {e}; check --prometheus-url"
            ) from e

    def _report(self, vectors: Mapping[str, _promql.Vector]) -> None:
        """Log problems once when they appear or change, and once when they clear."""
        notes: list[str] = list(dict.fromkeys(self.last_errors.values()))
        for name, vec in vectors.items():
            flag = _flag(name)
            if vec.unlabelled:
                notes.append(
                    f"the {name} query returned {vec.unlabelled} series without a function_name label "
                    f"(aggregate it `by (function_name)`; check {flag})"
                )
        text = "; ".join(notes) or None
        if text != self._reported:
            if text is None:
                log.info("Prometheus at %s answers every load query again", self.url)
            else:
                log.warning("reading load: %s", text)
            self._reported = text
        for name, vec in vectors.items():
            if vec.stale or vec.not_finite:
                log.debug(
                    "the %s query: %d stale and %d NaN/Inf samples read as no data",
                    name,
                    vec.stale,
                    vec.not_finite,
                )


def _loads(
    vectors: Mapping[str, _promql.Vector], *, known: set[str], previous: Mapping[str, Load]
) -> dict[str, Load]:
    """Every function's figures; with the source's proof (`known`), absent from an answer that came is 0.

    Column by column (maps over dicts, no figures dict per function): at 50,000 functions this runs
    once per tick for every one of them.
    """
    answers = sorted((vec.values for vec in vectors.values()), key=len, reverse=True)
    names = list(answers[0])  # the answers mostly name the same functions: add only the others' extra
    extra: set[str] = set()
    for values in answers[1:]:
        extra.update(values.keys() - answers[0].keys())
    names.extend(extra)
    columns: list[Iterable[float | None]] = []
    for field in _LOAD_FIELDS:
        vec = vectors.get(field)
        if vec is None:
            columns.append(itertools.repeat(None))  # the query failed: no data, whatever the source says
        elif known and (field in _COUNTED or (field == PENDING and _answered(vec))):
            filled: dict[str, float | None] = dict.fromkeys(known, 0.0)
            filled.update(vec.values)  # an answer's own value (None: stale or NaN) wins over the 0
            columns.append(map(filled.get, names))
        else:
            columns.append(map(vec.values.get, names))
    loads: dict[str, Load] = {}
    for name, row in zip(names, zip(*columns, strict=False), strict=False):
        last = previous.get(name)
        # The last tick's Load where the figures repeat: no new object (the controller compares it
        # with its last decision's by identity first), and less for the garbage collector to follow.
        loads[name] = last if last is not None and _row(last) == row else Load(*row)
    return loads


def _row(load: Load) -> tuple[float | None, ...]:
    return (load.rps, load.inflight, load.cpu, load.started_total, load.pending)


def started_query(started: str, *, source: str) -> str:
    """The started query with the source's proof folded in: 0 for a function the source knows uncalled."""
    return f"({started}) or (0 * ({source}))"


def _answered(vec: _promql.Vector) -> bool:
    """Whether the workers answer at all: the pending answer holds a series (`count(pending) > 0`)."""
    return bool(vec.values) or vec.unlabelled > 0


def _flag(name: str) -> str:
    """The flag that holds a query's PromQL, for messages (the started query also holds the source's)."""
    flag = "--" + FIELDS.get(name, f"query_{name}").replace("_", "-")
    return f"{flag} or --query-source" if name == PROVEN_BY else flag
