"""The ports servers that restart listen on: outside the kernel's ephemeral range, never twice."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.child import stable_port


def test_a_stable_port_lies_below_the_range_the_kernel_gives_outgoing_connections() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(stable_port() < low for _ in range(20))


def test_no_two_stable_ports_are_the_same_and_each_can_be_bound_again_after_a_stop() -> None:
    ports = [stable_port() for _ in range(50)]
    assert len(set(ports)) == 50
    for port in ports[:5]:
        for _ in range(2):  # listen, stop, listen again on the same port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen()
