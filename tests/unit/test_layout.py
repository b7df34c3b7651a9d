"""The shape of cq's code, read from its source with ``ast``: no import circles between its
modules (imports inside functions count; those under ``if TYPE_CHECKING:`` do not), no import
inside a function without a comment saying why Django's app loading needs it there, and no
module over 400 lines. And the public import paths still give the names the docs promise."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cq"
#: What an import inside a function must say, on its line or in the comment right above it.
WHY = "app loading:"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import under ``node``, in functions too (a circle closed by an import inside a
    function is a circle all the same), but not those under ``if TYPE_CHECKING:``, which only
    type checkers run."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [node]
    if isinstance(node, ast.If) and _is_type_checking(node):
        return [found for child in node.orelse for found in _imports(child)]
    return [found for child in ast.iter_child_nodes(node) for found in _imports(child)]


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """cq's modules that ``node``, in ``module``, imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {name for name in names if name in MODULES}
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if base not in MODULES:
        return set()
    # "from package import module" imports the module; "from module import name", the module.
    return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = {target for node in _imports(tree) for target in _targets(module, node)} - {module}
    return graph


def components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of two or more modules that import each other, through others maybe (Tarjan's
    strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """A shortest cycle through the first module of each group that imports itself."""
    return [cycle_in(graph, component) for component in components(graph)]


def cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A path through ``component`` from its first module back to it, by breadth-first search."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    return sorted(component)  # pragma: no cover (a component always holds a cycle)


def test_no_module_of_cq_imports_itself_through_others():
    graph = import_graph()
    found = [f"{' -> '.join(cycle_in(graph, group))} (the circle holds {', '.join(sorted(group))})"
             for group in components(graph)]
    assert not found, "Import circles between cq's modules:\n" + "\n".join(found)


def test_the_graph_sees_imports_of_every_kind():
    """The checks above read what they should: relative and absolute imports, of modules and of
    names, at any depth; not those under ``if TYPE_CHECKING:``."""
    graph = import_graph()
    assert {"cq.exceptions", "cq.registry"} <= graph["cq"]  # from .x import name
    assert "cq.models" in graph["cq.management.commands.cq_maintenance"]  # from cq.models import name
    assert "cq.models" not in graph["cq.workers.hooks"]  # under if TYPE_CHECKING:
    assert "cq.engine.dispatch" in graph["cq.apps"]  # inside a function (ready())
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def imports_inside_functions() -> list[tuple[str, int, bool]]:
    """Every import in a function of cq: its module, its line, and whether a comment says why."""
    found = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines), str(path))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found.append((module, node.lineno, _says_why(lines, node.lineno)))
    return sorted(set(found))


def _says_why(lines: list[str], lineno: int) -> bool:
    """Whether the import on line ``lineno``, or the comment right above it (above the imports
    grouped with it), says ``app loading:``."""
    at = lineno - 1
    if WHY in lines[at]:
        return True
    while at > 0 and lines[at - 1].strip().startswith(("import ", "from ")):
        at -= 1
    while at > 0 and lines[at - 1].strip().startswith("#"):
        if WHY in lines[at - 1]:
            return True
        at -= 1
    return False


def test_imports_inside_functions_say_why_app_loading_needs_them():
    unexplained = [f"{module}:{line}" for module, line, why in imports_inside_functions() if not why]
    assert not unexplained, (f"Imports inside functions without a '# {WHY} ...' comment saying why they cannot be "
                             f"at the top of the module: {', '.join(unexplained)}")


def test_no_module_is_over_400_lines():
    sizes = {module: len(path.read_text().splitlines()) for module, path in MODULES.items()
             if ".migrations." not in module}
    over = [f"{module} ({lines})" for module, lines in sorted(sizes.items()) if lines > MAX_LINES]
    assert not over, f"Modules over {MAX_LINES} lines: {', '.join(over)}; split them."


#: The import paths the documentation names (docs/reference/api.rst, and django-cq's), each with
#: names it promises there; the modules behind them may move, these may not.
PUBLIC = {
    "cq": ["task", "CQError", "DuplicateSubmitError", "InvalidTask", "TaskNotRegistered"],
    "cq.decorators": ["task"],
    "cq.models": ["Task", "AbstractTask", "TaskStatus", "RepeatingTask", "Worker", "delay", "schedule_task",
                  "get_task_model", "DuplicateSubmitError", "ProgressField"],
    "cq.canvas": ["group", "chord", "stages", "signature"],
    "cq.backends": ["CQBackend", "running_task"],
    "cq.routing": ["websocket_urlpatterns"],
    "cq.urls": ["urlpatterns", "app_name"],
    "cq.testing": ["run_ready_tasks"],
    "cq.layers": ["RedisChannelLayer"],
    "cq.tasks": ["retry_tasks"],
    "cq.exceptions": ["CQError", "InvalidTask", "TaskNotRegistered", "DuplicateSubmitError", "ConfigurationError",
                      "SoftTimeLimitExceeded", "TimeLimitExceeded", "TaskLost", "TaskRevoked", "SubtaskFailed"],
    "cq.signals": ["task_log", "task_finished"],
    "cq.conf": ["settings"],
}


def test_the_public_import_paths_keep_their_names():
    missing = [f"{module}.{name}" for module, names in PUBLIC.items() for name in names
               if not hasattr(importlib.import_module(module), name)]
    assert not missing, f"Public names gone: {', '.join(missing)}"
