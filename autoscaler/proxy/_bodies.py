"""Request bodies the proxy buffers, counted against caps before they are read.

A function call's body is read whole (it may be sent again to another replica, and naive function
servers need a Content-Length), and it stays in memory while the request is held through a cold
start or waits for a slot. Without a cap, 40 held 10 MiB POSTs took the proxy from 239 to 706 MiB.
So bytes are taken from a budget per function (`--max-buffered`) and for the whole proxy
(`--max-buffered-total`) before they are read: a Content-Length is taken at once, before one byte of
the body; a chunked body piece by piece as it arrives. A body that does not fit gets 429 with
Retry-After (it would fit later); one over `--max-body` gets 413 (it never would).
"""

from __future__ import annotations

from aiohttp import web


class BodyRefused(Exception):
    """The body was not read: `status` (413 or 429) and the message go back to the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyBudget:
    """Bytes buffered per function and in all; `take` never lets either pass its cap."""

    __slots__ = ("_per_function", "_total", "_used", "used_total")

    def __init__(self, *, per_function: int, total: int) -> None:
        self._per_function = per_function
        self._total = total
        self._used: dict[str, int] = {}
        self.used_total = 0

    def used(self, key: str) -> int:
        return self._used.get(key, 0)

    def take(self, key: str, size: int) -> bool:
        used = self._used.get(key, 0)
        if used + size > self._per_function or self.used_total + size > self._total:
            return False
        self._used[key] = used + size
        self.used_total += size
        return True

    def give(self, key: str, size: int) -> None:
        if size <= 0:
            return
        left = self._used.get(key, 0) - size
        if left > 0:
            self._used[key] = left
        else:
            self._used.pop(key, None)
        self.used_total -= size

    def refusal(self, key: str) -> BodyRefused:
        return BodyRefused(
            429,
            f"the proxy already buffers {self.used(key)} bytes of request bodies for {key} (limit "
            f"{self._per_function}) and {self.used_total} in all (limit {self._total}); retry later",
        )


async def read_body(request: web.BaseRequest, *, budget: BodyBudget, key: str, max_body: int) -> bytes:
    """The whole body, its size taken from `budget` (give it back when done); raises BodyRefused."""
    length = request.content_length
    if length is not None:
        if length > max_body:
            raise _too_large(max_body, length)
        if not budget.take(key, length):
            raise budget.refusal(key)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            budget.give(key, length)
            raise _too_large(max_body, None) from None
        except BaseException:
            budget.give(key, length)
            raise
        budget.give(key, length - len(body))  # a body cut short holds only what came
        return body
    parts: list[bytes] = []
    taken = 0
    try:
        while chunk := await request.content.readany():
            if taken + len(chunk) > max_body:
                raise _too_large(max_body, None)
            if not budget.take(key, len(chunk)):
                raise budget.refusal(key)
            taken += len(chunk)
            parts.append(chunk)
    except BaseException:
        budget.give(key, taken)
        raise
    return b"".join(parts)


def _too_large(max_body: int, length: int | None) -> BodyRefused:
    got = f" (got {length} bytes)" if length is not None else ""
    return BodyRefused(413, f"request body too large: the limit is {max_body} bytes{got}; send less")
