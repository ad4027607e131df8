"""benchmarks/head_layout.py end to end at a small vocabulary: both layouts run and agree."""

import re

from tests.helpers import run_benchmark


def test_head_layout_benchmark_runs_and_the_layouts_agree():
    out = run_benchmark("head_layout.py", "--vocab=257", "--rows=3", "--reps=1")
    for name in ("token-major", "vocab-major"):
        assert re.search(rf"^{name} +forward +[\d.]+ ms +forward \+ backward +[\d.]+ ms", out, re.M)
    assert "token-major / vocab-major time: forward" in out
    diff = float(re.search(r"largest entry: (\S+)", out).group(1))
    assert diff < 1e-5, out
