"""The Kubernetes provider: functions are Deployments, watched through the API server.

Its parts: `_provider` (the Provider, its lifecycle and the namespaces it follows), `_watch`
(list-then-watch loops) feeding `_cache` (functions, endpoints, readiness; strings kept once by
`_shared`), `_marks` (last-active writes, the one throttle), `_events` (aggregated Events),
`_budget` (the client-side write budget), `_objects` (wire-format dicts in and out, no I/O) and
`_calls` (the one error mapping and retry policy, used by `autoscaler.leader` too).
"""

from autoscaler.providers.kubernetes._provider import API_CALLS, EVENT_SERIES_WINDOW, KubernetesProvider

__all__ = ["API_CALLS", "EVENT_SERIES_WINDOW", "KubernetesProvider"]
