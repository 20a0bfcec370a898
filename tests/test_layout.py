"""The package's layers point down only (README, "Layout"): an import-graph check over every module."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "clipvis"

# Lowest first. A module may import its own package and the layers below; the packages of one layer do not
# import each other (the single modules of the base and of the top may).
FLAT = (0, 6)
LAYERS = [
    {"clipvis.config", "clipvis.errors", "clipvis.files", "clipvis.heap", "clipvis.launch", "clipvis.tracking",
     "clipvis.layout"},
    {"clipvis.data"},
    {"clipvis.model"},
    {"clipvis.video", "clipvis.training", "clipvis.evaluation", "clipvis.toy"},
    {"clipvis.reports", "clipvis.bench"},
    {"clipvis.commands"},
    {"clipvis.cli", "clipvis.__main__"},
]


def unit(module: str) -> str:
    """The package or base module a dotted module name belongs to (clipvis.model.query_decoder -> clipvis.model)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def layer(module: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit(module) in units:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the README's layout section")


def imports(path: Path) -> set[str]:
    """Every clipvis module the file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clipvis"):
            found |= {f"{node.module}.{alias.name}" if node.module.count(".") == 0 else node.module
                      for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("clipvis")}
    return found


def test_imports_point_down_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for imported in imports(path):
            if unit(imported) == unit(module):
                continue
            if layer(imported) > layer(module) or (layer(imported) == layer(module) and layer(module) not in FLAT):
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)
