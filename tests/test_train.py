"""The train step and driver: sharded == single device, accumulation, resume, errors."""

import functools
import json
import os
import signal

import jax
import numpy as np
import optax
import pytest

from rlft.config import REPO_CONFIGS, OptimConfig, load_config, parse_config
from rlft.data.synthetic import SyntheticConfig, make_datasets
from rlft.errors import CheckpointError, ConfigError, NonFiniteLossError
from rlft.models import model_config
from rlft.models.params_io import checkpoint_dir, load_params
from rlft.objectives import OBJECTIVES
from rlft.objectives.base import Models
from rlft.parallel import make_mesh, shard_batch
from rlft.train import checkpoint, loop
from rlft.train.metrics import read_metrics
from rlft.train.state import init_state, make_optimizer
from rlft.train.step import StepSpec, train_step

SFT, DPO = (os.path.join(REPO_CONFIGS, f"{n}.py") for n in ("sft", "dpo"))
# Prime-ish sizes so axis mix-ups fail: vocab 67, width 40 over 5 heads.
MODEL = model_config("tiny", vocab_size=67, d_model=40, num_heads=5, d_ff=72, rotary_pct=0.5)
DATA = SyntheticConfig(vocab_size=67, num_examples=64, max_items=5)


def _batch(objective: str, rows: int = 16) -> dict:
    data = make_datasets(DATA)
    if objective == "sft":
        return {k: v[:rows] for k, v in data["sft"].items()}
    batch = {k: v[:rows] for k, v in data["pairs"].items()}
    rng = np.random.default_rng(0)
    batch["ref_chosen_logp"] = rng.normal(-20, 2, rows).astype(np.float32)
    batch["ref_rejected_logp"] = rng.normal(-20, 2, rows).astype(np.float32)
    return batch


def _run_steps(objective: str, mesh, accum: int = 1, steps: int = 2):
    # Plain SGD: Adam divides by sqrt(v) and turns float noise in an exactly-zero gradient
    # (e.g. the reward model's final LayerNorm bias, which cancels in r_c - r_r) into O(lr)
    # updates, which would hide or fake a sharding difference.
    tx, schedule = optax.sgd(0.5), optax.constant_schedule(0.5)
    _, hp_cls, roles = OBJECTIVES[objective]
    kind = "scalar" if roles == ("reward",) else "lm"
    models = Models(**{roles[0]: MODEL})
    spec = StepSpec(objective, models, hp_cls(), tx, schedule, accum)
    state, _ = init_state({roles[0]: (kind, MODEL)}, tx, seed=3, mesh=mesh)
    step = jax.jit(functools.partial(train_step, spec=spec))
    metrics = []
    for _ in range(steps):
        state, m = step(state, shard_batch(_batch(objective), mesh))
        metrics.append(jax.device_get(m))
    return jax.device_get(state.params), metrics


def _assert_close(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=tol)


@pytest.mark.parametrize("objective,data,fsdp", [("sft", 4, 2), ("reward", 2, 4), ("dpo", 8, 1)])
def test_sharded_step_equals_single_device(objective, data, fsdp):
    single_params, single_metrics = _run_steps(objective, make_mesh(1, 1, jax.devices()[:1]))
    mesh = make_mesh(data, fsdp)
    sharded_params, sharded_metrics = _run_steps(objective, mesh)
    _assert_close(single_params, sharded_params, 1e-5)
    _assert_close(single_metrics, sharded_metrics, 1e-5)


def test_fsdp_actually_shards_params():
    mesh = make_mesh(4, 2)
    tx, _ = make_optimizer(OptimConfig(), 10)
    state, _ = init_state({"policy": ("lm", MODEL)}, tx, seed=0, mesh=mesh)
    kernel = state.params["policy"]["backbone"]["layer_0"]["mlp"]["up"]["kernel"]
    assert kernel.sharding.spec[0] == "fsdp"
    assert kernel.addressable_shards[0].data.shape == (MODEL.d_model // 2, MODEL.d_ff)


def test_gradient_accumulation_equals_one_big_batch():
    mesh = make_mesh(1, 1, jax.devices()[:1])
    params_1, metrics_1 = _run_steps("sft", mesh, accum=1)
    params_4, metrics_4 = _run_steps("sft", mesh, accum=4)
    _assert_close(params_1, params_4, 1e-5)
    for a, b in zip(metrics_1, metrics_4, strict=True):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)


def _tiny_sft(**overrides):
    c = load_config(SFT, "tiny")
    c.total_steps, c.checkpoint_every, c.log_every = 8, 4, 1
    c.data.num_examples = 256
    for k, v in overrides.items():
        section, _, key = k.rpartition(".")
        setattr(c[section] if section else c, key, v)
    return c


class Crash(Exception):
    pass


