"""The layout says who runs the code: lib (the product) imports nothing from tools/ or bench/, no module imports
itself back through others, and the README's module map names every module."""

import ast
import re

import pytest

from lib.paths import PROJECT_ROOT

PACKAGES = ("lib", "tools", "bench")


def modules() -> dict[str, ast.Module]:
    """Every module of the three packages by dotted name, parsed."""
    found = {}
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def imported(tree: ast.Module, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def test_lib_imports_nothing_from_the_toolbox():
    for name, tree in modules().items():
        if name.split(".")[0] == "lib":
            assert {n.split(".")[0] for n in imported(tree, top_level_only=False)} <= {"lib"}, name


def test_no_module_imports_itself_back_at_import_time():
    """A cycle of top-level imports (function-level ones run later, once every module is loaded)."""
    known = modules()
    graph = {
        name: {n for n in imported(tree, top_level_only=True) if n in known and n != name}
        for name, tree in known.items()
    }
    visiting, done = set(), set()

    def visit(name, path):
        assert name not in visiting, f"import cycle: {' -> '.join([*path, name])}"
        if name in done:
            return
        visiting.add(name)
        for child in sorted(graph[name]):
            visit(child, [*path, name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])


@pytest.mark.parametrize("name", sorted(modules()))
def test_the_readme_module_map_names_every_module(name):
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([\w.]+)` \|", readme, flags=re.MULTILINE))
    if name.endswith("__main__"):
        name = name.rsplit(".", 1)[0]  # `python -m tools.runner` is the package's row
    assert name in rows


def test_the_readme_module_map_names_no_module_that_is_gone():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `((?:lib|tools|bench)[\w.]*)` \|", readme, flags=re.MULTILINE))
    existing = {name.removesuffix(".__main__") for name in modules()}
    assert rows - existing == set()
