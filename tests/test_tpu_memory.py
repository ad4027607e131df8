"""tpu/memory.py: parameter counts against published Pythia sizes, the per-device split by hand."""

import os

import pytest

from tests.helpers import REPO

TPU = os.path.join(REPO, "tpu")


def _memory_module():
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("tpu_memory", os.path.join(TPU, "memory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_memory_counts_match_published_pythia_sizes():
    memory = _memory_module()
    from rlft.models import model_config  # noqa: PLC0415

    # Parameter counts of EleutherAI/pythia-1.4b and -2.8b (untied in/out embeddings).
    assert memory.param_count("lm", model_config("pythia-1.4b")) == 1_414_647_808
    assert memory.param_count("lm", model_config("pythia-2.8b")) == 2_775_208_960


def test_memory_per_device_split_by_hand():
    memory = _memory_module()
    from rlft.models import model_config  # noqa: PLC0415

    cfg = model_config("tiny", vocab_size=67, d_model=40, num_heads=5, d_ff=72, num_layers=1)
    d, f, v = 40, 72, 67
    # embed axes split 4 ways: embed_in/out, q/k/v/out kernels, mlp kernels, LayerNorms, out and
    # down biases; replicated: q/k/v biases (heads, kv) and the mlp up bias (mlp).
    split = 2 * v * d + 4 * d * d + 2 * d * f + 3 * 2 * d + 2 * d
    replicated = 3 * d + f
    assert memory.param_count("lm", cfg) == split + replicated
    assert memory.params_per_device("lm", cfg, 4) == split // 4 + replicated
    row = memory.rows(["pythia-1.4b"], tpus=memory.TPUS[:1])[0]
    assert row.tpu.name == "v4-8" and row.trained_gib == pytest.approx(
        memory.params_per_device("lm", model_config("pythia-1.4b"), 4) * 16 / 2**30
        + memory.params_per_device("scalar", model_config("pythia-1.4b"), 4) * 16 / 2**30
    )
