"""Helpers the tests share (not part of rlft: they point into this repository's checkout)."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_CONFIGS = os.path.join(REPO, "configs")  # the runnable config documents


def run_benchmark(script: str, *args: str) -> str:
    """stdout of `python benchmarks/<script> <args>` from the repository root; raises if it
    exits non-zero or runs past 300 s."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, os.path.join("benchmarks", script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout


def spy_constrain_batch(monkeypatch) -> list[dict]:
    """Record the mesh shape ({} without a mesh) that each call of
    `rlft.parallel.constrain_batch` from the model is traced under; returns the record."""
    import jax

    from rlft.parallel import constrain_batch

    seen: list[dict] = []

    def spy(x, axis=0):
        seen.append(dict(jax.sharding.get_abstract_mesh().shape))
        return constrain_batch(x, axis)

    monkeypatch.setattr("rlft.models.transformer.constrain_batch", spy)
    return seen
