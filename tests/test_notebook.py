"""The quickstart notebook: stripped nbformat 4, and it calls only public rlft names (CI also
executes it headless)."""

import ast
import json
import os
import pathlib

from tests.helpers import REPO as ROOT

NOTEBOOK = os.path.join(ROOT, "colab", "quickstart.ipynb")


def _notebook():
    with open(NOTEBOOK) as f:
        return json.load(f)


def test_notebook_is_stripped_nbformat4():
    nb = _notebook()
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 4
    assert isinstance(nb["metadata"], dict) and nb["cells"]
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert isinstance(cell["source"], list | str) and isinstance(cell["metadata"], dict)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def _public_names(module: str) -> set[str] | None:
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    if not os.path.exists(path):
        return None
    names = set()
    for node in ast.parse(pathlib.Path(path).read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_notebook_only_calls_public_rlft_functions():
    code = "\n".join("".join(c["source"]) for c in _notebook()["cells"] if c["cell_type"] == "code")
    tree = ast.parse(code)  # plain Python: no shell magics, so it also runs as a script
    assert not any(isinstance(n, ast.FunctionDef | ast.ClassDef) for n in ast.walk(tree))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rlft"):
            imported += [(node.module, a.name) for a in node.names]
        if isinstance(node, ast.Attribute):
            assert not node.attr.startswith("_"), node.attr
    assert ("rlft.experiments.pipeline.run", "run_reproduce") in imported
    assert ("rlft.config", "load_config") in imported
    for module, name in imported:
        assert not name.startswith("_"), name
        names = _public_names(module)
        if names is not None:
            assert name in names, f"{module}.{name} does not exist"
    assert '"configs/reproduce.py", "quick"' in code
