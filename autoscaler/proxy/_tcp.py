"""What the kernel knows about an upstream TCP connection that asyncio's transports do not say.

A full accept queue makes the kernel drop the handshake's last packet, so a connection can look open
to the proxy while the replica never accepted it: only TCP_INFO (Linux) tells whether the request's
bytes were ever acknowledged. Such a connection is reset (SO_LINGER 0) so the request can never
arrive late. And bytes a server sent after the end of a response may wait in the socket, unread, when
the connection is handed to the next request: FIONREAD counts them. These are plain functions over a
transport so that `_client`'s protocol stays about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios

_FIONREAD_BUFFER = bytes(4)


def unacknowledged(transport: asyncio.BaseTransport) -> bool | None:
    """Whether the peer's kernel acknowledged none of the bytes sent; None when TCP_INFO cannot tell.

    Sent segments unacknowledged and nothing acknowledged beyond the SYN (which `tcpi_bytes_acked`
    counts as one byte).
    """
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 128)
    except (OSError, AttributeError):
        return None
    if len(info) < 28:
        return None
    unacked = struct.unpack_from("I", info, 24)[0]  # tcpi_unacked
    acked = struct.unpack_from("Q", info, 120)[0] if len(info) >= 128 else 0  # tcpi_bytes_acked
    return bool(unacked > 0 and acked <= 1)


def reset(transport: asyncio.Transport) -> None:
    """Close with a reset (SO_LINGER 0), so that the kernel never delivers what was sent."""
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def pending(transport: asyncio.BaseTransport) -> int:
    """Bytes received by the kernel and not yet read (FIONREAD); 0 when it cannot tell."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, _FIONREAD_BUFFER)
    except (OSError, ValueError):
        return 0
    count: int = struct.unpack("i", raw)[0]
    return count
