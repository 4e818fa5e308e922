"""Where replicas live: behind `autoscaler.interfaces.Provider`, so the loop and the proxy never care.

`kubernetes` (Deployments watched through the API server) and `local` (functions as local
processes) are imported by name where needed; nothing is imported here, so using one does not pull
in the other's dependencies.

The Kubernetes provider's parts: `kubernetes` (the Provider, its lifecycle and the namespaces it
follows), `_k8s_watch` (list-then-watch loops) feeding `_k8s_cache` (functions, endpoints,
readiness), `_k8s_marks` (last-active writes, the one throttle), `_k8s_events` (aggregated Events),
`_k8s_objects` (wire-format dicts in and out, no I/O) and `_k8s_calls` (the one error mapping and
retry policy, used by `autoscaler.leader` too). The local provider's: `local` and `_local_replica`.
`_subscribers` is the change-callback rule both share.
"""
