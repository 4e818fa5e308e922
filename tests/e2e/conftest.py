"""Fixtures for end-to-end runs: exporter -> real Prometheus -> `autoscaler run` process -> API server."""

from __future__ import annotations

from tests.support.prometheus import module_prometheus_factory, prometheus_factory  # noqa: F401 - re-exported
