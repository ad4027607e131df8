"""The benchmarks built on benchmarks/alternate.py, end to end at a small vocabulary: both
programs run, their compiled programs differ (the swap took effect at trace time) and they
agree on the step's metrics."""

import re

import pytest

from tests.helpers import run_benchmark

SCRIPTS = {  # script: (its two variants' names, its objective)
    "attention.py": (("jax derivative", "rlft masked_attention"), "reward"),
    "gelu.py": (("jax.nn.gelu (erfc)", "rlft gelu_exact (erf)"), "reward"),
    "shared_prefix.py": (("whole rows", "prompt once per pair"), "reward"),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_runs_and_its_two_programs_agree(script):
    names, objective = SCRIPTS[script]
    args = (f"--objective={objective}", "--vocab=257", "--layers=2", "--rounds=1", "--steps=1")
    out = run_benchmark(script, *args)
    row = r" +median +[\d.]+ ms +best +[\d.]+ ms +temp +\d+ MB"
    for name in names:
        assert re.search(rf"^{re.escape(name)}{row}", out, re.M), out
    assert "median time:" in out
    assert "compiled programs differ (the swap took effect): True" in out, out
    diff = float(re.search(r"largest difference: (\S+)", out).group(1))
    assert diff < 1e-4, out  # the same function
