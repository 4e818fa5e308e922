"""HTTP/1.1 response framing as pure functions over bytes: the status line, the header fields, chunks.

The upstream client (`_client`) reads bytes off a socket; what they mean is decided here, with no I/O,
so that every rule of RFC 9112 the proxy relies on sits in one place: which status lines are valid
(100-599, three digits), where a body ends (no body for HEAD, 204 and 304; Transfer-Encoding over
Content-Length; until the connection closes when neither says), and which responses leave the
connection fit for another request. A connection is kept only when the end of the response is
certain from its bytes: after a response whose body the request or status rules out (HEAD, 204,
304), or after an interim response other than 100 Continue, a server that got it wrong would leave
bytes in the stream that the next request would read as its own answer, so those connections are
closed instead (one more connection for such a response, never a wrong answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Final

# A response head larger than this is refused (aiohttp's client allows 8 KiB lines and 8 KiB fields).
MAX_HEAD = 64 * 1024
# A chunk-size or trailer line longer than this is refused.
MAX_LINE = 4096

# Where a body ends (the parser's states in `_client`, from the head to the end of the exchange).
HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER, UNTIL_EOF, DONE = range(8)

_ENC: Final = "utf-8"
_HEX = b"0123456789abcdefABCDEF"
# Response headers that decide the framing and reuse of the connection (index into the lists).
_FRAMING = {"connection": 0, "transfer-encoding": 1, "content-length": 2}


class ClientError(Exception):
    """The exchange with the replica failed (closed connection, malformed response)."""


class ConnectError(ClientError):
    """No connection could be opened: the request never left."""


class StaleConnection(ClientError):
    """A reused connection was closed by the peer before any byte of the response came back."""


class NotAccepted(ClientError):
    """A fresh connection's request bytes were never acknowledged: the replica never accepted it.

    When a listener's accept queue is full, the kernel drops the handshake's last packet: the client
    sees an open connection and sends, the server has no connection to read from. The request never
    reached the replica, so it may go anywhere else, whatever its method.
    """


@dataclass(slots=True)
class Head:
    """One parsed response head; `state` is where its body ends (DONE: it has none)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    connection: str  # the Connection header's value(s), joined
    keep_alive: bool
    state: int = DONE
    length: int | None = None


def head_end(data: bytes | bytearray) -> tuple[int, int]:
    """(where the head ends, where what follows begins) in `data`, or (-1, -1) while it is not whole.

    A head ends at its first empty line. Lines end at CRLF, or at a bare LF, which RFC 9112 (2.2)
    lets a recipient accept and Go's reader (the OpenFaaS gateway's) does: a function written by
    hand that ends its lines with LF alone was left waiting for the upstream timeout.
    """
    crlf = data.find(b"\r\n\r\n")
    limit = crlf + 1 if crlf >= 0 else len(data)  # a bare LF blank line can only come before it
    bare = [at for at in (data.find(b"\n\n", 0, limit), data.find(b"\n\r\n", 0, limit)) if at >= 0]
    if bare:
        at = min(bare)
        return at, at + (2 if data[at + 1] == 10 else 3)  # 10: LF
    return (crlf, crlf + 4) if crlf >= 0 else (-1, -1)


