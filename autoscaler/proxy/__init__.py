"""The wake-up proxy (`autoscaler proxy`): a cold start is a delay, never an error.

Public API: `Proxy` (start, drain, stop, `busy`, `invocation_stats`, bound ports) and
`serve_forever`, which runs a proxy until SIGTERM or SIGINT and drains it.
"""

from autoscaler.proxy._proxy import Proxy, serve_forever

__all__ = ["Proxy", "serve_forever"]
