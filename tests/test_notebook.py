"""The Colab notebooks (quickstart, TL;DR with Pythia): stripped nbformat 4, plain Python that
defines nothing and calls only public rlft names, and the config variants they load exist (CI
executes both headless: .ci/run)."""

import ast
import json
import os
import pathlib

import pytest

from rlft.config import load_config, parse_config
from rlft.experiments.arms import ARMS
from rlft.experiments.pipeline.spec import parse_reproduce
from tests.helpers import REPO as ROOT

NOTEBOOK = os.path.join(ROOT, "colab", "quickstart.ipynb")
TLDR_NOTEBOOK = os.path.join(ROOT, "colab", "tldr_pythia.ipynb")
TLDR_CONFIG = os.path.join(ROOT, "configs", "tldr_pythia.py")


def _notebook(path: str = NOTEBOOK):
    with open(path) as f:
        return json.load(f)


@pytest.mark.parametrize("path", [NOTEBOOK, TLDR_NOTEBOOK])
def test_notebook_is_stripped_nbformat4(path):
    nb = _notebook(path)
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


def _code(path: str) -> str:
    return "\n".join(
        "".join(c["source"]) for c in _notebook(path)["cells"] if c["cell_type"] == "code"
    )


def _rlft_imports(code: str) -> list[tuple[str, str]]:
    """The notebook's `from rlft... import name` pairs, after checking it defines nothing, uses
    no private attribute and names only what exists."""
    tree = ast.parse(code)  # plain Python: no shell magics, so it also runs as a script
    assert not any(isinstance(n, ast.FunctionDef | ast.ClassDef) for n in ast.walk(tree))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rlft"):
            imported += [(node.module, a.name) for a in node.names]
        if isinstance(node, ast.Attribute):
            assert not node.attr.startswith("_"), node.attr
    for module, name in imported:
        assert not name.startswith("_"), name
        names = _public_names(module)
        if names is not None:
            assert name in names, f"{module}.{name} does not exist"
    return imported


def test_notebook_only_calls_public_rlft_functions():
    code = _code(NOTEBOOK)
    imported = _rlft_imports(code)
    assert ("rlft.experiments.pipeline.run", "run_reproduce") in imported
    assert ("rlft.config", "load_config") in imported
    assert '"configs/reproduce.py", "quick"' in code


def test_tldr_notebook_calls_the_pipeline_and_eval():
    code = _code(TLDR_NOTEBOOK)
    imported = _rlft_imports(code)
    assert ("rlft.experiments.pipeline.run", "run_reproduce") in imported
    assert ("rlft.config", "load_config") in imported
    assert 'load_config("configs/tldr_pythia.py", f"{SIZE}:reproduce:{ROOT}")' in code
    assert 'os.environ.get("RLFT_NOTEBOOK_SIZE", "410m")' in code
    assert '"eval"' in code and "--judge=reward:" in code
    assert 'config.arms = ("sft", "offline_dpo", "online_dpo")' in code
    assert {"sft", "offline_dpo", "online_dpo"} <= set(ARMS)
    # CI executes it on the smoke variant, as it does the quickstart
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert "RLFT_NOTEBOOK_SIZE=smoke python .ci/run_notebook.py colab/tldr_pythia.ipynb" in ci


@pytest.mark.parametrize("size", ["410m", "smoke"])
def test_tldr_notebook_variants_load(size):
    c = load_config(TLDR_CONFIG, f"{size}:reproduce:runs/tldr_{size}")
    c.arms = ("sft", "offline_dpo", "online_dpo")  # the notebook's changes, which must validate
    c.task_knobs.tldr.update(manual_dir="manual", data_dir="tfds_data", tokenizer="tok")
    assert parse_reproduce(c).arms == ("sft", "offline_dpo", "online_dpo")
    assert "response_len" in c.task_knobs.tldr  # the notebook's --max_new_tokens
    if size == "410m":  # one v5e chip: fsdp over its one device, bf16, remat, 4 seqs a micro-batch
        assert (c.parallel.data, c.parallel.fsdp, c.parallel.accum_steps) == (1, -1, 64)
        assert (c.model.preset, c.model.dtype, c.model.remat) == ("pythia-410m", "bfloat16", True)
        assert c.sft_init == "checkpoints/pythia-410m-deduped"
        for stage, pairs in (("sft", 1), ("reward", 2), ("dpo", 2)):
            run = parse_config(load_config(TLDR_CONFIG, f"410m:{stage}"))
            assert run.batch_size * pairs // run.optim.accum_steps == 4, stage
