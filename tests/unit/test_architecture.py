"""The package's layers hold: no import arrow runs back up, the core never reaches a board.

docs/architecture.md describes the layers; docs/import_arrows.py reads the
arrows from the source. These tests keep both true as the code changes.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "atflash"


def _arrows_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "import_arrows", ROOT / "docs" / "import_arrows.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_arrow_runs_back_up_and_every_folder_has_its_layer() -> None:
    script = _arrows_script()
    modules, arrows = script.graph()
    assert set(modules) <= set(script.LAYER), "a new folder or module needs its place in LAYERS"
    assert script.back_up(arrows) == []
    assert script.in_cycle(arrows) == set()


def test_the_core_imports_no_backend_run_or_front_end() -> None:
    _modules, arrows = _arrows_script().graph()
    core = {"layout/", "content/", "planning/"}
    above = {"backends/", "run/", "api.py", "cli/", "station/", "issue/", "factory/", "sim/"}
    assert [(a, b) for a, b in arrows if a in core and b in above] == []


def _compares_a_backend_name(node: ast.AST) -> bool:
    if not isinstance(node, ast.Compare):
        return False
    sides = [node.left, *node.comparators]
    names = {"at", "esptool"}
    return any(isinstance(side, ast.Constant) and side.value in names for side in sides) and any(
        "via" in ast.unparse(side) or ast.unparse(side).endswith(".name") for side in sides
    )


def test_only_backends_ask_which_backend_a_run_uses() -> None:
    """Backend facts live in backends/registry.py: nothing else tests ``via == "at"``."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] in ("backends", "sim"):
            continue  # the backends themselves, and the simulators of each
        tree = ast.parse(path.read_text())
        found += [f"{rel}:{n.lineno}" for n in ast.walk(tree) if _compares_a_backend_name(n)]
    assert found == []


def test_only_the_cli_imports_click() -> None:
    users = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "cli":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(name == "click" or name.startswith("click.") for name in names):
                users.append(str(rel))
    assert users == []
