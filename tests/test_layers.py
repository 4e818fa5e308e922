"""Every module of the add-on sits in a layer of the import contract, so none escapes the arrows.

import-linter checks the arrows between the layers the contract names, and says nothing of a module
it was never told about: a new module outside every layer could import anything. This test reads
the contract from pyproject.toml and fails for any module of `autoscaler` or `policies` that no
layer covers.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def layered() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [contract] = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    names: list[str] = []
    for layer in contract["layers"]:
        for part in layer.replace("|", ":").split(":"):
            names.append(part.strip())
    return names


def test_every_module_is_inside_a_layer_of_the_import_contract() -> None:
    layers = layered()
    graph = grimp.build_graph("autoscaler", "policies")
    outside = sorted(
        module
        for module in graph.modules
        if module != "autoscaler" and not any(module == n or module.startswith(n + ".") for n in layers)
    )
    assert outside == [], f"modules in no layer of pyproject.toml's layers contract: {outside}"


def test_the_contract_names_only_modules_that_exist() -> None:
    graph = grimp.build_graph("autoscaler", "policies")
    assert [name for name in layered() if name not in graph.modules] == []
