"""The train step and driver: sharded == single device, accumulation, resume, errors."""

import functools
import json
import os
import signal

import jax
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from rlft.config import OptimConfig, load_config, parse_config
from rlft.data import shared_prefix_len
from rlft.data.bundle import DataBundle
from rlft.data.sources import bundle_from_config
from rlft.data.synthetic import SyntheticConfig, make_datasets
from rlft.errors import BatchError, CheckpointError, ConfigError, NonFiniteLossError
from rlft.models import model_config
from rlft.models.params_io import checkpoint_dir, load_params
from rlft.objectives import BATCH_KEYS, OBJECTIVES, check_batch
from rlft.objectives.base import Models
from rlft.objectives.sft import SftHparams
from rlft.parallel import batch_sharding, constrain_batch, make_mesh, shard_batch
from rlft.train import checkpoint, loop
from rlft.train import state as train_state
from rlft.train.metrics import read_metrics
from rlft.train.state import abstract_state, init_state, make_optimizer
from rlft.train.step import StepSpec, train_step
from tests.helpers import REPO_CONFIGS, spy_constrain_batch

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


def _run_steps(objective: str, mesh, accum: int = 1, steps: int = 2, prefix: bool = False):
    # Plain SGD: Adam divides by sqrt(v) and turns float noise in an exactly-zero gradient
    # (e.g. the reward model's final LayerNorm bias, which cancels in r_c - r_r) into O(lr)
    # updates, which would hide or fake a sharding difference.
    tx, schedule = optax.sgd(0.5), optax.constant_schedule(0.5)
    _, hp_cls, roles = OBJECTIVES[objective]
    kind = "scalar" if roles == ("reward",) else "lm"
    # prefix: the pairs' shared prompt columns run once per pair, as the stages run them
    prefix_len = shared_prefix_len(_batch(objective)) if prefix else 0
    assert prefix_len > 0 or not prefix
    models = Models(**{roles[0]: MODEL}, pair_prefix_len=prefix_len)
    spec = StepSpec(objective, models, hp_cls(), tx, schedule, accum)
    state, _ = init_state({roles[0]: (kind, MODEL)}, tx, seed=3, mesh=mesh)
    step = jax.jit(functools.partial(train_step, spec=spec))
    metrics = []
    for _ in range(steps):
        with jax.set_mesh(mesh):  # as rlft.train.loop runs it: rlft.parallel.constrain_batch
            state, m = step(state, shard_batch(_batch(objective), mesh))
        metrics.append(jax.device_get(m))
    return jax.device_get(state.params), metrics


def _assert_close(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=tol)


@pytest.mark.parametrize(
    "objective,data,fsdp,prefix",
    [("sft", 4, 2, False), ("reward", 2, 4, False), ("dpo", 8, 1, False), ("dpo", 2, 4, True)],
)
def test_sharded_step_equals_single_device(objective, data, fsdp, prefix):
    one = make_mesh(1, 1, jax.devices()[:1])
    single_params, single_metrics = _run_steps(objective, one, prefix=prefix)
    mesh = make_mesh(data, fsdp)
    sharded_params, sharded_metrics = _run_steps(objective, mesh, prefix=prefix)
    _assert_close(single_params, sharded_params, 1e-5)
    # Metrics get an absolute 3e-5: the reward model's reward level is of order 1 and crosses
    # near 0 after the first update (-1.34 -> 0.015), where rtol gives no room, and a float32
    # sum over 4 fsdp shards rounds there up to 1.35e-5 from one device's (measured). A sharding
    # bug is orders of magnitude larger.
    _assert_close(single_metrics, sharded_metrics, 3e-5)