def parse_head(head: bytes, method: str, *, upgrade: bool = False) -> Head:
    """Parse a response head (without its final blank line) to a request of `method`.

    An interim response (1xx other than 101) is returned as it is, with no framing: the final one
    follows. A 101 Switching Protocols to a request that asked for an `Upgrade` ends the HTTP
    exchange: what follows is the new protocol's, read until the connection closes and never reused
    (see `_tunnel`). Raises ClientError for anything malformed or a switch nobody asked for.
    """
    text = head.decode(_ENC, "surrogateescape")
    if text.count("\n") == text.count("\r\n") and not text.endswith("\r"):
        lines = text.split("\r\n")
    else:  # some line ends with a bare LF (see `head_end`): a CR before an LF is dropped
        lines = [line.removesuffix("\r") for line in text.split("\n")]
    status, reason, http11 = _status_line(lines[0])
    headers, connection, transfer, lengths = _fields(lines)
    joined = ", ".join(connection)
    if 100 <= status < 200:
        if status == 101:
            if not upgrade:
                raise ClientError(
                    "the function switched protocols, which the proxy does not relay unless asked (Upgrade)"
                )
            return Head(status, reason, headers, joined, False, state=UNTIL_EOF)
        if transfer or any(value != "0" for value in lengths):
            raise ClientError(f"an interim {status} response announced a body")
        # Only 100 Continue is part of an ordinary exchange; after any other interim response
        # (102, 103, ...) the connection is not reused.
        return Head(status, reason, headers, joined, keep_alive=status == 100)
    tokens = joined.lower()
    keep_alive = "close" not in tokens if http11 else "keep-alive" in tokens
    result = Head(status, reason, headers, joined, keep_alive)
    if method == "HEAD" or status in (204, 304):
        # No body whatever the headers say; a server that sends one anyway would leave it in the
        # stream for the next request: such a connection is never reused.
        if lengths:
            result.length = _length(lengths)
        result.keep_alive = False
    elif transfer:
        if http11:
            _only_chunked(transfer)
        if lengths:
            # Transfer-Encoding overrides Content-Length (RFC 9112 6.3): the length must not reach
            # the client, and a connection with both framings is never reused.
            result.headers = [item for item in headers if item[0].lower() != "content-length"]
            result.keep_alive = False
        if transfer[-1].rsplit(",", 1)[-1].strip().lower() != "chunked":
            result.state = UNTIL_EOF  # HTTP/1.0, which has no transfer codings: the body lasts to EOF
            result.keep_alive = False
        else:
            result.state = CHUNK_SIZE
    elif lengths:
        result.length = _length(lengths)
        if result.length:
            result.state = LENGTH
    else:
        result.state = UNTIL_EOF
        result.keep_alive = False
    return result


def _only_chunked(transfer: list[str]) -> None:
    """ClientError unless the Transfer-Encoding lines say `chunked` alone.

    Any other coding is one the client would not be told of (Transfer-Encoding is hop-by-hop): it is
    refused, as the gateway's Go client refuses it (net/http/transfer.go, "unsupported transfer
    encoding"), rather than relayed as if the body were plain.
    """
    if len(transfer) != 1 or transfer[0].lower() != "chunked":
        raise ClientError(
            f"the function answered with Transfer-Encoding {', '.join(transfer)!r}, which is not "
            "relayed: only chunked is; compress with Content-Encoding instead"
        )


def _status_line(line: str) -> tuple[int, str, bool]:
    """(status, reason, whether HTTP/1.1) of a status line; ClientError unless it is valid.

    RFC 9110 15: a status code is three digits from 100 to 599; anything else (`099`, `600`, `1000`)
    is no status a client could act on, so it is refused (502) rather than relayed.
    """
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if (
        version not in ("HTTP/1.1", "HTTP/1.0")
        or len(code) != 3
        or not code.isascii()
        or not code.isdigit()
        or not "100" <= code <= "599"
    ):
        raise ClientError(f"invalid status line {line[:80]!r}")
    return int(code), reason, version == "HTTP/1.1"


def _fields(lines: list[str]) -> tuple[list[tuple[str, str]], list[str], list[str], list[str]]:
    """The header fields after the status line, and the values of each framing header among them."""
    headers: list[tuple[str, str]] = []
    framing: tuple[list[str], list[str], list[str]] = ([], [], [])
    append = headers.append
    framing_of = _FRAMING.get
    for raw in islice(lines, 1, None):
        name, colon, value = raw.partition(":")
        if not colon or not name or name != name.strip() or " " in name:
            raise ClientError(f"invalid header line {raw[:80]!r}")
        value = value.strip()
        append((name, value))
        which = framing_of(name.lower())
        if which is not None:
            framing[which].append(value)
    return headers, framing[0], framing[1], framing[2]


def chunk_size(line: bytes) -> int:
    """The size announced by a chunk-size line (extensions ignored); ClientError when invalid."""
    size_text = line.split(b";", 1)[0].strip()
    if not size_text or size_text.strip(_HEX) or len(size_text) > 16:
        raise ClientError(f"invalid chunk size {size_text[:40]!r}")
    return int(size_text, 16)


def _length(values: list[str]) -> int:
    first = values[0]
    if not (first.isascii() and first.isdigit()) or (
        len(values) > 1 and any(value != first for value in values)
    ):
        raise ClientError(f"invalid Content-Length {', '.join(values)[:80]!r}")
    return int(first)
