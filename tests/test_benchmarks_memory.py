"""benchmarks/memory.py and benchmarks/accelerator.py end to end on the tiny model (CPU)."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", ROOT / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # four compiles: 31 s on 2 idle CPU cores, cold cache (7 s warm)
def test_memory_tiny_json(tmp_path):
    out = tmp_path / "memory.json"
    argv = ["--models=tiny", "--objectives=dpo,ppo", "--prompt-len=16", "--response-len=8"]
    result = _load("memory").main([*argv, f"--json={out}"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["shapes"]["seq_len"] == 24 and result["formula"].startswith("peak =")
    cells = {(r["objective"], r["fsdp"]): r for r in result["rows"]}
    assert set(cells) == {("dpo", 1), ("dpo", 8), ("ppo", 1), ("ppo", 8)}
    for (objective, fsdp), r in cells.items():
        for key in ("argument_bytes", "output_bytes", "temp_bytes", "peak_bytes", "analytic_bytes"):
            assert r[key] > 0, (objective, fsdp, key)
        assert r["peak_bytes"] == (
            r["argument_bytes"] + r["output_bytes"] - r["alias_bytes"] + r["temp_bytes"]
        )
        assert 0 < r["alias_bytes"] <= r["output_bytes"]  # the donated state is reused
        assert r["total_bytes"] == r["peak_bytes"] + r["frozen_bytes"]
        assert (r["frozen_bytes"] > 0) == (objective == "ppo")
        assert r["global_rows"] == r["rows_per_device"] * fsdp
    for objective in ("dpo", "ppo"):
        one, eight = cells[(objective, 1)], cells[(objective, 8)]
        # Same rows per device; the state is split 8 ways, so fsdp-8 holds less per device.
        # (Not the compiled peak: on CPU the fsdp lowering keeps full-size gradients and
        # gathered params in temp, which outweighs the tiny model's state.)
        assert 4 * eight["argument_bytes"] < one["argument_bytes"]
        assert eight["analytic_bytes"] < one["analytic_bytes"]
        assert 4 * eight["analytic_state_bytes"] < one["analytic_state_bytes"]
        assert eight["analytic_activation_bytes"] == one["analytic_activation_bytes"]
    assert cells[("dpo", 1)]["rows_per_device"] == 2 and cells[("ppo", 1)]["rows_per_device"] == 4


def test_token_params_by_hand():
    """Tiny (V 64, L 2, d 64, F 256): per layer 2 layer norms (4d), q/k/v/out with biases
    (4d^2 + 4d), MLP up/down with biases (2dF + F + d); final norm 2d; untied head dV."""
    from rlft.models import model_config

    v, layers, d, f = 64, 2, 64, 256
    per_layer = 4 * d + 4 * d * d + 4 * d + 2 * d * f + f + d
    expected = layers * per_layer + 2 * d + d * v
    acc = _load("accelerator")
    cfg = model_config("tiny")
    assert acc.token_params(cfg) == expected
    tokens, t = 96, 24
    attention = 12 * layers * d * t * tokens
    assert acc.model_flops(cfg, tokens, t) == 6 * expected * tokens + attention
    # the head (d V) counted at the 24 scored tokens only
    body = expected - d * v
    assert acc.model_flops(cfg, tokens, t, 24) == 6 * body * tokens + 6 * d * v * 24 + attention


@pytest.mark.parametrize(
    "kind, name",
    [("NVIDIA H100 80GB HBM3", "h100"), ("TPU v5 lite", "tpu-v5e"), ("TPU v4", "tpu-v4")],
)
def test_device_lookup(kind, name):
    peaks = _load("accelerator").device_peaks(kind, smoke=True)
    assert peaks["name"] == name and peaks["source"] == "data sheet"


@pytest.mark.slow  # ten compiles: about 30 s on 2 idle CPU cores, cold cache
def test_accelerator_smoke_json(tmp_path):
    out = tmp_path / "acc.json"
    result = _load("accelerator").main(["--smoke", f"--out={out}"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert not result["errors"] and not result["skipped"]
    assert result["peaks"]["peak_flops"] > 0 and result["peaks"]["hbm_bytes_per_s"] > 0
    assert set(result["train"]["tiny"]) == {"sft", "dpo", "sft_no_remat"}
    for what, per_row, scored in (("sft", 1, 24), ("dpo", 2, 6), ("sft_no_remat", 1, 24)):
        cell = result["train"]["tiny"][what]
        assert cell["remat"] == (what != "sft_no_remat")
        assert cell["tokens"] == cell["rows"] * cell["seq_len"] * per_row
        assert cell["scored_tokens"] == cell["rows"] * per_row * scored
        assert cell["step_s"] > 0 and 0 < cell["mfu"] < 1
        assert cell["mfu"] == pytest.approx(
            cell["model_flops"] / cell["step_s"] / result["peaks"]["peak_flops"]
        )
        assert cell["mfu_of_measured"] == pytest.approx(
            cell["model_flops"] / cell["step_s"] / result["peaks"]["measured_flops"]
        )
        assert cell["xla_flops"] >= cell["model_flops"]  # XLA counts recompute and skipped chunks
    dec = result["decode"]["tiny"]
    assert dec["tokens_per_s"] > 0 and dec["bound_tokens_per_s"] > 0
    assert dec["fraction_of_bound"] == pytest.approx(
        dec["tokens_per_s"] / dec["bound_tokens_per_s"]
    )
    assert dec["bound_tokens_per_s_bf16_params"] > dec["bound_tokens_per_s"]
    assert dec["kernel_bf16_bytes"] > 0 and dec["temp_bytes"] > 0
    bf16 = result["decode_bf16_weights"]["tiny"]
    assert bf16["tokens_per_s"] > 0 and bf16["bound_tokens_per_s"] == dec["bound_tokens_per_s"]


def test_bf16_kernels_sample_the_same_tokens():
    """The decode_bf16_weights cell compares like with like: bf16 layers cast their kernels
    to bf16 anyway, so the sampler given bf16 kernels draws the same tokens and log-probs."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rlft.models import init_params, model_config
    from rlft.rollout.sampler import generate

    acc = _load("accelerator")
    cfg = model_config("tiny", dtype="bfloat16")
    params = nn.unbox(init_params("lm", cfg, jax.random.key(0)))
    cast = acc.bf16_kernels(params)
    dtypes = {
        jax.tree_util.keystr(k): x.dtype for k, x in jax.tree_util.tree_leaves_with_path(cast)
    }
    assert dtypes["['backbone']['layer_0']['mlp']['up']['kernel']"] == jnp.bfloat16
    assert dtypes["['backbone']['layer_0']['mlp']['up']['bias']"] == jnp.float32
    assert dtypes["['embed_out']['kernel']"] == jnp.float32  # the float32 head stays
    prompt = jax.random.randint(jax.random.key(1), (3, 6), 0, cfg.vocab_size)
    kw = dict(max_new_tokens=5, temperature=1.0, eos_id=None, pad_id=0)
    mask = jnp.ones((3, 6), bool)
    a = generate(cfg, params, prompt, mask, jax.random.key(2), **kw)
    b = generate(cfg, cast, prompt, mask, jax.random.key(2), **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logp, b.logp)


