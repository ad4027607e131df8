"""Forward-only scoring in rlft.rollout.scoring: the reward-model class is read from the
checkpoint (never guessed), and one scorer serves every caller."""

import os

import jax
import numpy as np
import pytest

import rlft.models as models
from rlft.cli import main
from rlft.config import OptimConfig, load_config, parse_config
from rlft.errors import ModelClassError
from rlft.models import model_config
from rlft.parallel import make_mesh
from rlft.rollout import scoring
from rlft.train import checkpoint, loop
from rlft.train.state import init_state, make_optimizer
from tests.helpers import REPO_CONFIGS, spy_constrain_batch

PPO = os.path.join(REPO_CONFIGS, "ppo.py")
MODEL = model_config("tiny")


def _write_run(workdir: str, reward_meta: dict, config: dict | None = None) -> None:
    """A policy + reward checkpoint of the tiny model whose meta says what the test wants."""
    mesh = make_mesh(1, 1, jax.devices()[:1])
    roles = {"policy": ("lm", MODEL), "reward": ("scalar", MODEL)}
    tx, _ = make_optimizer(OptimConfig(), 10)
    state, _ = init_state(roles, tx, seed=0, mesh=mesh)
    models = {r: {"kind": k, "config": c.to_dict()} for r, (k, c) in roles.items()}
    models["reward"] |= reward_meta
    manager = checkpoint.make_manager(workdir)
    checkpoint.save(manager, 1, state, {"models": models, "config": config or {}})
    manager.wait_until_finished()
    manager.close()


def test_class_is_read_from_the_checkpoint_meta(tmp_path):
    _write_run(str(tmp_path), {"model_class": "mean"}, config={"reward": {"pooling": "sum"}})
    params, model_class = scoring.load_reward_model(str(tmp_path), MODEL, make_mesh())
    assert model_class == "mean"  # the resolved class wins over any raw config
    assert set(params) == {"backbone", "scalar_head"}


def test_old_checkpoints_are_read_from_their_reward_pooling(tmp_path):
    _write_run(str(tmp_path), {}, config={"reward": {"pooling": "sum"}})
    _, model_class = scoring.load_reward_model(str(tmp_path), MODEL, make_mesh())
    assert model_class == "sum"


def test_a_checkpoint_without_a_class_raises_a_named_error(tmp_path):
    _write_run(str(tmp_path), {}, config={"objective": "reward"})  # no class anywhere
    with pytest.raises(ModelClassError, match=r"models\.reward\.model_class"):
        scoring.load_reward_model(str(tmp_path), MODEL, make_mesh())


def test_ppo_refuses_a_reward_model_of_unknown_class(tmp_path, capsys):
    """The one behaviour change: PPO used to fall back to 'last' here; now it stops, and the
    CLI prints the error instead of a traceback."""
    rm = str(tmp_path / "rm")
    _write_run(rm, {})
    c = load_config(PPO, "tiny")
    c.init.policy, c.init.reward = rm, rm
    assert parse_config(c).model == MODEL  # the fake run fits the PPO config
    with pytest.raises(ModelClassError, match=rm):
        loop.train(c, str(tmp_path / "ppo"), progress=False)
    argv = [f"--config={PPO}:tiny", f"--config.init.policy={rm}", f"--config.init.reward={rm}"]
    assert main(["train", *argv, f"--workdir={tmp_path / 'ppo2'}", "--noprogress"]) == 1
    assert "model_class" in capsys.readouterr().err


def test_reference_logprobs_are_the_log_prob_scorer_per_side(monkeypatch):
    """DPO's reference keys are `logprob_scores` of each side, row for row (the pass runs
    both sides at once, their 4 shared prompt columns once per pair)."""
    rng = np.random.default_rng(0)
    n, t = 16, 9
    pairs = {}
    for side in ("chosen", "rejected"):
        pairs[f"{side}_tokens"] = rng.integers(0, MODEL.vocab_size, (n, t)).astype(np.int32)
        pairs[f"{side}_mask"] = np.ones((n, t), bool)
        pairs[f"{side}_loss_mask"] = np.arange(t)[None].repeat(n, 0) >= 4
    pairs["rejected_tokens"][:, :4] = pairs["chosen_tokens"][:, :4]  # one prompt per pair
    assert scoring.pair_prefix_len(pairs) == 4
    seen, real = [], models.backbone_hidden  # the pass runs the prompt once per pair

    def spy(*args, prefix_len=0, copies=1, **kw):
        seen.append((prefix_len, copies))
        return real(*args, prefix_len=prefix_len, copies=copies, **kw)

    monkeypatch.setattr(models, "backbone_hidden", spy)
    scoring._pair_logprob_fn.cache_clear()  # traced afresh, under the spy
    mesh = make_mesh()
    tx, _ = make_optimizer(OptimConfig(), 10)
    state, _ = init_state({"policy": ("lm", MODEL)}, tx, seed=1, mesh=mesh)
    params = state.params["policy"]
    ref = scoring.reference_logprobs(MODEL, params, pairs, 8, mesh, 0.7)
    assert seen == [(4, 2)]
    scoring._pair_logprob_fn.cache_clear()  # nothing traced under the spy stays cached
    assert set(ref) == {"ref_chosen_logp", "ref_rejected_logp"}
    for side in ("chosen", "rejected"):
        want = scoring.logprob_scores(MODEL, params, pairs, mesh, f"{side}_", 0.7, batch_size=16)
        np.testing.assert_allclose(ref[f"ref_{side}_logp"], want, rtol=1e-5, atol=1e-5)
        assert ref[f"ref_{side}_logp"].shape == (n,) and np.all(ref[f"ref_{side}_logp"] < 0)


def test_forward_dataset_traces_under_its_mesh(monkeypatch):
    """Scoring passes called outside train() (e.g. tasks/tldr.py's rm_scores) trace with the
    mesh set, so rlft.parallel.constrain_batch keeps each device to its rows."""
    seen = spy_constrain_batch(monkeypatch)
    jax.clear_caches()  # trace afresh even if another test compiled the same pass
    mesh = make_mesh(2, 4)
    tx, _ = make_optimizer(OptimConfig(), 10)
    state, _ = init_state({"policy": ("lm", MODEL)}, tx, seed=1, mesh=mesh)
    seen.clear()  # init traced the model too, outside any pass
    rng = np.random.default_rng(0)
    arrays = {
        "tokens": rng.integers(0, MODEL.vocab_size, (12, 7)).astype(np.int32),
        "mask": np.ones((12, 7), bool),
        "loss_mask": np.arange(7)[None].repeat(12, 0) >= 3,
    }
    logp = scoring.logprob_scores(MODEL, state.params["policy"], arrays, mesh, "", 1.0, 8)
    assert logp.shape == (12,)
    assert seen and all(s == {"data": 2, "fsdp": 4} for s in seen), seen
