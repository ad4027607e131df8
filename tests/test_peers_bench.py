"""benchmarks/peers.py --smoke end to end: its JSON has every figure, ratio and bound fraction.

Runs the script as a subprocess (its real entry point) on one CPU device: the suite's 8 fake
devices and thread settings (tests/conftest.py) are taken out of its environment.
"""

import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ("sft", "reward", "dpo", "dpo_precomputed")
RATIOS = {
    "sampling_rlft_over_transformers_tokens_per_s",
    *(f"{n}_trl_over_rlft_seconds" for n in STEPS),
    "dpo_trl_over_rlft_precomputed_seconds",
}
TOL = 1e-4  # composite: a whole forward, float32


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def check_timing(t: dict) -> None:
    assert positive(t["best"]) and positive(t["median"]) and t["best"] <= t["median"]


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> dict:
    pytest.importorskip("trl", reason="the peer benchmark compares against TRL (the bench extra)")
    out = tmp_path_factory.mktemp("peers") / "peers.json"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NPROC")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "benchmarks/peers.py", "--smoke", f"--json={out}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert json.loads(proc.stdout[proc.stdout.rindex("\n{\n") :]) == r  # printed as written
    return r


def test_both_sides_run_the_same_weights(record):
    assert record["same_weights"]["lm_logits_max_abs_diff"] < TOL
    assert record["same_weights"]["reward_max_abs_diff"] < TOL


def test_bound_and_flops(record):
    for shape in ("decode", "train"):
        bound = record["matmul_bound"][shape]
        assert set(bound["gflops"]) == {"numpy", "jax", "torch"}
        assert all(positive(g) for g in bound["gflops"].values())
        assert bound["best_gflops"] == max(bound["gflops"].values())
    assert positive(record["flops"]["sampling_call"])
    assert set(record["flops"]["train_step"]) == set(STEPS)
    assert all(positive(f) for f in record["flops"]["train_step"].values())


def test_every_figure_and_ratio(record):
    for side in ("rlft", "transformers"):
        v = record["sampling"][side]
        check_timing(v["seconds"])
        assert positive(v["new_tokens_per_s"]) and positive(v["fraction_of_bound"])
    assert set(record["train_steps"]) == set(STEPS)
    for sides in record["train_steps"].values():
        assert set(sides) == {"rlft", "trl"}
        for v in sides.values():
            check_timing(v["seconds"])
            assert positive(v["fraction_of_bound"])
    assert set(record["ratios"]) == RATIOS
    assert all(positive(x) for x in record["ratios"].values())
    s = record["shapes"]
    assert record["tokens_per_train_step"] == 2 * s["pairs"] * (s["prompt"] + s["response"])


def test_the_record_names_its_code_and_time(record):
    """A record can be matched to the library it measured: source hash, commit, UTC start."""
    from rlft.train.workdir import code_version

    run = record["run"]
    assert run["rlft_code"] == code_version()
    assert run["utc_start"].endswith("Z") and run["wall_s"] > 0
    assert run["rlft_git_commit"] is None or len(run["rlft_git_commit"]) >= 7