def _h200_records() -> dict:
    """The H200 runs' cells by (model, what), merged from the three committed records."""
    cells = {}
    for name in ("accelerator-h200", "accelerator-h200-dpo", "accelerator-h200-no-remat"):
        record = json.loads((ROOT / "docs" / "benchmarks" / f"{name}.json").read_text())
        assert record["device_kind"] == "NVIDIA H200" and not record["errors"]
        for model, by_what in record["train"].items():
            cells.update({(model, what): cell for what, cell in by_what.items()})
        cells.update({(model, "decode"): cell for model, cell in record["decode"].items()})
    return cells


def test_readme_h200_figures_come_from_the_records():
    """Every figure of the README's H200 table is its record's, as rounded there."""
    cells = _h200_records()
    readme = (ROOT / "README.md").read_text()
    sft, no_remat = cells[("pythia-1.4b", "sft")], cells[("pythia-1.4b", "sft_no_remat")]
    dpo, dec = cells[("pythia-1.4b", "dpo")], cells[("pythia-1.4b", "decode")]
    rows = [
        f"| {sft['step_s']:.3f} s, {sft['tokens_per_s']:,.0f} tokens/s | {sft['mfu']:.1%} MFU",
        f"| {no_remat['step_s']:.3f} s, {no_remat['tokens_per_s']:,.0f} tokens/s "
        f"| {no_remat['mfu']:.1%} MFU |",
        f"| {dpo['step_s']:.3f} s | {dpo['mfu']:.1%} MFU |",
        f"| {dec['tokens_per_s']:,.0f} tokens/s | {dec['fraction_of_bound']:.1%} of the",
    ]
    small = {w: cells[("pythia-410m", w)] for w in ("sft", "dpo", "decode")}
    rows.append(
        f"Pythia-410m: {small['sft']['mfu']:.1%} MFU (SFT), {small['dpo']['mfu']:.1%} (DPO), "
        f"decode {small['decode']['fraction_of_bound']:.1%} of its bound"
    )
    for row in rows:
        assert row in readme, row


