"""The layout docs/ARCHITECTURE.md describes: imports point down the layers, no module imports itself back through
others, and no file grows past 400 lines."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_imports() -> dict[str, set[str]]:
    """{module: the cloudseg modules it imports at its top level}."""
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        imports = set()
        for node in ast.parse(path.read_text()).body:  # top level: lazy imports inside functions break no cycle
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cloudseg"):
                imports.add(node.module)
            elif isinstance(node, ast.Import):
                imports |= {alias.name for alias in node.names if alias.name.startswith("cloudseg")}
        found[name] = imports
    return found


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else ""


@pytest.mark.parametrize(
    ("layer", "never"),
    [("data", {"models", "training", "inference", "cli"}), ("models", {"training", "inference", "cli"}),
     ("training", {"inference", "cli"}), ("inference", {"training", "cli"})],
)  # fmt: skip
def test_imports_point_down_the_layers(layer, never):
    wrong = [
        f"{module} imports {imported}"
        for module, imports in module_imports().items()
        if package(module) == layer
        for imported in imports
        if package(imported) in never
    ]
    assert not wrong


def test_no_module_imports_itself_back():
    imports = module_imports()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for imported in imports.get(todo.pop(), ()):
                if imported not in seen:
                    seen.add(imported)
                    todo.append(imported)
        return seen

    assert not [module for module in imports if module in reaches(module)]


def test_no_file_is_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long
