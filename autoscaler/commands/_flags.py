"""What every command does the same way: one flag per setting, one Go-duration flag, one event loop.

A setting's flag is generated from its pydantic field (name, help text, environment variable and
default), so flag, variable and documentation cannot drift apart; `settings` builds the model from
the flags actually given plus the environment, and a bad value becomes a ConfigError that names both.
A duration flag is a Go duration (`90s`, `15m`, `500ms`); a bad one is a usage error naming the flag
and the value, said the same way by every command.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pydantic import BaseModel

from autoscaler.config import build
from autoscaler.spec import parse_duration

DURATION_HINT = "use a Go duration such as 90s, 500ms or 15m"


def command(
    subparsers: Any, name: str, *, help: str, description: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """A command's parser on the CLI's subparsers, run by `handler`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(handler=handler)
    return parser


def add_settings_flags(
    parser: argparse.ArgumentParser,
    *models: type[BaseModel],
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
    group: Any = None,
    prefix: str = "",
) -> None:
    """One flag per field of each model (or of its fields in `only`): `--field-name`, env var and
    default in its help, after `prefix`. `group` is the argument group for them (default: one per
    model, named after it)."""
    for model in models:
        _add_model(parser, model, skip=skip, only=only, group=group, prefix=prefix)


def _add_model(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    *,
    skip: tuple[str, ...],
    only: tuple[str, ...] | None,
    group: Any,
    prefix: str,
) -> None:
    if group is None:
        group = parser.add_argument_group(model.__name__.removesuffix("Settings").lower() + " settings")
    for name, field in model.model_fields.items():
        if name in skip or (only is not None and name not in only):
            continue
        flag = "--" + name.replace("_", "-")
        env = f"AUTOSCALER_{name.upper()}"
        default = field.default
        shown = ",".join(default) if isinstance(default, list) else default
        text = f"{prefix}{field.description or name} [env {env}; default {shown}]"
        text = text.replace("%", "%%")
        if field.annotation is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            group.add_argument(flag, dest=name, default=None, metavar=name.split("_")[-1].upper(), help=text)


def settings_overrides(
    args: argparse.Namespace, model: type[BaseModel], *, only: Sequence[str] | None = None
) -> dict[str, Any]:
    """The flags of `model` the user actually gave (None means: take the env var or the default).

    `only`: the fields that were added as flags (as given to `add_settings_flags`), so that a
    command's own option of the same name is not taken for the setting.
    """
    names = model.model_fields if only is None else only
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def settings(args: argparse.Namespace, model: type[BaseModel], *, only: Sequence[str] | None = None) -> Any:
    """`model` from the flags given, the environment and the defaults; ConfigError naming a bad one."""
    return build(model, settings_overrides(args, model, only=only))  # type: ignore[arg-type]


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run a long-running command's coroutine on uvloop (a dependency on Linux), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


def number(*, at_least: float = 0.0, whole: bool = False) -> Callable[[str], Any]:
    """An argparse `type`: a finite number of at least `at_least` (a whole one with `whole`)."""
    what = "a whole number" if whole else "a number"

    def parse(text: str) -> float | int:
        try:
            value: float | int = int(text) if whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a finite number: give {what} of at least {at_least:g}"
            )
        if value < at_least:
            raise argparse.ArgumentTypeError(f"{text!r}: give {what} of at least {at_least:g}")
        return value

    return parse


class GoDuration(argparse.Action):
    """`--flag DURATION`: a Go duration, stored in seconds (0 allowed)."""

    positive = False

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("metavar", "DURATION")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        text = str(values)
        flag = option_string or self.dest
        try:
            seconds = parse_duration(text)
        except ValueError as e:
            parser.error(f"{flag}: {e}; {DURATION_HINT}")
        if self.positive and seconds <= 0:
            parser.error(f"{flag}: {text!r} must be longer than 0, e.g. 5s")
        setattr(namespace, self.dest, seconds)


class PositiveGoDuration(GoDuration):
    """`--flag DURATION`: a Go duration longer than 0, stored in seconds."""

    positive = True