def test_fsdp_actually_shards_params():
    mesh = make_mesh(4, 2)
    tx, _ = make_optimizer(OptimConfig(), 10)
    state, _ = init_state({"policy": ("lm", MODEL)}, tx, seed=0, mesh=mesh)
    kernel = state.params["policy"]["backbone"]["layer_0"]["mlp"]["up"]["kernel"]
    assert kernel.sharding.spec[0] == "fsdp"
    assert kernel.addressable_shards[0].data.shape == (MODEL.d_model // 2, MODEL.d_ff)


def test_constrain_batch_splits_rows_only_under_a_mesh():
    """Under a mesh the rows go over (data, fsdp) and nothing else is split; outside one, on
    rows that do not divide the mesh, or on a one-device mesh, x is returned as it is."""
    x_BxTxD = np.arange(8 * 3 * 4, dtype=np.float32).reshape(8, 3, 4)
    fn = jax.jit(lambda x: constrain_batch(x) * 2, out_shardings=None)
    mesh = make_mesh(2, 4)
    with jax.set_mesh(mesh):
        out = fn(x_BxTxD)
        rows = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None, None))
        assert out.sharding.is_equivalent_to(rows, 3)
        assert out.addressable_shards[0].data.shape == (1, 3, 4)
        axis1 = jax.jit(lambda x: constrain_batch(x, axis=1) * 2)(x_BxTxD.transpose(1, 0, 2))
        cols = NamedSharding(mesh, PartitionSpec(None, ("data", "fsdp"), None))
        assert axis1.sharding.is_equivalent_to(cols, 3)
        odd = jax.make_jaxpr(lambda x: constrain_batch(x))(x_BxTxD[:6])
        assert "sharding_constraint" not in str(odd)  # 6 rows do not divide 8 devices
    np.testing.assert_array_equal(out, 2 * x_BxTxD)
    assert "sharding_constraint" not in str(jax.make_jaxpr(constrain_batch)(x_BxTxD))
    with jax.set_mesh(make_mesh(1, 1, jax.devices()[:1])):
        assert "sharding_constraint" not in str(jax.make_jaxpr(constrain_batch)(x_BxTxD))


def test_fsdp_step_keeps_each_device_to_its_rows():
    """On an 8-way fsdp mesh the DPO step traced under the mesh (as rlft.train.loop traces it)
    needs well under the temporaries of the same step traced without it, where XLA contracted
    over the sharded embed dimension and built every row's activations and logits on every
    device (measured 2.75x at this size)."""
    mesh = make_mesh(1, 8)
    tx, schedule = make_optimizer(OptimConfig(), 10)
    _, hp_cls, _ = OBJECTIVES["dpo"]
    spec = StepSpec("dpo", Models(policy=MODEL), hp_cls(), tx, schedule)
    state, shardings = init_state({"policy": ("lm", MODEL)}, tx, seed=0, mesh=mesh)
    batch = shard_batch(_batch("dpo", rows=32), mesh)
    step = jax.jit(
        functools.partial(train_step, spec=spec),
        in_shardings=(shardings, batch_sharding(mesh)),
        out_shardings=(shardings, NamedSharding(mesh, PartitionSpec())),
    )
    without = step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes
    with jax.set_mesh(mesh):
        within = step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes
    assert within < 0.6 * without, (within, without)


def test_abstract_state_is_init_states_plan():
    """abstract_state (what benchmarks/memory.py lowers) has init_state's tree, shapes and
    dtypes; its shardings (which init_state also places by) split each param's `embed`
    dimension over fsdp, as LOGICAL_RULES say, and replicate the step and the key."""
    mesh = make_mesh(1, 8)
    tx, _ = make_optimizer(OptimConfig(), 10)
    roles = {"policy": ("lm", MODEL), "critic": ("scalar", MODEL)}
    state, shardings = init_state(roles, tx, seed=0, mesh=mesh)
    abstract, _ = abstract_state(roles, tx, mesh)
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(state), strict=True):
        assert (a.shape, a.dtype, a.sharding) == (s.shape, s.dtype, s.sharding)
    P = PartitionSpec
    want = {  # param path -> spec, from each kernel's logical axes in rlft/models/transformer.py
        ("policy", "backbone", "embed_in", "embedding"): P(None, "fsdp"),  # (vocab, embed)
        ("policy", "embed_out", "kernel"): P("fsdp", None),  # (embed, vocab)
        ("policy", "backbone", "layer_0", "mlp", "down", "kernel"): P(None, "fsdp"),
        ("policy", "backbone", "layer_1", "attn", "out", "kernel"): P(None, None, "fsdp"),
        ("critic", "backbone", "layer_0", "attn", "query", "kernel"): P("fsdp", None, None),
        ("critic", "backbone", "layer_0", "mlp", "up", "bias"): P(None),  # (mlp,)
    }
    mu = state.opt_state[1][0].mu  # AdamW's first moment mirrors the params
    for path, spec in want.items():
        param, moment = state.params, mu
        for k in path:
            param, moment = param[k], moment[k]
        assert param.sharding.spec == moment.sharding.spec == spec, (path, param.sharding.spec)
    assert state.step.sharding.spec == state.rng.sharding.spec == P()


