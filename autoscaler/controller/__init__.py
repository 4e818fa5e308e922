"""The control loop: observe -> decide -> act, once per tick, for every function (`_loop`).

`_memo` holds what the loop keeps between ticks: the per-function entries and the rule by which a
decision is reused instead of made again.
"""

from autoscaler.controller._loop import Controller
from autoscaler.controller._memo import TickReport

__all__ = ["Controller", "TickReport"]
