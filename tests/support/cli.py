"""`autoscaler ARGS` run in the test's own process, through the entry point `python -m autoscaler` calls.

A command's flags, settings, validation, messages and exit code are the same code in a child process
and here; here costs no fresh interpreter per call (about 0.4 s of CPU, 1.2 s once a command has
imported the Kubernetes client), and the suite runs many such calls. What only a process shows is
tested with one: signals and Ctrl-C (tests/cli/test_interrupt.py), what start-up imports
(tests/cli/test_startup.py), the console script (tests/cli/test_commands.py), and the long-running
commands with their real servers (tests/e2e, tests/proxy, tests/queue, tests/demo).

`run_cli` captures stdout and stderr, returns the exit code a process would give (an uncaught
exception prints its traceback and gives 1, as the interpreter does), and puts back what a command
changes in the process: the environment and the logging set-up. The command runs on a thread of its
own (it may run its own event loop), one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import subprocess
import threading
import traceback
from collections.abc import Iterator, Mapping

from autoscaler.cli import main

_one_at_a_time = threading.Lock()  # stdout, stderr and the environment belong to the whole process


@contextlib.contextmanager
def _restored(env: Mapping[str, str] | None) -> Iterator[None]:
    environ = dict(os.environ)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("aiohttp.access",)}
    if env is not None:
        os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`autoscaler *args` with `env` added to the environment, as a finished process would report it.

    The command runs on a thread of its own, so that one that should have stopped at its input and
    starts instead fails the test after `timeout` rather than hanging the run.
    """
    if not _one_at_a_time.acquire(timeout=timeout):
        raise AssertionError(f"autoscaler {' '.join(args)}: an earlier command is still running")
    out, err = io.StringIO(), io.StringIO()
    codes: list[int] = []

    def command() -> None:
        try:
            codes.append(main(list(args)))
        except SystemExit as e:  # argparse: --help, --version and usage errors
            if e.code is None or isinstance(e.code, int):
                codes.append(e.code or 0)
            else:
                print(e.code, file=err)
                codes.append(1)
        except Exception:
            traceback.print_exc(file=err)
            codes.append(1)

    thread = threading.Thread(target=command, name=f"autoscaler {args[:1]}", daemon=True)
    with _restored(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        thread.start()
        thread.join(timeout)
    if thread.is_alive():  # left holding the lock: later calls fail fast instead of waiting on it
        command_line = " ".join(args)
        raise AssertionError(f"autoscaler {command_line} still running after {timeout:g} s\n{err.getvalue()}")
    _one_at_a_time.release()
    return subprocess.CompletedProcess(["autoscaler", *args], codes[0], out.getvalue(), err.getvalue())


async def run_cli_async(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`run_cli` for a test on an event loop: waits on a thread, so the test's loop keeps serving."""
    return await asyncio.to_thread(run_cli, *args, env=env)