def test_train_traces_under_its_mesh(tmp_path, monkeypatch):
    """train() traces its steps with the run's mesh set, so constrain_batch is in effect."""
    seen = spy_constrain_batch(monkeypatch)
    starts = []  # len(seen) when the step's trace began: the init's calls come before

    def step(state, batch, spec):  # a new step function: traced afresh, whatever is cached
        starts.append(len(seen))
        return train_step(state, batch, spec=spec)

    monkeypatch.setattr(loop, "train_step", step)
    c = _tiny_sft(total_steps=1)
    c.mesh.data, c.mesh.fsdp = 4, 2
    loop.train(c, str(tmp_path / "run"), progress=False)
    in_step = seen[starts[0] :]
    assert in_step and all(s == {"data": 4, "fsdp": 2} for s in in_step), seen


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
        closed = []  # the crashed run's manager: closed, its step 4 save complete by then
        make_manager = loop.checkpoint.make_manager

        def spy_manager(workdir):
            manager = make_manager(workdir)
            close = manager.close
            manager.close = lambda: (closed.append(os.listdir(checkpoint_dir(workdir))), close())
            return manager

        monkeypatch.setattr(loop.checkpoint, "make_manager", spy_manager)
        with pytest.raises(Crash):
            loop.train(_tiny_sft(), str(tmp_path / "resumed"), progress=False)
        assert closed == [["4"]]
        assert [r["step"] for r in read_metrics(tmp_path / "resumed")] == list(range(1, 7))
        monkeypatch.setattr(loop.checkpoint, "make_manager", make_manager)
    monkeypatch.setattr(loop, "build_stage", real_build)
    loop.train(_tiny_sft(), str(tmp_path / "resumed"), progress=False)

    full, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == list(range(1, 9))
    for a, b in zip(full, resumed, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), (a, b)


def test_runs_with_one_step_setting_trace_it_once(tmp_path, monkeypatch):
    """A reproduce run's seeds and each frontier segment are separate train() calls: with
    equal step settings they share one jitted step (loop.jit_train_step) and trace it once;
    a longer schedule is another optimizer, traced again. Every run still ends where an
    uninterrupted one of its own seed does."""
    traces = []

    def counted(state, batch, spec):  # runs once per trace
        traces.append(spec.objective)
        return train_step(state, batch, spec=spec)

    monkeypatch.setattr(loop, "train_step", counted)
    train_state._jit_init.cache_clear()
    loop.train(_tiny_sft(), str(tmp_path / "a"), progress=False, stop_at=4)
    loop.train(_tiny_sft(), str(tmp_path / "a"), progress=False)  # its next segment
    loop.train(_tiny_sft(seed=1), str(tmp_path / "b"), progress=False)
    assert traces == ["sft"]
    assert train_state._jit_init.cache_info()[:2] == (2, 1)  # (hits, misses): one jitted init too
    loop.train(_tiny_sft(total_steps=12), str(tmp_path / "c"), progress=False)
    assert traces == ["sft", "sft"]
    monkeypatch.setattr(loop, "train_step", train_step)
    loop.train(_tiny_sft(seed=1), str(tmp_path / "b_alone"), progress=False)
    assert read_metrics(tmp_path / "b") == read_metrics(tmp_path / "b_alone")


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    config = _tiny_sft(total_steps=8, checkpoint_every=1)
    loop.train(config, workdir, progress=False, stop_at=4)

    def poisoned(state, batch, spec):  # the loss turns NaN from the 6th update on
        new_state, metrics = train_step(state, batch, spec=spec)
        poison = jax.numpy.where(new_state.step >= 6, jax.numpy.nan, 1.0)
        return new_state, {**metrics, "loss": metrics["loss"] * poison}

    monkeypatch.setattr(loop, "train_step", poisoned)
    with pytest.raises(NonFiniteLossError, match="Last good checkpoint: step 5"):
        loop.train(config, workdir, progress=False)
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert steps[-1] == 5


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


