"""One copy of what thousands of cached functions have in common, so the cache grows by little each.

At 50,000 functions the watch cache is the controller's and the proxy's largest structure. A
function's record (`FunctionInfo`) is already small: its labels, its annotations less the big ones
(`_objects`), where each label came from, replicas and owner; but built naively every record
holds its own copy of strings and maps that most functions share: label keys (`faas_function`,
`com.openfaas.scale.max`), common values (`true`, `5m`), a `label_sources` map (nearly always the
same few keys, all from the pod template) and annotations (faas-netes writes
`prometheus.io.scrape: "false"` on every function). `Shared` hands out one copy of each: strings are
interned, and equal maps are the same (read-only by contract: `FunctionInfo` exposes them as
`Mapping`). A map holding a last-active mark is unique to its function and never shared.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from autoscaler.interfaces import LAST_ACTIVE_ANNOTATION

# Distinct shared maps kept at most: enough for every label layout a cluster uses, bounded if each
# function has maps of its own (then the rest are simply not shared).
MAX_SHARED_MAPS = 4096


class Shared:
    """`strings(m)`: a copy with interned keys and values; `map(m)`: the one copy of maps equal to m."""

    __slots__ = ("_maps",)

    def __init__(self) -> None:
        self._maps: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}

    @staticmethod
    def strings(value: Mapping[str, str]) -> dict[str, str]:
        return {sys.intern(k): sys.intern(v) for k, v in value.items()}

    def map(self, value: Mapping[str, str]) -> dict[str, str]:
        if LAST_ACTIVE_ANNOTATION in value:
            return self.strings(value)
        key = tuple(value.items())  # order kept: a shared map iterates as the object's own
        found = self._maps.get(key)
        if found is None:
            found = self.strings(value)
            if len(self._maps) < MAX_SHARED_MAPS:
                self._maps[key] = found
        return found
