"""Parity with Hugging Face GPT-NeoX: import, export, greedy decoding, convert, tokenizer.

Reference: randomly initialised `transformers.GPTNeoXForCausalLM` (eval, float32, eager
attention) with every weight, bias and LayerNorm parameter perturbed, so a swapped or
transposed tensor shows up in the logits. Prime-ish sizes (vocab 97, d_ff 53, 3 or 5 heads).
"""

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.utils.logging.disable_progress_bar()

from rlft import convert  # noqa: E402
from rlft.models import init_params, lm_logits, model_config  # noqa: E402
from rlft.models.hf import PAD_TOKEN, config_from_hf, config_to_hf, params_from_hf  # noqa: E402
from rlft.models.hf_files import (  # noqa: E402
    load_hf_checkpoint,
    load_tokenizer,
    read_state_dict,
    save_hf_checkpoint,
)
from rlft.models.params_io import load_pretrained  # noqa: E402

TOL = 1e-4
VOCAB, D_FF, B, P, NEW = 97, 53, 3, 11, 10
T = P + NEW  # greedy decoding fills a [B, T] buffer, so it reuses the logits test's compile
SHAPES = {
    "h5_rot0.25_parallel": dict(
        hidden_size=40,
        num_attention_heads=5,
        rotary_pct=0.25,
        use_parallel_residual=True,
        num_hidden_layers=2,
    ),
    "h3_rot1.0_sequential": dict(
        hidden_size=36,
        num_attention_heads=3,
        rotary_pct=1.0,
        use_parallel_residual=False,
        num_hidden_layers=3,
        rotary_emb_base=500,
        layer_norm_eps=1e-3,
    ),
    "h3_rot0.25_sequential": dict(
        hidden_size=48,
        num_attention_heads=3,
        rotary_pct=0.25,
        use_parallel_residual=False,
        num_hidden_layers=2,
    ),
    "h5_rot1.0_parallel": dict(
        hidden_size=40,
        num_attention_heads=5,
        rotary_pct=1.0,
        use_parallel_residual=True,
        num_hidden_layers=2,
    ),
}
MAX_DIFF: dict[str, float] = {}  # per shape, printed at the end of the module (pytest -s)


def make_hf_model(seed: int, **overrides):
    torch.manual_seed(seed)
    kw = dict(
        vocab_size=VOCAB,
        intermediate_size=D_FF,
        max_position_embeddings=64,
        initializer_range=0.2,
        attn_implementation="eager",
    )
    model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**(kw | overrides)))
    with torch.no_grad():  # HF inits biases to 0 and LayerNorms to 1: perturb them too
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def batch(seed: int = 0):
    """Random tokens, left-padded: row 0 full, row 1 with 4 pads, row 2 with 1."""
    tokens_BxT = np.random.RandomState(seed).randint(0, VOCAB, (B, T))
    mask_BxT = np.ones((B, T), bool)
    mask_BxT[1, :4] = mask_BxT[2, :1] = False
    return tokens_BxT, mask_BxT


def hf_logits(model, tokens_BxT, mask_BxT) -> np.ndarray:
    # Positions skip left padding, as HF `generate` and rlft's positions_from_mask do.
    positions_BxT = np.maximum(mask_BxT.cumsum(-1) - 1, 0)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(tokens_BxT),
            position_ids=torch.tensor(positions_BxT),
            attention_mask=torch.tensor(mask_BxT.astype(np.int64)),
        )
    return out.logits.numpy()


forward = jax.jit(lm_logits, static_argnums=0)


def max_diff(cfg, params, ref_BxTxV, tokens_BxT, mask_BxT) -> float:
    logits_BxTxV = np.asarray(forward(cfg, params, jnp.asarray(tokens_BxT), jnp.asarray(mask_BxT)))
    return float(np.abs(logits_BxTxV - ref_BxTxV)[mask_BxT].max())  # pad positions are don't-care


