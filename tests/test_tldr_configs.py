"""configs/tldr_pythia.py: every SIZE:STAGE variant parses with the paper's numbers, the TL;DR
data source builds and caches its arrays, and the smoke variant trains sft -> reward -> dpo ->
ppo through the CLI on fixture files (rlft/data/tldr/fixtures.py) on CPU.
"""

import dataclasses
import importlib.util
import math
import os

import numpy as np
import pytest

from rlft.config import load_config, parse_config
from rlft.data.sources import TldrDataConfig, bundle_from_config
from rlft.data.synthetic import SyntheticConfig
from rlft.errors import ConfigError
from tests.helpers import REPO_CONFIGS

CONFIG = os.path.join(REPO_CONFIGS, "tldr_pythia.py")
STAGES = ("sft", "reward", "dpo", "ppo")


def _module():
    spec = importlib.util.spec_from_file_location("tldr_pythia_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def data_extra():
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")
    pytest.importorskip("tokenizers")


@pytest.mark.parametrize("size", ["1.4b", "2.8b"])
@pytest.mark.parametrize("stage", STAGES)
def test_full_size_variants_have_the_paper_settings(size, stage):
    run = parse_config(load_config(CONFIG, f"{size}:{stage}"))
    objective, lr, batch, rows = {
        "sft": ("sft", 3e-6, 64, 116_722),
        "reward": ("reward", 3e-6, 128, 92_858),
        "dpo": ("dpo", 3e-7, 128, 92_858),
        "ppo": ("ppo", 3e-6, 64, 116_722),
    }[stage]
    assert (run.objective, run.optim.learning_rate, run.batch_size) == (objective, lr, batch)
    assert run.total_steps == rows // batch  # one epoch at the published split size
    o = run.optim
    assert (o.schedule, o.warmup_steps, o.end_lr_frac, o.eps) == ("cosine", 0, 0.0, 1e-5)
    assert run.batch_size % o.accum_steps == 0
    m = run.model
    assert (m.dtype, m.remat, m.vocab_size) == ("bfloat16", True, 50304)
    assert (m.num_layers, m.d_model) == {"1.4b": (24, 2048), "2.8b": (32, 2560)}[size]
    assert (run.mesh.data, run.mesh.fsdp) == (1, -1)
    d = run.data
    assert isinstance(d, TldrDataConfig) and not d.write_fixture and d.max_rows == 0
    assert (d.max_query_len, d.response_len, d.sft_split, d.pairs_split) == (
        512,
        53,
        "train",
        "train",
    )
    sft_dir = f"runs/tldr_{size}/sft"
    expected_policy = f"checkpoints/pythia-{size}-deduped" if stage == "sft" else sft_dir
    assert run.init.policy == expected_policy and run.init.reference == ""
    if stage == "reward":
        assert run.hparams.model_class == "last" and set(d.parts) == {"pairs", "sft"}
    if stage == "dpo":
        h = run.hparams
        assert (h.beta, h.temperature, h.loss_type, h.reference_free) == (
            0.05,
            1.0,
            "sigmoid",
            False,
        )
    if stage == "ppo":
        h, r = run.hparams, run.rollout
        assert (h.temperature, h.clip_eps, h.vf_clip, h.vf_coef) == (0.7, 0.2, 0.2, 0.1)
        assert (r.kl_coef, r.kl_estimator, r.no_eos_penalty) == (0.05, "k1", -1.0)
        assert (r.gamma, r.lam, r.ppo_epochs, r.response_len) == (1.0, 0.95, 4, 53)
        assert run.init.reward == f"runs/tldr_{size}/reward" and run.reward_model == m


@pytest.mark.parametrize("stage", STAGES)
def test_smoke_variant_has_the_same_shape(stage):
    smoke = parse_config(load_config(CONFIG, f"smoke:{stage}:/tmp/root"))
    full = parse_config(load_config(CONFIG, f"1.4b:{stage}"))
    assert smoke.objective == full.objective and smoke.hparams == full.hparams
    assert smoke.optim == dataclasses.replace(full.optim, accum_steps=1)
    assert smoke.model.dtype == "bfloat16" and smoke.model.vocab_size == 512
    assert smoke.data.write_fixture and smoke.data.data_dir == "/tmp/root/tfds"
    assert smoke.data.parts == full.data.parts
    if stage != "sft":
        assert smoke.init.policy == "/tmp/root/sft"


def test_online_dpo_points_at_reproduce():
    with pytest.raises(ValueError, match=r"rlft reproduce --config=configs/tldr_pythia.py:1.4b"):
        load_config(CONFIG, "1.4b:online_dpo")
    module = _module()
    assert module.ONLINE_DPO == {"num_samples": 25, "temperature": 0.1, "max_new_tokens": 53}
    run = parse_config(module.online_dpo_config("2.8b"))
    assert run.data is None  # the pipeline passes the sampled pairs as data=
    assert (run.hparams.temperature, run.hparams.beta, run.batch_size) == (0.1, 0.05, 128)
    assert run.optim.learning_rate == 3e-7 and run.init.policy == "runs/tldr_2.8b/sft"
    from_dpo = parse_config(module.online_dpo_config("1.4b", start="dpo"))
    assert from_dpo.init.policy == "runs/tldr_1.4b/dpo" and from_dpo.init.reference == ""


def test_root_may_be_a_bucket():
    run = parse_config(load_config(CONFIG, "2.8b:ppo:gs://bucket/tldr"))
    assert (run.init.policy, run.init.reward) == ("gs://bucket/tldr/sft", "gs://bucket/tldr/reward")


@pytest.mark.parametrize("arg", [None, "1.4b", "7b:sft", "1.4b:rlhf", "smoke"])
def test_unknown_variants_are_rejected(arg):
    with pytest.raises(ValueError, match="SIZE:STAGE"):
        load_config(CONFIG, arg)


def test_data_section_is_strict_per_source():
    c = load_config(CONFIG, "1.4b:sft")
    c.data.datadir = "x"
    with pytest.raises(ConfigError, match=r"config\.data\.datadir"):
        parse_config(c)
    c = load_config(CONFIG, "1.4b:sft")
    c.data.source = "imagenet"
    with pytest.raises(ConfigError, match=r"config\.data\.source='imagenet'"):
        parse_config(c)
    c = load_config(CONFIG, "1.4b:sft")
    c.data.tokenizer = ""
    with pytest.raises(ConfigError, match=r"config\.data: tokenizer is empty"):
        parse_config(c)
    c = load_config(os.path.join(REPO_CONFIGS, "sft.py"), "tiny")
    assert isinstance(parse_config(c).data, SyntheticConfig)  # no source: synthetic
    c.data.source = "synthetic"
    assert parse_config(c).data == SyntheticConfig(num_examples=2048)
    c.data.max_query_len = 512  # a TL;DR field on the synthetic source
    with pytest.raises(ConfigError, match=r"config\.data\.max_query_len"):
        parse_config(c)


def _smoke_data(root, **overrides) -> TldrDataConfig:
    values = load_config(CONFIG, f"smoke:reward:{root}").data.to_dict()
    values.pop("source")
    return TldrDataConfig(**{**values, **overrides})


def test_tldr_bundle_layout_and_cache(tmp_path, data_extra, monkeypatch):
    from rlft.data.tldr import format as fmt
    from rlft.data.tldr.fixtures import SFT

    cfg = _smoke_data(tmp_path)
    bundle = bundle_from_config(cfg, progress=False)
    p, r, n_sft = cfg.max_query_len, cfg.response_len, len(SFT["train"])
    assert bundle.sft["tokens"].shape == (n_sft, p + r)  # every fixture summary fits 16
    assert bundle.pairs["chosen_tokens"].shape == (3, p + cfg.pair_response_len)
    assert bundle.reference is bundle.sft
    np.testing.assert_array_equal(bundle.prompts["prompt_tokens"], bundle.sft["tokens"][:, :p])
    np.testing.assert_array_equal(bundle.prompts["prompt_mask"], bundle.sft["mask"][:, :p])
    assert bundle.vocab_size == 401 and bundle.pad_id == 400  # 400 BPE tokens, then [PAD]
    assert bundle.eos_id == 0  # the BPE's first special token, as in Pythia
    ends = bundle.sft["tokens"][np.arange(n_sft), p + bundle.sft["mask"][:, p:].sum(1) - 1]
    assert (ends == bundle.eos_id).all()
    cached = sorted(os.listdir(tmp_path / "tfds" / "rlft_arrays"))
    assert [f.split("_")[0] for f in cached] == ["pairs", "sft"]

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr(fmt, "sft_arrays", no_tokenising)
    monkeypatch.setattr(fmt, "pair_arrays", no_tokenising)
    again = bundle_from_config(cfg, progress=False)
    for part in ("sft", "pairs"):
        for k, v in getattr(bundle, part).items():
            np.testing.assert_array_equal(getattr(again, part)[k], v)
    with pytest.raises(AssertionError, match="tokenised again"):  # other lengths: new key
        bundle_from_config(dataclasses.replace(cfg, response_len=20), progress=False)
    monkeypatch.undo()
    only_sft = bundle_from_config(
        dataclasses.replace(cfg, parts=("sft",), max_rows=2), progress=False
    )
    assert only_sft.pairs is None and len(only_sft.sft["tokens"]) == 2


def test_tldr_source_errors_name_the_field(tmp_path, data_extra):
    cfg = _smoke_data(tmp_path, write_fixture=False, manual_dir="")
    with pytest.raises(ConfigError, match=r"config\.data\.tokenizer="):
        bundle_from_config(cfg, progress=False)
    from rlft.data.tldr.fixtures import train_tokenizer

    train_tokenizer(cfg.tokenizer)
    with pytest.raises(ConfigError, match=r"no prepared TL;DR \['comparisons', 'sft'\]"):
        bundle_from_config(cfg, progress=False)


def _finite_losses(workdir: str) -> list[float]:
    from rlft.train.metrics import read_metrics

    losses = [row["loss"] for row in read_metrics(workdir)]
    assert losses and all(math.isfinite(x) for x in losses), losses
    return losses


@pytest.mark.slow  # four stages traced and run (about 2 min); CI runs slow tests
def test_smoke_stages_chain_through_the_cli(tmp_path, data_extra):
    from rlft.cli import main
    from rlft.train.metrics import read_metrics

    root = tmp_path / "tldr"
    for stage in STAGES:
        argv = [f"--config={CONFIG}:smoke:{stage}:{root}", f"--workdir={root / stage}"]
        assert main(["train", *argv, "--noprogress"]) == 0, stage
        assert len(_finite_losses(str(root / stage))) == (2 if stage == "ppo" else 4)
    assert "reward_offset" in read_metrics(str(root / "reward"))[-1]
    assert (root / "dpo" / "ref_logprobs.npz").exists()
    last = read_metrics(str(root / "ppo"))[-1]
    assert math.isfinite(last["objective/scores"]) and 0 < last["rollout/response_len"] <= 16
