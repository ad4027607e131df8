"""benchmarks/attention.py end to end at a small vocabulary: both programs run, their compiled
programs differ (the swap took effect at trace time) and agree on the step's metrics."""

import re

from tests.helpers import run_benchmark


def test_attention_benchmark_runs_and_the_two_attentions_agree():
    args = ("--objective=reward", "--vocab=257", "--layers=2", "--rounds=1", "--steps=1")
    out = run_benchmark("attention.py", *args)
    row = r" +median +[\d.]+ ms +best +[\d.]+ ms +temp +\d+ MB"
    for name in ("jax derivative", "rlft masked_attention"):
        assert re.search(rf"^{re.escape(name)}{row}", out, re.M), out
    assert "median time:" in out
    assert "compiled programs differ (the swap took effect): True" in out, out
    diff = float(re.search(r"largest difference: (\S+)", out).group(1))
    assert diff < 1e-4, out  # the same function
