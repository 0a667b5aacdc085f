"""Print atflash's import arrows between folders, read from the source with ``ast``.

A node is a folder of the package (``backends/``) or a top-level module
(``api.py``). An arrow A -> B means some module in A imports from B, at
run time (inside a function: marked ``(lazy)``) or only for type
checking (``if TYPE_CHECKING:``, marked ``(t)``).
An arrow from a lower layer (``LAYERS``) to a higher one runs back up: it
is printed with the imports behind it. Used for docs/architecture.md, and
by tests/unit/test_architecture.py, which keeps the count at zero:

    python docs/import_arrows.py
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "atflash"

# The layers, bottom first, as docs/architecture.md describes them: an arrow
# from a lower layer to a higher one runs back up. A node not named here is
# reported, so the list cannot go stale unnoticed.
LAYERS = [
    [
        "errors.py",
        "results.py",
        "events.py",
        "files.py",
        "chips.py",
        "output.py",
        "seriallink.py",
        "ports.py",
        "recovery.py",
        "_forkserver.py",
    ],
    ["layout/"],
    ["content/"],
    ["planning/"],
    ["backends/"],
    ["sim/"],
    ["factory/"],
    ["offline.py"],
    ["issue/"],
    ["run/"],
    ["station/"],
    ["api.py"],
    ["__init__.py"],
    ["cli/", "__main__.py"],
]
LAYER = {node: n for n, nodes in enumerate(LAYERS) for node in nodes}


def node_of(parts: list[str]) -> str:
    """The folder or top-level module that the module ``atflash.<parts>`` belongs to."""
    if not parts:
        return "__init__.py"
    if (PKG / parts[0]).is_dir():
        return parts[0] + "/"
    return parts[0] + ".py"


def imported(tree: ast.Module, here: list[str], is_init: bool) -> list[tuple[list[str], str]]:
    """Every atflash module a module imports, as parts after ``atflash``, marked type-only or lazy."""
    typing_only: set[int] = set()
    lazy: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lazy.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: list[tuple[list[str], str]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ["atflash", *(here if is_init else here[:-1])]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "atflash":
                continue
            # "from atflash import x": x is a module when its file or folder exists.
            tail = parts[1:]
            while tail and not (
                PKG.joinpath(*tail).is_dir() or PKG.joinpath(*tail[:-1], tail[-1] + ".py").exists()
            ):
                tail = tail[:-1]
            mark = " (t)" if id(node) in typing_only else " (lazy)" if id(node) in lazy else ""
            found.append((tail, mark))
    return found


def graph() -> tuple[dict[str, list[str]], dict[tuple[str, str], set[str]]]:
    modules: dict[str, list[str]] = defaultdict(list)
    arrows: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        parts = list(rel.with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        here = parts[:-1] if is_init else parts
        source = node_of(here) if len(rel.parts) > 1 else rel.name
        modules[source].append(str(rel))
        for target, mark in imported(ast.parse(path.read_text()), here, is_init):
            dest = node_of(target)
            if dest != source and target:
                arrows[source, dest].add(f"{rel} -> {'.'.join(target)}{mark}")
    return modules, arrows


def in_cycle(arrows: dict[tuple[str, str], set[str]]) -> set[tuple[str, str]]:
    """The arrows A -> B with a path back from B to A."""
    nexts: dict[str, set[str]] = defaultdict(set)
    for a, b in arrows:
        nexts[a].add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            for n in nexts[todo.pop()]:
                if n == goal:
                    return True
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return False

    return {(a, b) for a, b in arrows if reaches(b, a)}


def back_up(arrows: dict[tuple[str, str], set[str]]) -> list[tuple[str, str]]:
    """The arrows from a lower layer to a higher one."""
    return sorted((a, b) for a, b in arrows if LAYER[b] > LAYER[a])


def main() -> int:
    modules, arrows = graph()
    print("## Modules\n")
    for node in sorted(modules):
        inside = sorted(str(Path(m).relative_to(node)) if "/" in node else m for m in modules[node])
        print(f"{node:16} {', '.join(inside)}")
    print("\n## Arrows between folders and top-level modules\n")
    for a in sorted(modules):
        dests = sorted(b for x, b in arrows if x == a)
        if dests:
            print(f"{a:16} -> {', '.join(dests)}")
    unplaced = sorted(set(modules) - set(LAYER))
    if unplaced:
        print(f"\nnot in LAYERS: {', '.join(unplaced)}")
        return 1
    back = back_up(arrows)
    print(f"\n## Arrows that run back up ({len(back)})\n")
    for a, b in back:
        print(f"{a} -> {b}:")
        for why in sorted(arrows[a, b]):
            print(f"    {why}")
    rest = {k: v for k, v in arrows.items() if k not in back}
    print(
        f"\nWithout them, arrows in a cycle: {len(in_cycle(rest))}; with them: {len(in_cycle(arrows))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
