"""Starting a proxy with bad settings fails at once with an error that names the setting."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.admin import AdminServer
from autoscaler.config import ProxySettings
from autoscaler.errors import ConfigError
from autoscaler.proxy import Proxy
from tests.support.fakeprovider import FakeProvider


async def test_a_port_in_use_is_reported_as_the_port_setting_and_nothing_is_left_open(
    provider: FakeProvider,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proxy = Proxy(settings=ProxySettings(host="127.0.0.1", port=port, admin_port=0), provider=provider)
        with pytest.raises(ConfigError, match=rf"cannot listen on 127.0.0.1:{port} .*choose another --port"):
            await proxy.start()
    assert not proxy.ready()
    await proxy.stop()  # a second stop is harmless


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("999.1.1.1", "'999.1.1.1' is not an address this machine can resolve"),
        ("192.0.2.1", "192.0.2.1 is not an address of this machine"),  # TEST-NET-1: on no machine
    ],
)
async def test_a_host_the_proxy_cannot_bind_is_reported_as_the_host_setting_not_the_port(
    provider: FakeProvider, host: str, says: str
) -> None:
    proxy = Proxy(settings=ProxySettings(host=host, port=0, admin_port=0), provider=provider)
    with pytest.raises(ConfigError, match=rf"cannot listen on {host}:0: {says}.*; give --host ") as raised:
        await proxy.start()
    assert "--port" not in str(raised.value)
    await proxy.stop()


async def test_the_admin_server_names_its_own_host_flag() -> None:
    admin = AdminServer(
        host="192.0.2.1",
        port=0,
        registry=CollectorRegistry(),
        healthy=lambda: (True, ""),
        ready=lambda: (True, ""),
    )
    with pytest.raises(ConfigError, match=r"192.0.2.1 is not an address of this machine; give --admin-host"):
        await admin.start()


def test_an_invalid_default_namespace_is_refused_with_the_rule(provider: FakeProvider) -> None:
    with pytest.raises(ConfigError, match="--default-namespace 'Bad_NS' is not a valid Kubernetes namespace"):
        Proxy(settings=ProxySettings(default_namespace="Bad_NS"), provider=provider)
