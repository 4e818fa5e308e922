"""Where the API client's configuration comes from: a kubeconfig given, the pod's service account, or
the client's default kubeconfig; and one line saying what to do when none of them is usable.

The client library logs "Config not found" for a file that does not exist and then reports a
complaint about that file's contents (a missing current-context), so existence is checked here first.
"""

from __future__ import annotations

import os

import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException

from autoscaler.errors import ConfigError


async def load_configuration(kubeconfig: str | None) -> k8s.Configuration:
    """The client configuration from `kubeconfig` if given, else in-cluster, else ~/.kube/config."""
    configuration = k8s.Configuration()
    _check_exists(kubeconfig)
    try:
        if kubeconfig is None:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except ConfigException:
                _check_exists(None)
                await k8s_config.load_kube_config(client_configuration=configuration)
        else:
            await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    except (ConfigException, OSError, yaml.YAMLError, TypeError, AttributeError) as e:
        # (TypeError, AttributeError: a kubeconfig that is YAML but not a mapping, e.g. one word.)
        where = kubeconfig or "~/.kube/config"
        why = " ".join(str(e).split())  # YAML's errors span lines
        raise ConfigError(
            f"no Kubernetes API configuration: not running in a cluster and {where} is unusable ({why}); "
            "run inside a pod with a service account or pass --kubeconfig PATH"
        ) from e
    return configuration


def _check_exists(given: str | None) -> None:
    """ConfigError naming a kubeconfig that does not exist; `None`: the client's default file."""
    if given is not None:
        if not os.path.isfile(given):
            raise ConfigError(
                f"--kubeconfig {given}: no such file; give the path of a kubeconfig, or run inside a pod "
                "with a service account and leave --kubeconfig unset"
            )
        return
    default = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config"))
    if os.pathsep not in default and not os.path.isfile(default):
        raise ConfigError(
            f"no Kubernetes API configuration: not running in a cluster, and no {default}; run inside "
            "a pod with a service account or pass --kubeconfig PATH"
        )
