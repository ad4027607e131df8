"""The pipeline samples many prompts in bounded generate calls: what one call holds, and that
the calls together give what one call would (greedy decoding makes that exact)."""

import flax.linen as nn
import jax
import numpy as np

from rlft.experiments.pipeline import evaluate
from rlft.models import init_params, model_config
from rlft.parallel import make_mesh
from rlft.tasks import make_prompt_arrays, make_task
from tests.helpers import spy_constrain_batch


def test_prompts_per_call_bounds_the_kv_cache_by_hand():
    cfg = model_config("pythia-410m", dtype="bfloat16")
    # A 565-slot row: keys and values of 24 layers x 1024 wide in bf16, plus float32 logits.
    row = 2 * 24 * 565 * 1024 * 2 + 4 * 50304
    assert row == 55_742_976
    rows = evaluate.SAMPLE_BYTES_PER_DEVICE // row  # 38 rows a device
    assert evaluate.prompts_per_call(cfg, 1, 25, 565) == 1  # K = 25: one prompt a call
    assert evaluate.prompts_per_call(cfg, 1, 2, 565) == rows // 2 == 19
    assert evaluate.prompts_per_call(cfg, 8, 2, 565) == 19 * 8  # a multiple of the devices
    assert evaluate.prompts_per_call(cfg, 4, 100, 565) == 4  # never below one per device


def test_chunked_sampling_equals_one_call(monkeypatch):
    task = make_task("keyed")
    cfg = model_config("tiny")
    params = nn.unbox(init_params("lm", cfg, jax.random.PRNGKey(0)))
    prompts = make_prompt_arrays(task, 10, np.random.default_rng(0))
    mesh = make_mesh(1, 1, jax.devices()[:1])
    kw = dict(num_samples=2, temperature=0.0)  # greedy: the draws cannot depend on the key

    def run():
        return evaluate.sample(cfg, params, prompts, task, jax.random.PRNGKey(1), mesh, **kw)

    whole = run()
    length = prompts["prompt_tokens"].shape[1] + task.response_len
    row = 2 * cfg.num_layers * length * cfg.d_model * 4 + 4 * cfg.vocab_size
    monkeypatch.setattr(evaluate, "SAMPLE_BYTES_PER_DEVICE", 6 * row)  # 3 prompts a call
    assert evaluate.prompts_per_call(cfg, 1, 2, length) == 3
    chunked = run()  # calls of 3, 3, 3 and 1 (padded to 3)
    assert chunked["tokens"].shape == whole["tokens"].shape == (20, length)
    for key in whole:
        np.testing.assert_allclose(chunked[key], whole[key], atol=1e-5, err_msg=key)
    p = prompts["prompt_tokens"].shape[1]  # row b*K + k continues prompt b
    np.testing.assert_array_equal(chunked["tokens"][::2, :p], prompts["prompt_tokens"])


def test_sampling_on_an_fsdp_mesh_traces_under_it_and_equals_one_device(monkeypatch):
    """evaluate.sample traces generate with its mesh set (so rlft.parallel.constrain_batch keeps
    each device to its rows) and draws what one device draws (greedy, so exactly)."""
    seen = spy_constrain_batch(monkeypatch)
    task = make_task("keyed")
    cfg = model_config("tiny")
    params = nn.unbox(init_params("lm", cfg, jax.random.PRNGKey(0)))
    prompts = make_prompt_arrays(task, 8, np.random.default_rng(0))
    kw = dict(num_samples=2, temperature=0.0)
    key = jax.random.PRNGKey(1)
    one = evaluate.sample(cfg, params, prompts, task, key, make_mesh(1, 1, jax.devices()[:1]), **kw)
    seen.clear()
    jax.clear_caches()  # trace afresh even if another test compiled the same call
    fsdp = evaluate.sample(cfg, params, prompts, task, key, make_mesh(1, 8), **kw)
    assert seen and all(s == {"data": 1, "fsdp": 8} for s in seen), seen
    np.testing.assert_array_equal(fsdp["tokens"], one["tokens"])
    np.testing.assert_allclose(fsdp["logp"], one["logp"], atol=1e-5)