def test_stop_at_keeps_the_schedule_of_the_whole_run(tmp_path):
    """Train to step 4 of 8, then resume: the cosine schedule is the 8-step one throughout, and
    the run equals the uninterrupted one."""
    loop.train(_tiny_sft(), str(tmp_path / "full"), progress=False)
    loop.train(_tiny_sft(), str(tmp_path / "seg"), progress=False, stop_at=4)
    full, seg = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "seg")
    assert [r["step"] for r in seg] == [1, 2, 3, 4]
    assert seg[-1]["learning_rate"] == pytest.approx(full[3]["learning_rate"], rel=1e-6)
    assert seg[-1]["learning_rate"] > 0.5 * full[0]["learning_rate"]  # not a 4-step cosine's end
    loop.train(_tiny_sft(), str(tmp_path / "seg"), progress=False)
    seg = read_metrics(tmp_path / "seg")
    assert [r["step"] for r in seg] == list(range(1, 9))
    for a, b in zip(full, seg, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), (a, b)
    with pytest.raises(ValueError, match="stop_at=9"):
        loop.train(_tiny_sft(), str(tmp_path / "bad"), progress=False, stop_at=9)


def _record_dispatch_and_fetch(monkeypatch, poison_step: int | None = None) -> list:
    """Events ('dispatch', step) from the stage and ('fetch', k) for the k-th metrics read;
    with `poison_step`, that step's state and loss become NaN (what a diverging step does)."""
    events, real_build, real_get = [], loop.build_stage, jax.device_get

    def build(run, mesh, workdir, data):
        stage = real_build(run, mesh, workdir, data)
        inner = stage.run_step

        def run_step(step_fn, state, step):
            events.append(("dispatch", step + 1))
            state, metrics = inner(step_fn, state, step)
            if step + 1 == poison_step:
                state = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
                metrics = {**metrics, "loss": metrics["loss"] * np.nan}
            return state, metrics

        stage.run_step = run_step
        return stage

    def device_get(x):
        if isinstance(x, dict) and "grad_norm" in x:  # the driver reading a step's metrics
            events.append(("fetch", sum(e[0] == "fetch" for e in events) + 1))
        return real_get(x)

    monkeypatch.setattr(loop, "build_stage", build)
    monkeypatch.setattr(jax, "device_get", device_get)
    return events


def test_metrics_are_read_one_step_late_except_at_checkpoints(tmp_path, monkeypatch):
    events = _record_dispatch_and_fetch(monkeypatch)
    loop.train(_tiny_sft(), str(tmp_path), progress=False)  # 8 steps, checkpoints at 4 and 8
    want = []
    for step in range(1, 9):
        want.append(("dispatch", step))
        if step % 4 != 1:  # step - 1 is read while this step runs, unless read already
            want.append(("fetch", step - 1))
        if step % 4 == 0:  # a checkpoint step is read before it is saved
            want.append(("fetch", step))
    assert events == want
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 9))


@pytest.mark.parametrize("nan_step", [3, 4])  # read late (step 4 already running) / at a save
def test_non_finite_step_is_never_checkpointed_when_read_late(tmp_path, monkeypatch, nan_step):
    _record_dispatch_and_fetch(monkeypatch, poison_step=nan_step)
    workdir = str(tmp_path / "run")
    with pytest.raises(NonFiniteLossError, match=f"at step {nan_step} .*checkpoint: step 2"):
        loop.train(_tiny_sft(checkpoint_every=2), workdir, progress=False)
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert steps == [2]  # step 4's checkpoint would hold the NaN state
    assert [r["step"] for r in read_metrics(workdir)] == list(range(1, nan_step))