def test_h200_page_figures_come_from_the_records():
    """docs/benchmarks/accelerator-h200.md's two tables, row by row, from the records."""
    cells = _h200_records()
    page = (ROOT / "docs" / "benchmarks" / "accelerator-h200.md").read_text()
    names = {"pythia-410m": "Pythia-410m", "pythia-1.4b": "Pythia-1.4b"}
    steps = {"sft": "SFT, remat", "sft_no_remat": "SFT, no remat", "dpo": "DPO, remat"}
    train = [(m, w) for (m, w) in cells if w != "decode"]
    assert len(train) == 5
    for model, what in train:
        c = cells[(model, what)]
        row = (
            f"| {names[model]} | {steps[what]} | {c['step_s']:.3f} | {c['tokens_per_s']:,.0f} "
            f"| {c['mfu']:.1%} | {c['mfu_of_measured']:.1%} |"
        )
        assert row in page, row
    for model in names:
        c = cells[(model, "decode")]
        row = (
            f"| {names[model]} | {c['decode_step_s'] * 1e3:.2f} | {c['tokens_per_s']:,.0f} "
            f"| {c['bound_tokens_per_s']:,.0f} | {c['fraction_of_bound']:.1%} "
            f"| {c['bound_tokens_per_s_bf16_params']:,.0f} |"
        )
        assert row in page, row


