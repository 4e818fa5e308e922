"""The local provider: each replica of a function is a process on this machine (`autoscaler demo`).

Its parts: `_provider` (the Provider: functions from a functions file, scaling, readiness, Events)
and `_replica` (one replica's process: start, readiness probe, drain, restart back-off).
"""

from autoscaler.providers.local._provider import (
    MAX_REPLICAS,
    LocalEvent,
    LocalProvider,
    ReplicaTiming,
    ReplicaView,
)
from autoscaler.providers.local._replica import die_with_parent

__all__ = ["MAX_REPLICAS", "LocalEvent", "LocalProvider", "ReplicaTiming", "ReplicaView", "die_with_parent"]