def test_objectives_declare_exactly_the_batch_keys_their_loss_reads():
    """Trace each loss on a batch that records which keys are read: BATCH_KEYS is that set."""

    class Recording(dict):
        def __getitem__(self, key):
            self.read.add(key)
            return super().__getitem__(key)

    rows, t = 4, 7
    seq = {"tokens": np.zeros((rows, t), np.int32), "mask": np.ones((rows, t), bool)}
    seq["loss_mask"] = np.ones((rows, t), bool)
    arrays = {**seq, **{f"{s}_{k}": v for s in ("chosen", "rejected") for k, v in seq.items()}}
    arrays |= {k: np.zeros(rows, np.float32) for k in ("ref_chosen_logp", "ref_rejected_logp")}
    arrays |= {
        k: np.zeros((rows, t), np.float32)
        for k in ("old_logp", "old_values", "advantages", "returns")
    }
    mesh = make_mesh(1, 1, jax.devices()[:1])
    kinds = {"policy": "lm", "reward": "scalar", "critic": "scalar"}
    for name, (loss_fn, hp_cls, roles) in OBJECTIVES.items():
        tx, _ = make_optimizer(OptimConfig(), 10)
        state, _ = init_state({r: (kinds[r], MODEL) for r in roles}, tx, seed=0, mesh=mesh)
        batch = Recording(arrays)
        batch.read = set()
        models = Models(**dict.fromkeys(roles, MODEL))
        jax.eval_shape(lambda p: loss_fn(p, batch, models, hp_cls()), state.params)  # noqa: B023
        assert batch.read == set(BATCH_KEYS[name]), name


def test_a_batch_missing_a_key_names_it_and_the_objective(tmp_path):
    with pytest.raises(BatchError, match=r"objective 'sft' reads batch key\(s\) \['loss_mask'\]"):
        check_batch("sft", {"tokens": 0, "mask": 0})
    c = _tiny_sft(total_steps=2)
    sft = bundle_from_config(parse_config(c).data, progress=False).sft
    no_loss_mask = {k: v for k, v in sft.items() if k != "loss_mask"}
    data = DataBundle(eos_id=1, pad_id=0, vocab_size=64, sft=no_loss_mask)
    with pytest.raises(BatchError, match=r"'sft' reads batch key\(s\) \['loss_mask'\]"):
        loop.train(c, str(tmp_path), progress=False, data=data)


def test_objective_mle_is_an_accepted_alias_of_sft():
    c = load_config(SFT, "tiny").to_dict()
    assert c["objective"] == "sft"
    old = {**c, "objective": "mle", "mle": {"temperature": 2.0}}
    del old["sft"]
    run = parse_config(old)  # the section is named as the objective is written
    assert run.objective == "sft" and run.hparams == SftHparams(temperature=2.0)
    with pytest.raises(ConfigError, match=r"\['sft'\] for objective 'mle'"):
        parse_config({**old, "sft": {"temperature": 1.0}})
    with pytest.raises(ConfigError, match=r"'mel'.*aliases: \{'mle': 'sft'\}"):
        parse_config({**c, "objective": "mel"})


def test_an_error_ending_the_loop_stays_the_error_raised():
    """A checkpoint save that fails while a crashed loop closes its run (a full disk, say) is
    a note on the loop's own error, not a replacement for it; the run is closed either way."""

    class Part:
        def __init__(self, fail: bool):
            self.fail, self.calls = fail, []

        def wait_until_finished(self):
            self.calls.append("wait")
            if self.fail:
                raise OSError("No space left on device (simulated save)")

        def close(self):
            self.calls.append("close")

    manager, writer, error = Part(fail=True), Part(fail=False), Crash("the loop's own error")
    loop._close_after(error, manager, writer)
    assert manager.calls == ["wait", "close"] and writer.calls == ["close"]
    assert len(error.__notes__) == 1 and "No space left on device" in error.__notes__[0]
