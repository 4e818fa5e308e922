"""Which requests ask for a protocol switch, and which of those the proxy must close after.

RFC 9110 7.8: a client asks to switch with `Upgrade` (a list of protocols, `name[/version]`) and an
`upgrade` token in `Connection`; a server ignores it on HTTP/1.0, and switches, if it does, only
after the whole request (its body too). aiohttp's server parsers stop parsing HTTP after the head
for one protocol only, `websocket` (ALLOWED_UPGRADES in `_http_parser.pyx`; the Python parser's
`_is_supported_upgrade`), since its request-smuggling fix: after any other Upgrade its C parser
drops what followed the head in the same read (llhttp pauses there, `feed_data` returns nothing of
it) and parses the next reads as HTTP; the Python parser parses it all as the next requests. So the
proxy holds those bytes itself (`_downstream`): a request asking to switch to anything but
`websocket`, with no body, has what follows its head held, unparsed, until the function answers.

A 101 splices the two connections (`_tunnel`). Any other answer to such a request closes the
client's connection (`must_close`): the client, or a proxy in front that took the Upgrade for
granted, may already have sent bytes of the new protocol, and reading them as HTTP requests is how
upgrade smuggling works. That holds too for an Upgrade the proxy does not relay: on a request with
a body (the function sees no `Upgrade`: switching after a streamed body is not supported), or
behind another request in the same read (its head was not parsed alone). A WebSocket the function
declines keeps aiohttp's own behaviour: its parser set the bytes aside and reads them on as HTTP.
"""

from __future__ import annotations

import re
from typing import Protocol

from aiohttp import HttpVersion, HttpVersion11
from multidict import CIMultiDictProxy

# Upgrade = #protocol, protocol = protocol-name ["/" protocol-version], both tokens (RFC 9110 7.8).
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PROTOCOL = rf"{_TOKEN}(?:/{_TOKEN})?"
_PROTOCOLS = re.compile(rf"{_PROTOCOL}(?:[ \t]*,[ \t]*{_PROTOCOL})*")
# The one Upgrade aiohttp's server parser switches for by itself.
SELF_SWITCHED = "websocket"


def asked_upgrade(version: HttpVersion, headers: CIMultiDictProxy[str]) -> str | None:
    """The protocols a request asks to switch to, as one list, or None.

    Only HTTP/1.1, only with an `upgrade` token in a `Connection` line (every line counts), and only
    a well-formed list of protocols (every `Upgrade` line, joined).
    """
    if version < HttpVersion11:
        return None
    lines = headers.getall("Upgrade", ())
    if not lines:
        return None
    tokens = {token.strip().lower() for line in headers.getall("Connection", ()) for token in line.split(",")}
    if "upgrade" not in tokens:
        return None
    upgrade = ", ".join(line.strip() for line in lines)
    return upgrade if _PROTOCOLS.fullmatch(upgrade) else None


def protocols(upgrade: str) -> frozenset[str]:
    """The protocols of an `Upgrade` value, lower-cased."""
    return frozenset(item.strip().lower() for item in upgrade.split(",") if item.strip())


def self_switched(headers: CIMultiDictProxy[str]) -> bool:
    """Whether aiohttp's parser sets aside what follows this head itself (its test: the first line)."""
    return headers.get("Upgrade", "").lower() == SELF_SWITCHED


def must_close(version: HttpVersion, headers: CIMultiDictProxy[str]) -> bool:
    """Whether an answer other than 101 to this request must close the client's connection."""
    return asked_upgrade(version, headers) is not None and not self_switched(headers)


class Feed(Protocol):
    """What takes an upgraded client connection's bytes in the place of aiohttp's parser."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...
