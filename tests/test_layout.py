"""The package's layout, checked by walking its imports: the library never imports a
command, nothing imports the package root, there are no import circles, and every module is
small enough to read at once (or says in its docstring why it is longer)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "segdino"
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports at run time (top level or in a function;
    `if TYPE_CHECKING:` blocks left out: they never run)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, set(known)) - {name} for name, path in known.items()}


def test_nothing_imports_the_package_root() -> None:
    importers = sorted(name for name, deps in graph().items() if "segdino" in deps)
    assert importers == [], importers


def test_the_library_never_imports_a_command() -> None:
    edges = graph()
    entry_points = ("segdino.commands", "segdino.__main__")  # `python -m segdino` is a command
    wrong = sorted(f"{name} -> {dep}" for name, deps in edges.items()
                   if not name.startswith(entry_points)
                   for dep in deps if dep.startswith("segdino.commands"))
    assert wrong == [], wrong


def test_no_import_circles() -> None:
    edges = graph()
    # A package's __init__ re-exporting its own modules is not a circle of concepts.
    edges = {name: {d for d in deps if not name.startswith(d + ".")}
             for name, deps in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(edges[name]):
            if state.get(dep) == 1:
                circles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                walk(dep)
        stack.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            walk(name)
    assert circles == [], circles


def test_modules_are_small_or_say_why() -> None:
    long = []
    for name, path in modules().items():
        text = path.read_text()
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if text.count("\n") > MAX_LINES and "longer than" not in docstring:
            long.append(f"{name}: {text.count(chr(10))} lines")
    assert long == [], long