@pytest.fixture(scope="module", params=list(SHAPES))
def hf_ckpt(request, tmp_path_factory):
    """(shape name, HF model, its save_pretrained directory)."""
    model = make_hf_model(list(SHAPES).index(request.param), **SHAPES[request.param])
    path = str(tmp_path_factory.mktemp(request.param))
    model.save_pretrained(path)
    return request.param, model, path


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nmax |logits - HF logits| per shape:", json.dumps(MAX_DIFF, indent=1))


def test_import_logits_match(hf_ckpt):
    name, model, path = hf_ckpt
    cfg, params = load_hf_checkpoint(path)
    abstract = jax.eval_shape(lambda: nn.unbox(init_params("lm", cfg, jax.random.key(0))))
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, abstract)
    tokens_BxT, mask_BxT = batch()
    ref_BxTxV = hf_logits(model, tokens_BxT, mask_BxT)
    assert ref_BxTxV.std() > 0.3  # logits far from 0, so the comparison means something
    MAX_DIFF[name] = max_diff(cfg, params, ref_BxTxV, tokens_BxT, mask_BxT)
    assert MAX_DIFF[name] <= TOL


def test_greedy_generation_matches(hf_ckpt):
    _, model, path = hf_ckpt
    cfg, params = load_hf_checkpoint(path)
    tokens_BxT, mask_BxT = batch(seed=1)
    mask_BxT[:, P:] = False  # a left-padded prompt of P slots, then NEW slots to fill
    model.generation_config.eos_token_id = None  # always NEW tokens
    with torch.no_grad():
        ref_BxN = model.generate(
            input_ids=torch.tensor(tokens_BxT[:, :P]),
            max_new_tokens=NEW,
            attention_mask=torch.tensor(mask_BxT[:, :P].astype(np.int64)),
            do_sample=False,
            pad_token_id=0,
        ).numpy()[:, P:]
    # Full-forward greedy loop over the fixed [B, T] buffer: slots not yet generated are
    # masked out and, being in the future, invisible to the causal mask anyway.
    for t in range(P, T):
        logits_BxTxV = forward(cfg, params, jnp.asarray(tokens_BxT), jnp.asarray(mask_BxT))
        tokens_BxT[:, t] = np.asarray(jnp.argmax(logits_BxTxV[:, t - 1], axis=-1))
        mask_BxT[:, t] = True
    np.testing.assert_array_equal(tokens_BxT[:, P:], ref_BxN)


def test_export_round_trip(hf_ckpt, tmp_path):
    _, model, path = hf_ckpt
    cfg, params = load_hf_checkpoint(path)
    save_hf_checkpoint(str(tmp_path), cfg, params)
    reloaded = transformers.GPTNeoXForCausalLM.from_pretrained(
        str(tmp_path), attn_implementation="eager"
    ).eval()
    assert config_from_hf(reloaded.config.to_dict()) == cfg
    tokens_BxT, mask_BxT = batch()
    np.testing.assert_array_equal(
        hf_logits(reloaded, tokens_BxT, mask_BxT), hf_logits(model, tokens_BxT, mask_BxT)
    )
    assert config_from_hf(config_to_hf(cfg)) == cfg


def _swap(params, a: str, b: str):
    """A copy of params with the subtrees at slash-separated paths a and b exchanged."""
    params = jax.tree.map(np.copy, params)

    def parent(path):
        *head, last = path.split("/")
        node = params["backbone"]
        for key in head:
            node = node[key]
        return node, last

    (pa, ka), (pb, kb) = parent(a), parent(b)
    pa[ka], pb[kb] = pb[kb], pa[ka]
    return params


def _qkv_as_3xHxK(sd, cfg):
    """Reorder each fused QKV so that loading it is the same as a loader that wrongly
    assumed a [3, H, K] output layout instead of HF's per-head [H, 3, K]."""
    sd = dict(sd)
    H, K, D = cfg.num_heads, cfg.head_dim, cfg.d_model
    for key in [k for k in sd if k.endswith("query_key_value.weight")]:
        sd[key] = sd[key].reshape(3, H, K, D).transpose(1, 0, 2, 3).reshape(3 * D, D)
    return sd