def test_readme_cpu_performance_table_comes_from_its_record():
    """The README's Performance table and its reward-bound sentences, from peers-cpu.json."""
    record = json.loads((ROOT / "docs" / "benchmarks" / "peers-cpu.json").read_text())
    readme = (ROOT / "README.md").read_text()
    steps, ratios = record["train_steps"], record["ratios"]
    sampling = record["sampling"]
    rows = [
        f"| {sampling['rlft']['new_tokens_per_s']:,.0f} "
        f"| {sampling['transformers']['new_tokens_per_s']:,.0f} "
        f"| {ratios['sampling_rlft_over_transformers_tokens_per_s']:.1f}x "
        f"| {sampling['rlft']['fraction_of_bound']:.0%} "
        f"| {sampling['transformers']['fraction_of_bound']:.0%} |"
    ]
    for name in ("sft", "reward", "dpo", "dpo_precomputed"):
        rlft, trl = steps[name]["rlft"], steps[name]["trl"]
        ratio = ratios[f"{name}_trl_over_rlft_seconds"]
        rows.append(
            f"| {rlft['seconds']['median'] * 1e3:,.0f} | {trl['seconds']['median'] * 1e3:,.0f} "
            f"| {ratio:.{2 if ratio < 1 else 1}f}x | {rlft['fraction_of_bound']:.0%} "
            f"| {trl['fraction_of_bound']:.0%} |"
        )
    for row in rows:
        assert row in readme, row
    unrounded = f"The DPO ratio is {ratios['dpo_trl_over_rlft_seconds']:.2f} unrounded"
    assert unrounded in readme, unrounded
    flops, rate = record["flops"]["train_step"]["reward"], record["matmul_bound"]["train"]
    trl_ms = steps["reward"]["trl"]["seconds"]["median"] * 1e3
    p, r = record["shapes"]["prompt"], record["shapes"]["response"]
    shared = flops * (p + 2 * r) / (2 * (p + r))  # each pair's prompt once: P + 2R tokens
    shared_ms = shared / rate["best_gflops"] / 1e6  # at the bound
    sentence = (
        f"step's {flops / 1e9:.1f} GFLOP at the run's best matmul rate "
        f"({rate['best_gflops']:.0f} GFLOP/s, numpy) take {flops / rate['best_gflops'] / 1e6:.0f} "
        f"ms, and a third of TRL's {trl_ms:.0f} ms is {trl_ms / 3:.0f} ms; with each pair's prompt "
        f"run once (below) the step computes {shared / 1e9:.1f} GFLOP, "
        f"{shared_ms:.0f} ms at that rate."
    )
    rlft_ms = steps["reward"]["rlft"]["seconds"]["median"] * 1e3
    shares = (
        f"torch runs TRL's at {steps['reward']['trl']['fraction_of_bound']:.0%} of the bound, and "
        f"rlft runs its smaller workload at {shared_ms / rlft_ms:.0%} "
        f"of it ({shared / 1e9:.1f} GFLOP in {rlft_ms:.0f} ms;"
    )
    assert max(rate["gflops"], key=rate["gflops"].get) == "numpy"
    for text in (sentence, shares):
        assert text in " ".join(readme.split()), text  # however the paragraph is wrapped


def tpu_readme_memory_rows() -> list[str]:
    """tpu/README.md's memory table, row by row, from memory-cpu.json (the script's default
    scheduler) and memory-cpu-default-scheduler.json (XLA CPU's own, DPO cells)."""
    gib = 2**30
    records = ROOT / "docs" / "benchmarks"
    rows = json.loads((records / "memory-cpu.json").read_text())["rows"]
    other = json.loads((records / "memory-cpu-default-scheduler.json").read_text())["rows"]
    other_peak = {(r["model"], r["objective"], r["fsdp"]): r["peak_bytes"] for r in other}
    hbm = {"v5e": 16, "v4": 32}
    out = []
    for r in rows:
        one = r["fsdp"] == 1
        peak = r["peak_bytes"] / gib
        compiled = f"{r['argument_bytes'] / gib:.2f} + {r['temp_bytes'] / gib:.2f} = "
        compiled += f"**{peak:.2f}**" if one else f"{peak:.2f} (upper bound)"
        ds = other_peak.get((r["model"], r["objective"], r["fsdp"]))
        frozen = r["frozen_bytes"] / gib
        total = min(peak, ds / gib if ds else peak) + frozen
        analytic = (r["analytic_bytes"] + r["frozen_bytes"]) / gib
        fits = []
        for size in hbm.values():
            if total <= size:
                fits.append("**yes**")
            elif not one and analytic <= size:
                fits.append(f"analytic only ({analytic:.1f})")
            else:
                fits.append("no")
        out.append(
            f"| {r['model']} | {'DPO, 2 pairs' if r['objective'] == 'dpo' else 'PPO, 4 rows'} "
            f"| {'1 chip' if one else 'fsdp 8'} | {compiled} | {f'{ds / gib:.2f}' if ds else ''} "
            f"| {r['analytic_bytes'] / gib:.2f} | {frozen:.2f} "
            f"| {'' if one else '<= '}{total:.2f} | {fits[0]} | {fits[1]} |"
        )
    return out


def test_tpu_readme_memory_table_comes_from_the_records():
    readme = (ROOT / "tpu" / "README.md").read_text()
    for row in tpu_readme_memory_rows():
        assert row in readme, row
