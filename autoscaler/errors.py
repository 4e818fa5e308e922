"""One exception hierarchy for the add-on.

Client-library errors (aiohttp, kubernetes-asyncio, prometheus) are wrapped into these with
`raise ... from e`, so callers handle our kinds of failure, not each library's.
"""

from __future__ import annotations

import errno
import socket


class AutoscalerError(Exception):
    """Base of every error the add-on raises on purpose."""


class SpecError(AutoscalerError, ValueError):
    """A function's scaling labels are invalid. The message names the label, the value and what is allowed."""

    def __init__(self, label: str, value: str, allowed: str) -> None:
        self.label = label
        self.value = value
        self.allowed = allowed
        super().__init__(f"label {label}={value!r} is invalid: {allowed}")


class ConfigError(AutoscalerError, ValueError):
    """A setting (flag, env var, functions file) is invalid; the message says which and how to fix it."""


class MetricsError(AutoscalerError):
    """Load could not be read (Prometheus down, slow, or answering an error)."""


class ProviderError(AutoscalerError):
    """The replica provider (Kubernetes API or local processes) failed an operation."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ConflictError(ProviderError):
    """The object changed under us (HTTP 409); re-read and retry."""


class NotFoundError(ProviderError):
    """The function (or its Deployment) does not exist."""


def reason(e: BaseException) -> str:
    """An exception for a log line: its type, and its text when it has one (many say nothing)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def cannot_listen(e: OSError, *, host: str, port: int, host_flag: str, port_flag: str) -> ConfigError:
    """The one message for a server that could not bind `host:port`, with the advice that fits why."""
    where = f"cannot listen on {host}:{port}"
    if isinstance(e, socket.gaierror):
        return ConfigError(
            f"{where}: {host!r} is not an address this machine can resolve ({e.strerror or e}); "
            f"give {host_flag} an IP address such as 0.0.0.0 or 127.0.0.1"
        )
    if e.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            f"{where}: {host} is not an address of this machine; give {host_flag} one of its addresses, "
            "or 0.0.0.0 for all of them"
        )
    if e.errno == errno.EACCES:
        return ConfigError(
            f"{where}: a port below 1024 needs privileges; choose another {port_flag} (0 picks a free port)"
        )
    return ConfigError(f"{where} ({e.strerror or e}); choose another {port_flag} (0 picks a free port)")