def test_broken_mapping_is_detected(tmp_path):
    """The parity check has teeth: each plausible mapping bug moves logits by far more than TOL."""
    model = make_hf_model(7, **SHAPES["h5_rot0.25_parallel"])
    model.save_pretrained(str(tmp_path))
    cfg, params = load_hf_checkpoint(str(tmp_path))
    sd = read_state_dict(str(tmp_path))
    tokens_BxT, mask_BxT = batch()
    ref_BxTxV = hf_logits(model, tokens_BxT, mask_BxT)
    assert max_diff(cfg, params, ref_BxTxV, tokens_BxT, mask_BxT) <= TOL
    dense = "gpt_neox.layers.1.attention.dense.weight"
    broken = {
        "swap q and k": _swap(params, "layer_0/attn/query", "layer_0/attn/key"),
        "qkv read as [3, H, K]": params_from_hf(_qkv_as_3xHxK(sd, cfg), cfg),
        "dense not transposed": params_from_hf(sd | {dense: sd[dense].T}, cfg),
        "swap the two LayerNorms": _swap(params, "layer_1/ln_attn", "layer_1/ln_mlp"),
    }
    for what, bad in broken.items():
        assert max_diff(cfg, bad, ref_BxTxV, tokens_BxT, mask_BxT) > 1000 * TOL, what
    seq_cfg = dataclasses.replace(cfg, parallel_residual=False)
    assert max_diff(seq_cfg, params, ref_BxTxV, tokens_BxT, mask_BxT) > 1000 * TOL


def test_bf16_sharded_and_torch_bin_checkpoints(tmp_path):
    model = make_hf_model(3, **SHAPES["h5_rot0.25_parallel"]).to(torch.bfloat16)
    want = {k: v.float().numpy() for k, v in model.state_dict().items()}
    want["embed_out.weight"] = want.pop("lm_head.weight", want.get("embed_out.weight"))
    model.save_pretrained(str(tmp_path / "sharded"), max_shard_size="20KB")
    assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
    (tmp_path / "bin").mkdir()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text(model.config.to_json_string())
    for name in ("sharded", "bin"):
        sd = read_state_dict(str(tmp_path / name))
        sd = {("embed_out.weight" if k == "lm_head.weight" else k): v for k, v in sd.items()}
        assert sorted(sd) == sorted(want), name
        for k, v in sd.items():
            np.testing.assert_array_equal(np.asarray(v, np.float32), want[k], err_msg=k)
        load_hf_checkpoint(str(tmp_path / name))


PYTHIA_70M_CONFIG = {  # config.json of EleutherAI/pythia-70m (transformers 4.x era)
    "architectures": ["GPTNeoXForCausalLM"],
    "bos_token_id": 0,
    "eos_token_id": 0,
    "hidden_act": "gelu",
    "hidden_size": 512,
    "initializer_range": 0.02,
    "intermediate_size": 2048,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048,
    "model_type": "gpt_neox",
    "num_attention_heads": 8,
    "num_hidden_layers": 6,
    "rotary_emb_base": 10000,
    "rotary_pct": 0.25,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.24.0",
    "use_cache": True,
    "use_parallel_residual": True,
    "vocab_size": 50304,
}


def test_config_from_hf_pythia():
    assert config_from_hf(PYTHIA_70M_CONFIG) == model_config("pythia-70m")


