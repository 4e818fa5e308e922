"""`python -m autoscaler` is the `autoscaler` console script."""

from autoscaler.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
