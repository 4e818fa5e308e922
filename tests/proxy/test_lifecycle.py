"""Starting a proxy with bad settings fails at once with an error that names the setting."""

from __future__ import annotations

import socket

import pytest

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


def test_an_invalid_default_namespace_is_refused_with_the_rule(provider: FakeProvider) -> None:
    with pytest.raises(ConfigError, match="--default-namespace 'Bad_NS' is not a valid Kubernetes namespace"):
        Proxy(settings=ProxySettings(default_namespace="Bad_NS"), provider=provider)
