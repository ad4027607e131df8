"""benchmarks/gelu.py end to end at a small vocabulary: both programs run, differ (the swap
took effect at trace time) and agree on the step's metrics."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gelu_benchmark_runs_and_the_two_gelus_agree():
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/gelu.py",
            "--objective=reward",
            "--vocab=257",
            "--layers=2",
            "--rounds=1",
            "--steps=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    temps = {}
    for name in ("jax.nn.gelu (erfc)", "rlft gelu_exact (erf)"):
        m = re.search(
            rf"^{re.escape(name)} +median +[\d.]+ ms +best +[\d.]+ ms +temp +(\d+) MB", out, re.M
        )
        assert m, out
        temps[name] = int(m.group(1))
    assert "median time:" in out
    diff = float(re.search(r"largest difference: (\S+)", out).group(1))
    assert 0 < diff < 1e-4, out  # two programs (not one traced twice), the same function
