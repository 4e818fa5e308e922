"""An autoscaler and scale-to-zero controller for serverless functions, with a wake-up proxy."""

__version__ = "0.1.0"
