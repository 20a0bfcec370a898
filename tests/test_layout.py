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



def test_every_import_of_a_clipvis_name_resolves():
    """Imports inside functions run only when their branch does: a name moved to another module must not leave
    one of them behind (the bench of streaming inference once imported a function from its old home)."""
    import importlib

    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("clipvis"):
                module = importlib.import_module(node.module)
                missing += [f"{path.relative_to(PACKAGE.parent)}: from {node.module} import {alias.name}"
                            for alias in node.names if not hasattr(module, alias.name)
                            and importlib.util.find_spec(f"{node.module}.{alias.name}") is None]
    assert not missing, "imports of names that do not exist:\n" + "\n".join(missing)

# ------------------------------------------------------------------------------------ the runs/ layout

import re  # noqa: E402

from clipvis import layout  # noqa: E402

REPO = PACKAGE.parent
LAYOUT_FOLDERS = {layout.CLIP, layout.TRAIN, layout.RELEASED, layout.INFER, layout.SCORE, layout.EVAL_IMAGES,
                  layout.BENCH, layout.MATCHING_TEST, layout.QUALITATIVE}
LAYOUT_FILES = {layout.CHECKPOINT_FINAL, layout.CHECKPOINT_LAST, layout.RELEASED_CHECKPOINT, layout.CONFIG_FILE,
                layout.RESULTS_FILE, layout.VARIANTS_FILE, layout.MATCHING_FILE, layout.SUBMISSION_FILE,
                layout.METRICS_FILE, layout.SCORES_FILE, layout.COMPLEXITY_FILE, layout.TOY_DIAGNOSTICS_FILE,
                layout.MATCHING_TEST_FILE, layout.TOY_CLIP, layout.OVERLAY_FILE}


def spelled_paths(path: Path) -> list[str]:
    """Path joins with a name of the layout (`x / "infer"`, `x / "model_final.pt"`) and "runs/..." strings in
    a module's code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found += [side.value for side in (node.left, node.right)
                      if isinstance(side, ast.Constant) and side.value in LAYOUT_FOLDERS | LAYOUT_FILES]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"runs/\S*", node.value):
            found.append(node.value)
    return [f"{path.relative_to(REPO)}: {text}" for text in found]


def test_the_runs_layout_is_spelled_in_layout_py_only():
    """Reports, bench and stages join runs/ paths with clipvis.layout; the Snakemake rules with its patterns."""
    spelled = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "layout.py"
               for hit in spelled_paths(path)]
    folders = "|".join(sorted(LAYOUT_FOLDERS))
    files = "|".join(sorted(re.escape(name) for name in LAYOUT_FILES - {layout.CONFIG_FILE}))
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        for line in path.read_text().splitlines():
            code = line.split("#")[0].replace('"reports/released"', "")  # the reports, not runs/
            if re.search(rf"/({folders})(/|[\"'])|[\"']({folders})/|[\"'/}}]({files})[\"']|[\"']runs(/|[\"'])", code):
                spelled.append(f"{path.relative_to(REPO)}: {line.strip()}")
    assert not spelled, "runs/ paths spelled outside clipvis/layout.py:\n" + "\n".join(spelled)


def test_find_globs_a_pattern_built_from_the_layout(tmp_path):
    for model, dataset in [("a", "x"), ("b", "y")]:
        path = layout.eval_images_dir(tmp_path, "toy", model, dataset) / layout.METRICS_FILE
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    found = layout.find(layout.eval_images_dir(tmp_path, "toy", "*", "*") / layout.METRICS_FILE)
    assert found == [tmp_path / "toy/a/eval_images/x/metrics.json", tmp_path / "toy/b/eval_images/y/metrics.json"]
