"""The layers of ARCHITECTURE.md point down only: every import, function-local and type-checking ones
included, goes to the module's own layer or an earlier one, and no set of modules imports itself
round in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src"

# In order: a module may import its own layer and the layers before it (ARCHITECTURE.md).
LAYERS = [
    ("foundation", ("errors", "config", "vocab", "precision", "devices", "io", "progress")),
    ("nn", ("nn",)),
    ("kernels", ("kernels",)),
    ("models", ("models", "checkpoint")),
    ("objectives", ("objectives",)),
    ("data", ("data",)),
    ("convert", ("convert",)),
    ("generate", ("generate",)),
    ("train", ("train",)),
    ("tasks", ("tasks",)),
    ("apps", ("demo", "compare", "serve", "explain", "pictures")),
    ("commands", ("commands", "cli", "__main__")),
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in (SOURCE / "triform").rglob("*.py"):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def layer_of(module: str) -> int | None:
    """The index of the module's layer; None for the package root, which re-exports everything."""
    if module == "triform":
        return None
    top = module.split(".")[1]
    for index, (_, tops) in enumerate(LAYERS):
        if top in tops:
            return index
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS and to ARCHITECTURE.md")


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The triform modules `module` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:  # `from triform.x import y` may name the module triform.x.y
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = module_names()
    return {module: imports(module, path, known) - {module} for module, path in known.items()}


def test_every_import_points_to_the_same_or_an_earlier_layer():
    upward = []
    for module, targets in sorted(graph().items()):
        source = layer_of(module)
        for target in sorted(targets):
            goal = layer_of(target)
            if source is not None and (goal is None or goal > source):
                where = LAYERS[goal][0] if goal is not None else "the package root"
                upward.append(f"{module} ({LAYERS[source][0]}) imports {target} ({where})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan 1972)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_modules_import_each_other_in_a_cycle():
    edges = {module: targets - {"triform"} for module, targets in graph().items() if module != "triform"}
    assert not cycles(edges), "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles(edges))


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    known = {"triform.a": tmp_path / "a.py", "triform.b": tmp_path / "b.py", "triform.pkg.c": tmp_path / "c.py"}
    (tmp_path / "a.py").write_text("def f():\n    from triform.b import thing\n    from .pkg import c\n")
    assert imports("triform.a", known["triform.a"], known) == {"triform.b", "triform.pkg.c"}
    assert cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z"]]


def test_no_code_outside_objectives_compares_an_objective_name():
    """What depends on an objective is asked of the objective: nothing else branches on its name."""
    from triform.objectives import OBJECTIVE_CLASSES

    names = set(OBJECTIVE_CLASSES)

    def named(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(named(e) for e in node.elts)

    found = []
    for module, path in module_names().items():
        if module.startswith("triform.objectives"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(named(side) for side in [node.left, *node.comparators]):
                found.append(f"{path.relative_to(SOURCE)}:{node.lineno}")
    assert not found, "comparisons with an objective's name: " + ", ".join(found)
