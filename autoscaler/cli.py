"""The `autoscaler` command: run, proxy, queue-worker, demo, simulate and explain.

Flags are generated from the settings models in `autoscaler.config`, so every setting has a flag, an
environment variable and help text that cannot drift apart. Bad input exits 2 with a message that says
what was wrong and what to do; a stack trace is never the user interface.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from autoscaler import __version__
from autoscaler.config import (
    ControllerSettings,
    MetricsSettings,
    ProviderSettings,
    ProxySettings,
    QueueSettings,
    QueueWorkerSettings,
)
from autoscaler.errors import AutoscalerError, ConfigError

EXIT_USAGE = 2


def add_settings_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel], *, skip: tuple[str, ...] = ()
) -> None:
    """One flag per field of `model`: `--field-name`, with the env var and default in its help."""
    group = parser.add_argument_group(model.__name__.removesuffix("Settings").lower() + " settings")
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        env = f"AUTOSCALER_{name.upper()}"
        default = field.default
        shown = ",".join(default) if isinstance(default, list) else default
        text = f"{field.description or name} [env {env}; default {shown}]"
        text = text.replace("%", "%%")
        if field.annotation is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            group.add_argument(flag, dest=name, default=None, metavar=name.split("_")[-1].upper(), help=text)


def settings_overrides(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The flags of `model` the user actually gave (None means: take the env var or the default)."""
    return {name: getattr(args, name) for name in model.model_fields if getattr(args, name, None) is not None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscaler",
        description="Autoscaler and scale-to-zero controller for serverless functions, with a wake-up proxy.",
    )
    parser.add_argument("--version", action="version", version=f"autoscaler {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-format", default="json", choices=["json", "text"], help="log line format (stderr)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run the control loop against a Kubernetes cluster",
        description="Tick every --interval: read load from Prometheus, decide from each function's labels, "
        "patch the Deployments' scale subresource (only what changed), write an Event per change.",
    )
    for model in (ControllerSettings, MetricsSettings, ProviderSettings):
        add_settings_flags(run, model)
    run.set_defaults(handler="autoscaler.commands.run:run")

    proxy = sub.add_parser(
        "proxy",
        help="run the wake-up proxy in front of the functions",
        description="Serve /function/NAME[.NAMESPACE]/...; hold requests for functions at zero replicas, "
        "wake them and forward once a replica is ready.",
    )
    add_settings_flags(proxy, ProxySettings)
    add_settings_flags(proxy, ProviderSettings)
    add_settings_flags(proxy, QueueSettings)
    proxy.set_defaults(handler="autoscaler.commands.proxy:run")

    worker = sub.add_parser(
        "queue-worker",
        help="invoke the asynchronous calls queued on NATS JetStream, through the proxy",
        description="Pull each function's queued calls (one durable consumer per function), invoke them "
        "through the proxy's /function/ route, retry with back-off, post callbacks, dead-letter the rest.",
    )
    add_settings_flags(worker, QueueSettings)
    add_settings_flags(worker, QueueWorkerSettings)
    worker.set_defaults(handler="autoscaler.commands.queue_worker:run")

    replay = sub.add_parser(
        "queue-replay",
        help="send dead-lettered asynchronous calls back to the queue",
        description="Move the calls in the dead-letter stream (QUEUE-dead) of one function, or of all, back "
        "to the queue, with their original X-Call-Id; each is deleted from the dead letters once re-queued.",
    )
    replay.add_argument("function", nargs="?", help="NAME[.NAMESPACE] (default: every function)")
    replay.add_argument("--namespace", default="openfaas-fn", help="namespace when FUNCTION has none")
    replay.add_argument("--limit", type=int, default=None, help="replay at most this many")
    add_settings_flags(replay, QueueSettings)
    replay.set_defaults(handler="autoscaler.commands.queue_worker:run_replay")

    explain = sub.add_parser(
        "explain",
        help="say what the loop would decide for given labels and load (offline), or for a live function",
        description="Offline: --label KEY=VALUE ... --load X --replicas N. Live: explain NAME[.NAMESPACE] "
        "reads the function from the cluster and its load from Prometheus.",
    )
    explain.add_argument("function", nargs="?", help="NAME[.NAMESPACE] of a live function (needs a cluster)")
    explain.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="a scaling label (repeat)"
    )
    explain.add_argument(
        "--load", type=float, default=None, help="load in the function's scale type (offline)"
    )
    explain.add_argument("--replicas", type=int, default=1, help="current replicas (offline, default 1)")
    explain.add_argument(
        "--idle", default=None, help="time since the last started invocation, Go duration (offline)"
    )
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    add_settings_flags(explain, MetricsSettings)
    add_settings_flags(explain, ProviderSettings)
    explain.set_defaults(handler="autoscaler.commands.explain:run")

    for module in ("autoscaler.demo", "autoscaler.simulate"):
        try:
            imported = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        imported.add_parser(sub)
        command = module.rpartition(".")[2]
        if sub.choices[command].get_default("handler") is None:
            sub.choices[command].set_defaults(handler=imported.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m autoscaler`."""
    parser = _parser()
    args = parser.parse_args(argv)
    from autoscaler.telemetry import configure_logging

    configure_logging(level=args.log_level, json_lines=args.log_format == "json")
    handler = args.handler
    try:
        if isinstance(handler, str):
            module, _, func = handler.partition(":")
            handler = getattr(importlib.import_module(module), func)
        result = handler(args)
        return int(result or 0)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except AutoscalerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`autoscaler explain ... | head`): nothing is wrong, stop quietly. The
        # interpreter's own flush of stdout at exit would fail the same way, so point it at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by a broken pipe


if __name__ == "__main__":
    raise SystemExit(main())
