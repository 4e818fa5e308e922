"""A raw function that switches protocols, and raw-socket clients, for the proxy's Upgrade tests.

aiohttp's server and client speak only WebSocket after a 101; these speak bytes. `Switcher` is the
function: an asyncio server that answers 101 to the protocol it knows and 200 to anything else,
echoes after a switch, and keeps what it saw. `switch` and `until_closed` are blocking clients (run
them in a thread); `send_apart` spaces writes so that the proxy reads each on its own.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Switcher:
    """A raw function that switches to `protocol` when a request asks for it, else answers 200.

    After a switch it sends `greeting`, echoes what it reads and, after the client's half-close, says
    bye and closes. It keeps every head it read (lower-cased) and every byte read after a switch.
    """

    protocol: bytes
    greeting: bytes = b""
    delay: float = 0.0  # seconds before it answers a head
    claims: bytes = b""  # the protocol its 101 names, if not `protocol`
    url: str = ""
    heads: list[bytes] = field(default_factory=list)
    tunnelled: bytearray = field(default_factory=bytearray)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := (await reader.readuntil(b"\r\n\r\n")).lower():
                self.heads.append(head)
                await asyncio.sleep(self.delay)
                if b"\r\nupgrade: " + self.protocol + b"\r\n" in head:
                    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n")
                    writer.write(b"Upgrade: " + (self.claims or self.protocol) + b"\r\n\r\n" + self.greeting)
                    while data := await reader.read(65536):
                        self.tunnelled += data
                        writer.write(data)
                    writer.write(b"bye\n")
                    break
                length = re.search(rb"\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(length[1]) if length else 0)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nno switch")
        except asyncio.IncompleteReadError:
            pass  # the proxy closed the connection
        finally:
            writer.close()


def send_apart(sock: socket.socket, writes: list[bytes]) -> None:
    """Each write on its own, a pause apart, so that the proxy reads them separately."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i, chunk in enumerate(writes):
        if i:
            time.sleep(0.1)
        sock.sendall(chunk)


def switch(port: int, writes: list[bytes], *, until: bytes, then: bytes) -> bytes:
    """Send `writes`; once `until` came back, `then` and a half-close; all that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        send_apart(sock, writes)
        got = b""
        while until not in got:
            chunk = sock.recv(65536)
            assert chunk, f"closed before {until!r}: {got!r}"
            got += chunk
        sock.sendall(then)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            got += chunk
        return got


def until_closed(port: int, writes: list[bytes]) -> bytes:
    """Send `writes`; all that comes back until the proxy closes (b"<still open>" after 3 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        send_apart(sock, writes)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except TimeoutError:
            got += b"<still open>"
        return got
