"""Pure scaling decisions.

Everything in this package is a function of its arguments: no I/O, no clock reads, and no imports
from the add-on's I/O modules. The same code runs in the cluster, in the local provider and in the
trace simulator, which is what makes the simulator's numbers mean something for the cluster.
"""
