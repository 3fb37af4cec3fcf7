"""The lewm_ros import graph has no cycles, and the library never imports the layers above it.

Why: a cycle hidden by an import inside a function (planning core <-> strategies, train.py <-> training/loop.py,
issue 20) still ties both modules together: neither can be read, tested or moved alone, and the import order
decides whether it works. So every import of a lewm_ros module counts here, at module level or inside a function
(a lazy import defers torch's cost, not the dependency), and so does a module name written as a string (importlib
tables such as cli.COMMANDS). Only imports under `if TYPE_CHECKING:` are left out: annotations, never run.
The graph is read from the source with `ast`, so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lewm_ros"
LIBRARY = ("model", "planning", "data", "envs", "control", "training")  # the ROS-free core's subpackages
COMMAND_LINE = "lewm_ros.cli"
# Top-level modules every layer may import: they import no lewm_ros module themselves (test_foundation_is_a_leaf).
# lewm_ros.arguments holds the argument types and the one-line error helper the subcommands and the library share.
FOUNDATION = ("lewm_ros.arguments",)


def _module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _from_base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a `from X import ...` names, relative imports resolved against the importing module."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]  # one level up per extra dot
    return ".".join(package + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the lewm_ros modules it imports (see the module docstring for what counts)."""
    files = _module_files()

    def owner(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = _type_checking_nodes(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(owner(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _from_base(module, path.name == "__init__.py", node)
                names = {f"{base}.{alias.name}" for alias in node.names}
                submodules = names & files.keys()  # `from pkg import sub` imports the module pkg.sub
                targets.update(submodules)
                if names - submodules:
                    targets.add(owner(base))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in files:
                targets.add(node.value)
        graph[module] = {t for t in targets if t and t.startswith("lewm_ros") and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _describe(graph: dict[str, set[str]], component: list[str]) -> str:
    members = set(component)
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & members))}" for m in component)


def test_the_graph_sees_imports_inside_functions_and_module_tables():
    """The checks below mean something only if lazy imports and importlib tables are edges."""
    graph = import_graph()
    assert "lewm_ros.training.loop" in graph["lewm_ros.train"]  # imported inside train()
    assert "lewm_ros.train" in graph[COMMAND_LINE]  # named in COMMANDS
    assert "lewm_ros.planning.strategies" in graph["lewm_ros.planning.core"]
    assert "lewm_ros.planning.core" not in graph["lewm_ros.planning.device_cem"]  # only under TYPE_CHECKING


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(_describe(graph, c) for c in found)


def test_nothing_imports_the_command_line_back():
    """The umbrella command line imports the subcommand modules; none of them should need it back."""
    graph = import_graph()
    importers = sorted(m for m, targets in graph.items() if COMMAND_LINE in targets)
    assert not importers, f"{', '.join(importers)} import {COMMAND_LINE}"


def test_library_does_not_import_upwards():
    """The core subpackages import neither the command-line modules at the top nor the ROS edge; `model`, the
    base, imports no other subpackage (training builds on model, never the reverse)."""
    problems = []
    for module, targets in sorted(import_graph().items()):
        parts = module.split(".")
        if len(parts) < 2 or parts[1] not in LIBRARY:
            continue
        for target in sorted(targets):
            layer = target.split(".")[1] if "." in target else None  # None: the package root (__version__)
            if target in FOUNDATION:
                continue
            if layer == "ros":
                problems.append(f"{module} -> {target} (the ROS edge)")
            elif layer is not None and layer not in LIBRARY:
                problems.append(f"{module} -> {target} (above the library)")
            elif parts[1] == "model" and layer not in (None, "model"):
                problems.append(f"{module} -> {target} (model is the base layer)")
    assert not problems, "; ".join(problems)


def test_foundation_is_a_leaf():
    """What every layer may import must import nothing from lewm_ros, or it would carry the layers above in."""
    graph = import_graph()
    assert {module: sorted(graph[module]) for module in FOUNDATION} == {module: [] for module in FOUNDATION}
