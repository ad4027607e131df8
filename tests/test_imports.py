"""rlft's import graph: no cycles, every import goes down the layers, the report needs no JAX.

The graph is read from the source with `ast`, so it sees every import statement: module-level
ones and those inside functions alike (a function-level import is still a dependency, only a
later one), and `if TYPE_CHECKING:` ones too for cycles and layers (a type-only import that
closes a loop still ties two modules to each other). What importing a module loads at run time
(the report check) follows only the imports that run then: module level, not TYPE_CHECKING.
"""

import ast
import os
import pathlib
import subprocess
import sys
from typing import NamedTuple

import pytest

from tests.helpers import REPO

PACKAGE = pathlib.Path(REPO) / "rlft"
EXPERIMENTS = "rlft.experiments"
REPORT = "rlft.experiments.report"
JAX_STACK = ("jax", "jaxlib", "flax", "optax", "orbax")  # orbax checkpointing imports jax

# STYLE.md's layering, top to bottom: CLI -> experiments -> train -> rollout -> objectives ->
# models/parallel. A module may import its own layer or any layer below, never one above. The
# longest prefix names a module's layer; a module under none fails the test until placed.
LAYERS = {
    "rlft.cli": 8,  # `rlft` console script
    "rlft.cli_policy": 8,  # its `sample` and `eval` commands
    "rlft.__main__": 8,  # `python -m rlft`: the console script
    "rlft.convert": 8,  # `rlft convert`; the params directories it writes are models/params_io
    # `rlft reproduce`: the pipeline (JAX) hands its records to the report (numpy), and both
    # read the arm table (pure Python); the experiments package root imports nothing.
    "rlft.experiments.pipeline": 7.2,
    "rlft.experiments.report": 7.1,
    "rlft.experiments": 7,
    "rlft.train": 6,  # state, step, stages, driver, checkpoints of train states
    # config: the typed run config. It gathers each layer's own dataclass (data sources, model,
    # objective hparams, rollout's RolloutConfig), so it sits above them; train and experiments
    # parse with it, so below them.
    "rlft.config": 5,
    # defaults: the stage config documents' shared fields; what config parses, at its level.
    "rlft.defaults": 5,
    # tasks: prompts, demonstrators and gold verifiers for experiments. Numpy, except TL;DR's
    # gold-RM judge, which scores through rollout: above rollout; nothing below experiments
    # needs a task.
    "rlft.tasks": 5,
    "rlft.rollout": 4,  # sampling, forward-only scoring, the PPO rollout, advantages
    "rlft.objectives": 3,  # losses, the one logprobs helper, batch keys
    # data: arrays, datasets, sources, judges. Reads the checkpoint's tokenizer through
    # models.hf_files, so above models; train, config and tasks read it, and no objective or
    # rollout does, so below them.
    "rlft.data": 2,
    "rlft.models": 1,  # networks, presets, HF conversion, params on disk
    "rlft.parallel": 1,  # mesh and sharding; models/params_io places params with it
    "rlft.errors": 0,  # imports nothing from rlft: every layer raises these
    "rlft": 0,  # the package root holds only __version__
}


class Import(NamedTuple):
    target: str  # dotted name as imported (resolved to an rlft module where it is one)
    at_import: bool  # runs when the module is imported (not inside a function)
    type_checking: bool  # under `if TYPE_CHECKING:`
    line: int


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The rlft module `name` imports (its longest prefix that is one), or `name` if external."""
    probe = name
    while probe not in MODULES and "." in probe:
        probe = probe.rsplit(".", 1)[0]
    return probe if probe in MODULES else name


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> list[Import]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[Import] = []

    def visit(node, at_import: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, False, type_checking)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                for stmt in child.body:
                    visit(ast.Module([stmt], []), at_import, True)
                for stmt in child.orelse:
                    visit(ast.Module([stmt], []), at_import, type_checking)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    out.append(Import(_resolve(alias.name), at_import, type_checking, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the module's package, up level - 1 parents
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parts, *([child.module] if child.module else [])])
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    target = full if full in MODULES else _resolve(base)
                    out.append(Import(target, at_import, type_checking, child.lineno))
            else:
                visit(child, at_import, type_checking)

    visit(ast.parse(path.read_text(), str(path)), True, False)
    return out


IMPORTS = {m: _imports(m) for m in MODULES}


def _graph(modules) -> dict[str, set[str]]:
    """rlft -> rlft edges among `modules`, every import statement counted."""
    keep = set(modules)
    return {m: {i.target for i in IMPORTS[m] if i.target in keep and i.target != m} for m in keep}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def _describe(cycles, graph) -> str:
    lines = []
    for component in cycles:
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
        lines.append("cycle among " + ", ".join(component) + ": " + "; ".join(edges))
    return "\n".join(lines)


def _layer(module: str) -> int | None:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(prefixes, key=len)] if prefixes else None


def test_no_cycles_outside_experiments():
    graph = _graph(m for m in MODULES if not m.startswith(EXPERIMENTS))
    cycles = _cycles(graph)
    assert not cycles, _describe(cycles, graph)


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _layer(m) is None] == []


def test_imports_go_down_the_layers():
    upward = [
        f"{m}:{i.line} imports {i.target} (layer {_layer(m)} -> {_layer(i.target)})"
        for m in MODULES
        for i in IMPORTS[m]
        if i.target in MODULES and _layer(i.target) > _layer(m)
    ]
    assert upward == []


def test_no_cycles_in_the_whole_package():
    graph = _graph(MODULES)
    cycles = _cycles(graph)
    assert not cycles, _describe(cycles, graph)


def _loaded_at_import(start: list[str]) -> dict[str, list[str]]:
    """Every module (rlft or external root) that importing `start` loads, with a chain to it.

    A report module's own imports count wherever they sit; beyond it, only imports that run at
    import time, plus the packages (__init__) Python runs on the way to each rlft module.
    """
    chains: dict[str, list[str]] = {}
    todo = [(m, [m]) for m in start]
    while todo:
        module, chain = todo.pop()
        if module in chains:
            continue
        chains[module] = chain
        if module not in MODULES:
            continue
        for i in IMPORTS[module]:
            if i.type_checking or not (i.at_import or module in start):
                continue
            targets = [i.target]
            if i.target in MODULES:  # `import a.b.c` runs a/__init__ and a/b/__init__ first
                parts = i.target.split(".")
                targets += [".".join(parts[:k]) for k in range(1, len(parts))]
            else:
                targets = [i.target.split(".")[0]]
            todo += [(t, [*chain, t]) for t in targets if t not in chains]
    return chains


def test_the_report_half_imports_no_jax():
    report_dir = PACKAGE / "experiments" / "report"
    if not report_dir.is_dir():
        pytest.skip("rlft/experiments/report/ does not exist yet (issue 8's experiments half)")
    report = sorted(m for m in MODULES if m == REPORT or m.startswith(REPORT + "."))
    chains = _loaded_at_import(report)
    found = {m: c for m, c in chains.items() if m in JAX_STACK}
    assert not found, "\n".join(" -> ".join(c) for c in found.values())
    # And at run time, in a fresh interpreter (third-party imports are not in the AST graph).
    code = (
        "import importlib, sys\n"
        f"for m in {report!r}: importlib.import_module(m)\n"
        f"print(sorted(set(sys.modules) & set({JAX_STACK!r})))\n"
    )
    env = {**os.environ, "PYTHONPATH": REPO}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