@pytest.mark.parametrize(
    "field,value",
    [
        ("hidden_act", "gelu_new"),
        ("attention_bias", False),
        ("tie_word_embeddings", True),
        ("rope_scaling", {"type": "linear", "factor": 2.0}),
        ("rope_parameters", {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}),
        ("hidden_dropout", 0.1),
        ("model_type", "llama"),
    ],
)
def test_config_from_hf_rejects_unsupported(field, value):
    with pytest.raises(
        ValueError,
        match=rf"^ckpt/config\.json: unsupported {field}=.*"
        r"rlft supports GPT-NeoX/Pythia",
    ):
        config_from_hf(PYTHIA_70M_CONFIG | {field: value}, source="ckpt/config.json")


def test_config_from_hf_rejects_inconsistent_rope():
    with pytest.raises(ValueError, match="disagrees with rope_parameters"):
        config_from_hf(PYTHIA_70M_CONFIG | {"rope_parameters": {"rope_theta": 500.0}})


def test_missing_weights_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(PYTHIA_70M_CONFIG))
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*model\.safetensors"):
        load_hf_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither an rlft params directory"):
        load_pretrained(str(tmp_path / "nowhere"))


def _train_tokenizer(path, vocab_size: int) -> int:
    """A tiny byte-level BPE saved as path/tokenizer.json; returns its number of ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["the cat sat on the mat", "a tldr of the post"] * 20, trainer)
    tok.save(os.path.join(path, "tokenizer.json"))
    return tok.get_vocab_size()


def test_load_tokenizer_adds_pad_and_checks_vocab(tmp_path):
    n = _train_tokenizer(str(tmp_path), vocab_size=280)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"vocab_size": n + 3}))  # room to spare, as Pythia has
    tok = load_tokenizer(str(tmp_path))
    assert tok.token_to_id(PAD_TOKEN) == n
    assert tok.decode(tok.encode("the cat").ids) == "the cat"
    assert load_tokenizer(str(tmp_path), vocab_size=n + 1).token_to_id(PAD_TOKEN) == n
    config.write_text(json.dumps({"vocab_size": n}))  # no row left for [PAD]
    want = rf"tokenizer/vocab size: .*tokenizer\.json has {n + 1} tokens.*config\.json is {n}"
    with pytest.raises(ValueError, match=want):
        load_tokenizer(str(tmp_path))


def test_convert_cli_round_trip(tmp_path, capsys):
    model = make_hf_model(5, **SHAPES["h3_rot1.0_sequential"])
    hf_dir, rl_dir, back_dir = (str(tmp_path / n) for n in ("hf", "rlft", "back"))
    model.save_pretrained(hf_dir)
    _train_tokenizer(hf_dir, vocab_size=280)
    assert convert.main(["--from-hf", hf_dir, "--out", rl_dir]) == 0
    assert convert.main(["--to-hf", rl_dir, "--out", back_dir]) == 0
    cfg, params = load_pretrained(hf_dir)
    cfg_rl, params_rl = load_pretrained(rl_dir)
    assert cfg_rl == cfg
    jax.tree.map(np.testing.assert_array_equal, params_rl, params)
    orig, back = read_state_dict(hf_dir), read_state_dict(back_dir)
    assert sorted(orig) == sorted(back)
    for k in orig:
        np.testing.assert_array_equal(back[k], orig[k], err_msg=k)
    back_config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert back_config["eos_token_id"] == model.config.eos_token_id
    assert os.path.exists(os.path.join(back_dir, "tokenizer.json"))
    half_dir = str(tmp_path / "half")
    assert convert.main(["--to-hf", rl_dir, "--out", half_dir, "--dtype", "float16"]) == 0
    half = read_state_dict(half_dir)
    for k in orig:
        np.testing.assert_array_equal(half[k], orig[k].astype(np.float16), err_msg=k)
    # Errors are one clear line and a non-zero status.
    capsys.readouterr()
    assert convert.main(["--from-hf", hf_dir, "--out", rl_dir]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert convert.main(["--to-hf", hf_dir, "--out", str(tmp_path / "x")]) == 1
    assert "neither an rlft params directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse usage error
        convert.main(["--from-hf", hf_dir, "--out", str(tmp_path / "y"), "--dtype", "float16"])