@pytest.mark.parametrize("how", ["sigterm", "crash"])
def test_resume_equals_uninterrupted(tmp_path, monkeypatch, how):
    """SIGTERM mid-run saves and stops; a crash loses the steps since the last checkpoint (4),
    whose metrics lines must be dropped and redone. Either way the resumed run matches."""
    loop.train(_tiny_sft(), str(tmp_path / "full"), progress=False)
    real_build = loop.build_stage

    def build_and_interrupt(run, mesh, workdir, data):
        stage = real_build(run, mesh, workdir, data)
        inner = stage.run_step

        def run_step(step_fn, state, step):
            if how == "crash" and step == 6:  # steps 5 and 6 were logged, not checkpointed
                raise Crash
            out = inner(step_fn, state, step)
            if how == "sigterm" and step == 4:  # preempted during the 5th step
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        stage.run_step = run_step
        return stage

    monkeypatch.setattr(loop, "build_stage", build_and_interrupt)
    if how == "sigterm":
        first = loop.train(_tiny_sft(), str(tmp_path / "resumed"), progress=False)
        assert first["stopped_by"] == "SIGTERM" and first["step"] == 5
    else:
        with pytest.raises(Crash):
            loop.train(_tiny_sft(), str(tmp_path / "resumed"), progress=False)
        assert [r["step"] for r in read_metrics(tmp_path / "resumed")] == list(range(1, 7))
    monkeypatch.setattr(loop, "build_stage", real_build)
    loop.train(_tiny_sft(), str(tmp_path / "resumed"), progress=False)

    full, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(full, resumed, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), (a, b)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    loop.train(_tiny_sft(total_steps=4, checkpoint_every=2), workdir, progress=False)
    bad = _tiny_sft(
        **{"total_steps": 8, "checkpoint_every": 1, "optim.learning_rate": float("nan")}
    )
    with pytest.raises(NonFiniteLossError, match="Last good checkpoint: step 4"):
        loop.train(bad, workdir, progress=False)
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert steps[-1] == 4


def test_unknown_config_keys_name_the_field():
    c = load_config(DPO, "tiny")
    c.dpo.betta = 0.1
    with pytest.raises(ConfigError, match=r"config\.dpo\.betta"):
        parse_config(c)
    c = load_config(SFT, "tiny")
    c.ppo = {"clip_eps": 0.2}  # a section this objective does not read
    with pytest.raises(ConfigError, match="ppo"):
        parse_config(c)
    c = load_config(SFT, "tiny")
    c.model.vocab_size = 32  # smaller than the data's vocabulary
    with pytest.raises(ConfigError, match="data.vocab_size=64 exceeds"):
        parse_config(c)


def test_missing_and_mismatched_checkpoints(tmp_path):
    c = load_config(DPO, "tiny")
    c.init.policy = str(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no checkpoint under .*nowhere"):
        loop.train(c, str(tmp_path / "dpo"), progress=False)
    loop.train(_tiny_sft(total_steps=2), str(tmp_path / "sft"), progress=False)
    c = load_config(DPO, "tiny")
    c.init.policy = str(tmp_path / "sft")
    c.model.vocab_size = 96
    with pytest.raises(CheckpointError, match="model.vocab_size: checkpoint 64 vs config 96"):
        loop.train(c, str(tmp_path / "dpo2"), progress=False)


def test_metrics_jsonl_and_tensorboard_written(tmp_path):
    loop.train(_tiny_sft(total_steps=3), str(tmp_path), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"loss", "grad_norm", "param_norm", "learning_rate"} <= set(rows[0])
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))


def test_object_store_workdirs_keep_their_url():
    assert checkpoint_dir("gs://bucket/run/") == "gs://bucket/run/checkpoints"
    assert checkpoint_dir("runs/x").endswith(os.path.join("runs", "x", "checkpoints"))


def test_one_role_loads_from_a_two_role_checkpoint(tmp_path):
    """A PPO-style workdir (policy + critic): each role comes back exactly, read on its own."""
    mesh = make_mesh(1, 1, jax.devices()[:1])
    critic_cfg = model_config("tiny", vocab_size=67, d_model=24, num_heads=3, d_ff=40)
    roles = {"policy": ("lm", MODEL), "critic": ("scalar", critic_cfg)}
    tx, _ = make_optimizer(OptimConfig(), 10)
    state, _ = init_state(roles, tx, seed=5, mesh=mesh)
    manager = checkpoint.make_manager(str(tmp_path))
    meta = {"models": {r: {"kind": k, "config": c.to_dict()} for r, (k, c) in roles.items()}}
    checkpoint.save(manager, 1, state, meta)
    manager.wait_until_finished()
    for role, (kind, cfg) in roles.items():
        loaded = load_params(str(tmp_path), role, kind, cfg, mesh)
        _assert_close(jax.device_get(state.params[role]), jax.device_get(loaded), 0.0)
    with pytest.raises(CheckpointError, match="critic"):  # the critic's config is checked
        load_params(str(tmp_path), "critic", "scalar", MODEL, mesh)
