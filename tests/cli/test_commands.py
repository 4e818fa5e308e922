"""Every command's command line lives in `autoscaler.commands`, and building the parser stays cheap."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import autoscaler.commands
from autoscaler import cli


def test_every_command_module_is_registered_on_the_parser() -> None:
    found = pkgutil.iter_modules(autoscaler.commands.__path__)
    assert {m.name for m in found if not m.name.startswith("_")} == set(cli.COMMANDS)


def test_the_help_lists_every_command_in_order() -> None:
    argv = [sys.executable, "-m", "autoscaler", "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith("    ")]
    listed = [words[0] for words in lines if words]
    expected = ["run", "proxy", "queue-worker", "queue-replay", "explain", "demo", "simulate"]
    assert [name for name in listed if name in expected] == expected


def test_building_the_parser_imports_neither_the_plotting_nor_the_demo_stack() -> None:
    # Every command starts by building the parser; Ctrl-C and `--help` should not wait for matplotlib.
    code = (
        "import sys; from autoscaler.cli import _parser; _parser(); "
        "print(sorted(m for m in ('matplotlib', 'autoscaler.demo.stack', 'autoscaler.simulate.plot') "
        "if m in sys.modules))"
    )
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
