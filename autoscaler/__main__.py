"""`python -m autoscaler` is the `autoscaler` console script."""

try:
    from autoscaler.cli import main
except KeyboardInterrupt:  # Ctrl-C while the entry point itself is loading: exit 130, as later on
    raise SystemExit(130) from None

if __name__ == "__main__":
    raise SystemExit(main())
