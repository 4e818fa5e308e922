"""Where replicas live: behind `autoscaler.interfaces.Provider`, so the loop and the proxy never care.

`kubernetes` (Deployments watched through the API server) and `local` (functions as local
processes) are imported by name where needed; nothing is imported here, so using one does not pull
in the other's dependencies. `_subscribers` is the change-callback rule both share.
"""
