"""A cross-function prior for the adaptive keep-alive: where a function with little history starts.

The hybrid histogram (`policies.adaptive`) needs a handful of a function's own idle times before it
predicts anything; until then it keeps the function warm for the fixed zero-duration. Most functions
of a production day are called a few times only, so most of them never leave that fallback. This
prior pools the idle times of the *other* functions seen so far: a function that has too few idle
times of its own takes its windows from the prior as it stands at its latest call.

It is built online and never looks ahead: an idle time joins the prior only once the minute of the
call that ended it has passed, and a query names the time it is asked at. Each function contributes
at most its first `per_function` idle times, so that a few busy functions (hundreds of one-minute
gaps each) do not make the prior theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class IdlePrior:
    """Idle times of many functions, each with the time it became known, oldest first."""

    known_at: npt.NDArray[np.float64]  # seconds: the end of the minute of the call that ended the idle time
    owners: Ints  # the function each idle time belongs to
    idle_bins: Ints  # its length in bins (>= `bins`: beyond the histogram)
    bins: int  # bins of the histogram it feeds

    @classmethod
    def from_minute_counts(
        cls,
        counts: Sequence[npt.NDArray[np.int64]],
        *,
        bins: int = 240,
        bin_width: float = 60.0,
        per_function: int = 20,
    ) -> IdlePrior:
        """The prior of a set of functions' calls per minute (function i is owner i).

        An idle time is the number of empty minutes between two minutes with calls, as the hybrid
        histogram counts it when it sees one call per busy minute.
        """
        known, owners, lengths = [], [], []
        for owner, series in enumerate(counts):
            busy = np.flatnonzero(np.asarray(series) > 0)[: per_function + 1]
            if busy.size < 2:
                continue
            known.append((busy[1:] + 1) * bin_width)
            lengths.append(np.diff(busy) - 1)
            owners.append(np.full(busy.size - 1, owner, dtype=np.int64))
        if not known:
            empty = np.zeros(0, dtype=np.int64)
            return cls(np.zeros(0), empty, empty, bins)
        times = np.concatenate(known).astype(np.float64)
        order = np.argsort(times, kind="stable")
        return cls(
            times[order],
            np.concatenate(owners)[order],
            np.concatenate(lengths).astype(np.int64)[order],
            bins,
        )

    def counts(self, *, before: float, exclude: int) -> tuple[Ints, int]:
        """(histogram, idle times beyond it) of the idle times known before `before`, of every function
        but `exclude`."""
        seen = int(np.searchsorted(self.known_at, before, side="left"))
        lengths = self.idle_bins[:seen][self.owners[:seen] != exclude]
        inside = lengths[lengths < self.bins]
        histogram: Ints = np.bincount(inside, minlength=self.bins).astype(np.int64)
        return histogram, int(lengths.size - inside.size)
