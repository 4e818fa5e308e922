"""The `autoscaler` command: run, proxy, queue-worker, queue-replay, explain, demo and simulate.

Each command's flags and entry point live in its module under `autoscaler.commands`; this module
builds the one parser from them, runs the chosen command and turns its failures into exit codes.
Bad input exits 2 with a message that says what was wrong and what to do; Ctrl-C exits 130 at any
moment, even while the modules are still loading; a stack trace is never the user interface.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from autoscaler import __version__
from autoscaler.errors import AutoscalerError, ConfigError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C

# The modules of `autoscaler.commands`, in the order `autoscaler --help` lists their commands.
COMMANDS = ("run", "proxy", "queue_worker", "explain", "demo", "simulate")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line that names where the help is (not 12 lines of usage)."""

    commands: Mapping[str, argparse.ArgumentParser]  # the commands' own parsers, by name

    def error(self, message: str) -> NoReturn:
        if message.endswith("expected one argument"):
            message += " (give it a value; one that starts with '-' goes as --flag=VALUE)"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _parser() -> _Parser:
    parser = _Parser(
        prog="autoscaler",
        description="Autoscaler and scale-to-zero controller for serverless functions, with a wake-up proxy.",
    )
    parser.add_argument("--version", action="version", version=f"autoscaler {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format", default="json", choices=["json", "text"], help="log line format (stderr)"
    )
    # Not `required`: argparse would then ask for a COMMAND before it says that an option is unknown.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"autoscaler.commands.{name}").add_parser(sub)
    parser.commands = sub.choices
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m autoscaler`."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling (while loading, starting)
        return EXIT_INTERRUPTED


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The flags, or exit 2 with one line naming what is wrong: an unknown option, or no command."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    if unknown:
        where = parser if command is None else parser.commands[command]
        where.error(f"unrecognized arguments: {' '.join(unknown)}")
    if command is None:
        parser.error("give a command: " + ", ".join(name.replace("_", "-") for name in COMMANDS))
    return args


def _main(argv: Sequence[str] | None) -> int:
    args = _parse(argv)
    from autoscaler.logs import configure_logging

    configure_logging(level=args.log_level, json_lines=args.log_format == "json")
    prefix = f"autoscaler {args.command}: error:"  # as argparse begins its own, for one look to all
    try:
        return int(args.handler(args) or 0)
    except ConfigError as e:
        print(f"{prefix} {e}", file=sys.stderr)
        return EXIT_USAGE
    except AutoscalerError as e:
        print(f"{prefix} {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`autoscaler explain ... | head`): nothing is wrong, stop quietly. The
        # interpreter's own flush of stdout at exit would fail the same way, so point it at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a broken pipe


if __name__ == "__main__":
    raise SystemExit(main())
