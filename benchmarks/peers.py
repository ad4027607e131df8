"""rlft against its peers on CPU: transformers `generate` and TRL 1.16's DPO, SFT and reward
trainers, on the same random Pythia-shaped weights, with a matmul FLOP bound from the same run.

    python benchmarks/peers.py [--json=peers.json]      # full size (minutes on 2 cores)
    python benchmarks/peers.py --smoke --json=out.json  # tiny shapes, well under a minute

Needs the `bench` extra (`pip install -e ".[parity,bench]"`: torch, transformers, TRL). Run it
without `--xla_force_host_platform_device_count` so jax sees one CPU device.

Model: `transformers.GPTNeoXForCausalLM`, random init at a fixed torch seed (6 layers, width
128, 4 heads, d_ff 512, vocabulary 50,304, rotary_pct 0.25, parallel residual, exact gelu,
float32), converted with `rlft.models.hf.params_from_hf`: both sides hold the same weights. The
reward model is the same backbone plus a random [D, 1] head (transformers'
`GPTNeoXForSequenceClassification.score`, no bias; rlft's `scalar_head` gets that kernel and a
zero bias). Tokens are drawn uniformly from [2, V); id 0 is EOS and id 1 PAD, so neither
occurs inside a sequence. Nothing is padded: every prompt has P real tokens and every response
L (its last token EOS), so both sides see identical [rows, P + L] inputs and the same token
counts. Torch gets as many intra-op threads as there are cores, the size XLA's CPU pool takes.

Sampling (new tokens/s = B * L / seconds per call): B prompts of P tokens, L new tokens each,
temperature 0.7, no top-k or top-p, no early stop. rlft: `rlft.rollout.sampler.generate`
(one jitted prefill + `lax.while_loop` decode with a KV cache, `eos_id=None`). transformers:
`model.generate(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, min_new_tokens=L,
max_new_tokens=L)`, its default dynamic KV cache and sdpa attention; EOS is masked by
min_new_tokens, so no row stops early.

Train steps (seconds per optimizer step = forward + backward + AdamW update): every step trains
on 2 * pairs rows of P + L tokens: SFT on 2 * pairs demonstrations (loss on the L response
tokens), reward and DPO on `pairs` pairs (chosen and rejected share one forward on both sides;
rlft runs each pair's P prompt columns once, into a KV cache both responses attend over, as its
reward and DPO stages do: `Models.pair_prefix_len`). AdamW (lr 1e-6, betas 0.9/0.999, no weight
decay, grads clipped at global norm 1.0), float32 throughout. rlft: the public
`rlft.train.step.train_step` under `jax.jit` with the state donated (as
`benchmarks/train_step.py` builds it), the numpy batch placed on the device every step and the
step's metrics waited for; DPO either with the reference log-probs computed each step by
`rlft.rollout.scoring.reference_logprobs` (a jitted forward of the frozen reference, chosen and
rejected in one pass, the prompt once) or precomputed (rlft's default: the DPO stage computes
them once and caches them). TRL: `DPOTrainer` / `SFTTrainer` / `RewardTrainer`
`.train(max_steps=...)` on a `datasets.Dataset` with TRL's default collators, its default
optimizer (`adamw_torch_fused`) and linear schedule, with bf16=False and
gradient_checkpointing=False (TRL defaults both on), logging, saving, tqdm and reporting off;
step time is the gap between consecutive `on_step_end` callbacks (so it includes the data loader
and the trainer's per-step bookkeeping). DPO: sigmoid loss, beta 0.05, the reference a deep copy
of the policy passed as `ref_model` and run every step (precompute_ref_log_probs=False, TRL's
default); also precompute_ref_log_probs=True, which TRL computes once before training. DPO needs
text, so a word-level tokenizer over the whole vocabulary ("t<id>" words, "<eos>" 0, "<pad>" 1)
is built on the spot; it maps each token id to one word and back, and TRL appends the EOS
itself. SFT and reward take pre-tokenised columns (`input_ids` + `labels` with -100 on the
prompt; `chosen_ids` / `rejected_ids`).

Timing: after `warmup` untimed calls or steps (compilation, allocator warm-up), `reps` timed
ones; best and median are reported, ratios use the medians (peer time / rlft time, > 1 means
rlft is faster).

FLOP bound: the workload is dominated by the LM head, so an [N, D] x [D, V] float32 matmul is
timed with numpy, jax (jitted) and torch at N = B (one decode step) and N = 2 * pairs * (P + L)
(one training forward); the best GFLOP/s of the three is the achievable rate. FLOPs count
2 * params per forward token and 6 * params per trained token, params being every weight
except the input embedding (a lookup); attention's score/value products (about 4 * T * D per
token per layer, a few percent here) are left out. Sampling counts the prompt tokens through
the body only (both sides project only the last prompt position to the vocabulary) and each
new token through the whole model; DPO with a per-step reference adds 2 * params per token.
The fraction of the bound is (FLOPs / achievable FLOP/s) / measured seconds, for both sides
the workload's FLOPs as counted here, although rlft computes fewer: the LM head only on chunks
holding response tokens, and in the reward and DPO steps each pair's prompt once.
"""

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from rlft.config import OptimConfig
from rlft.models.hf import config_from_hf, params_from_hf
from rlft.objectives import OBJECTIVES
from rlft.objectives.base import Models
from rlft.parallel import batch_sharding, make_mesh, shard_batch
from rlft.rollout.sampler import generate
from rlft.rollout.scoring import pair_prefix_len, reference_logprobs
from rlft.train.state import TrainState, make_optimizer
from rlft.train.step import StepSpec, train_step

EOS, PAD = 0, 1
MATMUL = jax.jit(jnp.matmul)
TEMPERATURE, BETA, LR = 0.7, 0.05, 1e-6


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Model and workload sizes; `FULL` is the issue's, `SMOKE` a seconds-long check."""

    vocab: int = 50304
    layers: int = 6
    width: int = 128
    heads: int = 4
    batch: int = 32  # sampling: prompts per generate call
    prompt: int = 64  # P, prompt tokens (sampling and training)
    response: int = 53  # L, new tokens (sampling) and response tokens (training)
    pairs: int = 8  # preference pairs per DPO / reward step; SFT trains 2 * pairs rows
    warmup: int = 2  # untimed calls / steps
    reps: int = 5  # timed calls / steps


FULL = Shapes()
SMOKE = Shapes(vocab=512, layers=2, width=32, heads=2, batch=4, prompt=8, response=6, pairs=2,
               warmup=1, reps=2)  # fmt: skip


def progress(phase: str) -> None:
    """One line on stderr per phase: a full run takes minutes."""
    print(f"[peers {time.strftime('%H:%M:%S')}] {phase}", file=sys.stderr, flush=True)


def stats(seconds: list[float]) -> dict[str, float]:
    """{'best', 'median'} seconds of a list of timings."""
    return {"best": min(seconds), "median": statistics.median(seconds)}


def time_calls(fn: Callable[[], object], warmup: int, reps: int) -> dict[str, float]:
    """Seconds per call of `fn` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return stats(seconds)


# ---------------------------------------------------------------- models, tokenizer, data


def build_models(s: Shapes):
    """(hf_lm, hf_rm, rlft cfg, lm params, rm params, matmul params of lm and rm)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

    hf_cfg = GPTNeoXConfig(
        vocab_size=s.vocab,
        hidden_size=s.width,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        intermediate_size=4 * s.width,
        rotary_pct=0.25,
        use_parallel_residual=True,
        hidden_act="gelu",
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        num_labels=1,
        architectures=["GPTNeoXForCausalLM"],
    )
    torch.manual_seed(0)
    hf_lm = GPTNeoXForCausalLM(hf_cfg).float().eval()
    hf_rm = GPTNeoXForSequenceClassification(hf_cfg).float().eval()
    hf_rm.gpt_neox.load_state_dict(hf_lm.gpt_neox.state_dict())
    cfg = config_from_hf(hf_cfg.to_dict())
    sd = {k: v.detach().numpy() for k, v in hf_lm.state_dict().items()}
    lm = params_from_hf(sd, cfg)
    score_D = hf_rm.score.weight.detach().numpy()[0]
    rm = {
        "backbone": lm["backbone"],
        "scalar_head": {"kernel": score_D[:, None].copy(), "bias": np.zeros(1, np.float32)},
    }
    embed = s.vocab * s.width
    n_lm = sum(p.numel() for p in hf_lm.parameters()) - embed
    n_rm = sum(p.numel() for p in hf_rm.parameters()) - embed
    return hf_lm, hf_rm, cfg, lm, rm, n_lm, n_rm


def build_tokenizer(vocab: int):
    """A word-level tokenizer mapping token id i to the word "t<i>" (0 "<eos>", 1 "<pad>")."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<eos>": EOS, "<pad>": PAD} | {f"t{i}": i for i in range(2, vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<eos>", "<pad>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def make_data(s: Shapes) -> dict[str, np.ndarray]:
    """Prompts [B, P] for sampling; prompt [pairs, P], chosen and rejected [pairs, L] (EOS last)."""
    rng = np.random.default_rng(0)

    def draw(*shape):
        return rng.integers(2, s.vocab, shape).astype(np.int32)

    def response():
        return np.concatenate([draw(s.pairs, s.response - 1), np.full((s.pairs, 1), EOS)], -1)

    return {
        "sample_prompt": draw(s.batch, s.prompt),
        "prompt": draw(s.pairs, s.prompt),
        "chosen": response().astype(np.int32),
        "rejected": response().astype(np.int32),
    }


def rlft_batches(s: Shapes, d: dict) -> dict[str, dict[str, np.ndarray]]:
    """rlft's batch layouts: sft (2 * pairs rows), pairs for reward and DPO."""

    def seqs(resp_BxL):
        tokens = np.concatenate([d["prompt"], resp_BxL], -1)
        loss_mask = np.zeros(tokens.shape, bool)
        loss_mask[:, s.prompt :] = True
        return {"tokens": tokens, "mask": np.ones(tokens.shape, bool), "loss_mask": loss_mask}

    chosen, rejected = seqs(d["chosen"]), seqs(d["rejected"])
    pairs = {f"{side}_{k}": v for side, x in (("chosen", chosen), ("rejected", rejected))
             for k, v in x.items()}  # fmt: skip
    sft = {k: np.concatenate([chosen[k], rejected[k]]) for k in chosen}
    return {"sft": sft, "pairs": pairs}


def weights_check(hf_lm, hf_rm, cfg, lm, rm, sft: dict) -> dict[str, float]:
    """Max |rlft - transformers| of LM logits and reward-model scores on the SFT batch."""
    import torch

    from rlft.models import lm_logits, scalar_values

    tokens = torch.from_numpy(sft["tokens"].astype(np.int64))
    with torch.no_grad():
        hf_logits = hf_lm(input_ids=tokens).logits.numpy()
        hf_reward = hf_rm(input_ids=tokens).logits.numpy()[:, 0]
    logits = np.asarray(jax.jit(lm_logits, static_argnums=0)(cfg, lm, sft["tokens"], sft["mask"]))
    values = jax.jit(scalar_values, static_argnums=0)(cfg, rm, sft["tokens"], sft["mask"])
    return {
        "lm_logits_max_abs_diff": float(np.abs(logits - hf_logits).max()),
        "reward_max_abs_diff": float(np.abs(np.asarray(values)[:, -1] - hf_reward).max()),
    }


# ---------------------------------------------------------------- FLOP bound


def matmul_rates(n_rows: dict[str, int], d: int, v: int, warmup: int, reps: int) -> dict:
    """Achievable GFLOP/s of an [N, D] x [D, V] float32 matmul, per N and library, and the best."""
    import torch

    out = {}
    for name, n in n_rows.items():
        rng = np.random.default_rng(1)
        x, w = rng.standard_normal((n, d), np.float32), rng.standard_normal((d, v), np.float32)
        xj, wj, xt, wt = jnp.asarray(x), jnp.asarray(w), torch.from_numpy(x), torch.from_numpy(w)
        fns = {
            "numpy": lambda x=x, w=w: x @ w,
            "jax": lambda xj=xj, wj=wj: MATMUL(xj, wj).block_until_ready(),
            "torch": lambda xt=xt, wt=wt: torch.matmul(xt, wt),
        }
        flops = 2 * n * d * v
        rates = {k: flops / time_calls(f, warmup, reps)["best"] / 1e9 for k, f in fns.items()}
        out[name] = {"rows": n, "gflops": rates, "best_gflops": max(rates.values())}
    return out


# ---------------------------------------------------------------- sampling


def bench_sampling(s: Shapes, hf_lm, cfg, params, prompt_BxP) -> dict:
    """Seconds per generate call and new tokens/s of rlft and transformers."""
    import torch

    mask_BxP = jnp.ones(prompt_BxP.shape, bool)
    prompt_j, rng = jnp.asarray(prompt_BxP), jax.random.key(0)

    def rlft_call():
        out = generate(cfg, params, prompt_j, mask_BxP, rng, max_new_tokens=s.response,
                       temperature=TEMPERATURE, eos_id=None, pad_id=PAD)  # fmt: skip
        jax.block_until_ready(out.tokens)

    prompt_t = torch.from_numpy(prompt_BxP.astype(np.int64))
    attn_t = torch.ones_like(prompt_t)

    def hf_call():
        hf_lm.generate(input_ids=prompt_t, attention_mask=attn_t, do_sample=True,
                       temperature=TEMPERATURE, top_k=0, top_p=1.0, min_new_tokens=s.response,
                       max_new_tokens=s.response, pad_token_id=PAD)  # fmt: skip

    out = {}
    for name, fn in (("rlft", rlft_call), ("transformers", hf_call)):
        t = time_calls(fn, s.warmup, s.reps)
        out[name] = {"seconds": t, "new_tokens_per_s": s.batch * s.response / t["median"]}
    return out


# ---------------------------------------------------------------- rlft train steps


def rlft_steps(s: Shapes, cfg, lm, rm, batches) -> dict:
    """Seconds per rlft train step: sft, reward, dpo (reference each step), dpo_precomputed."""
    mesh = make_mesh(-1, 1)
    replicated = NamedSharding(mesh, PartitionSpec())
    tx, schedule = make_optimizer(OptimConfig(learning_rate=LR, schedule="linear"), 1000)
    ref = jax.device_put(lm)
    ref_logp = reference_logprobs(cfg, ref, batches["pairs"], s.pairs, mesh, 1.0)
    cases = {
        "sft": ("sft", {"policy": lm}, batches["sft"], None),
        "reward": ("reward", {"reward": rm}, batches["pairs"], None),
        "dpo": ("dpo", {"policy": lm}, batches["pairs"], "each_step"),
        "dpo_precomputed": ("dpo", {"policy": lm}, {**batches["pairs"], **ref_logp}, None),
    }
    out = {}
    for name, (objective, params, batch, ref_mode) in cases.items():
        _, hp_cls, roles = OBJECTIVES[objective]
        hp = hp_cls(beta=BETA) if objective == "dpo" else hp_cls()
        # The pairs' shared prompt columns run once, as rlft's reward and DPO stages set it.
        prefix = pair_prefix_len(batch) if objective != "sft" else 0
        models = Models(**{r: cfg for r in roles}, pair_prefix_len=prefix)
        spec = StepSpec(objective, models, hp, tx, schedule)
        # Replicated in and out (one device), so the donated output state is the next input
        # as is and the step compiles once, as in rlft's driver loop.
        fn = jax.jit(
            lambda st, b, spec=spec: train_step(st, b, spec=spec),
            in_shardings=(replicated, batch_sharding(mesh)),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        )
        state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.PRNGKey(0))
        state = [jax.device_put(jax.tree.map(jnp.array, state), replicated)]

        def step(batch=batch, ref_mode=ref_mode, fn=fn, state=state):
            if ref_mode == "each_step":
                batch = {**batch, **reference_logprobs(cfg, ref, batch, s.pairs, mesh, 1.0)}
            state[0], metrics = fn(state[0], shard_batch(batch, mesh))
            jax.block_until_ready(metrics)

        out[name] = time_calls(step, s.warmup, s.reps)
    return out


# ---------------------------------------------------------------- TRL train steps


def _trl_args(config_cls, s: Shapes, rows: int, **extra):
    return config_cls(
        output_dir=tempfile.mkdtemp(prefix="rlft-peers-"),  # nothing is saved there
        per_device_train_batch_size=rows,
        max_steps=s.warmup + s.reps,
        learning_rate=LR,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        **extra,
    )


def trl_steps(s: Shapes, hf_lm, hf_rm, tokenizer, d: dict, rlft: dict) -> dict:
    """Seconds per TRL step: SFTTrainer, RewardTrainer, DPOTrainer (reference every step, and
    precomputed), from the gaps between consecutive `on_step_end` callbacks. `rlft` holds
    rlft's batches, which each trainer's first collated batch must equal."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    class Stamps(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    def words(ids):
        return " ".join("<eos>" if i == EOS else f"t{i}" for i in ids)

    prompt, chosen, rejected = d["prompt"].tolist(), d["chosen"].tolist(), d["rejected"].tolist()
    sft_rows = [(p, r) for p, r in zip(prompt, chosen, strict=True)]
    sft_rows += [(p, r) for p, r in zip(prompt, rejected, strict=True)]
    data = {
        "sft": Dataset.from_dict(
            {
                "input_ids": [p + r for p, r in sft_rows],
                "labels": [[-100] * len(p) + r for p, r in sft_rows],
            }
        ),
        "reward": Dataset.from_dict(
            {
                "chosen_ids": [p + c for p, c in zip(prompt, chosen, strict=True)],
                "rejected_ids": [p + r for p, r in zip(prompt, rejected, strict=True)],
            }
        ),
        "dpo": Dataset.from_dict(
            {  # TRL appends the EOS to each response itself
                "prompt": [words(p) for p in prompt],
                "chosen": [" " + words(c[:-1]) for c in chosen],
                "rejected": [" " + words(r[:-1]) for r in rejected],
            }
        ),
    }
    pair_rows = np.concatenate([rlft["pairs"]["chosen_tokens"], rlft["pairs"]["rejected_tokens"]])
    expected = {"sft": rlft["sft"]["tokens"], "reward": pair_rows, "dpo": pair_rows}
    dpo_kw = dict(beta=BETA, loss_type=["sigmoid"])
    cases = {
        "sft": (SFTTrainer, SFTConfig, hf_lm, "sft", 2 * s.pairs, {}, {}),
        "reward": (RewardTrainer, RewardConfig, hf_rm, "reward", s.pairs, {}, {}),
        "dpo": (DPOTrainer, DPOConfig, hf_lm, "dpo", s.pairs, dpo_kw, {"ref": True}),
        "dpo_precomputed": (DPOTrainer, DPOConfig, hf_lm, "dpo", s.pairs,
                            {**dpo_kw, "precompute_ref_log_probs": True}, {}),
    }  # fmt: skip
    out = {}
    for name, (trainer_cls, config_cls, model, data_key, rows, extra, opts) in cases.items():
        model = copy.deepcopy(model).train()
        kw = {"ref_model": copy.deepcopy(model).eval()} if opts.get("ref") else {}
        stamps = Stamps()
        trainer = trainer_cls(
            model=model,
            args=_trl_args(config_cls, s, rows, **extra),
            train_dataset=data[data_key],
            processing_class=tokenizer,
            callbacks=[stamps],
            **kw,
        )
        check_trl_batch(trainer, name, expected[data_key])
        trainer.train()
        gaps = np.diff(stamps.times)[s.warmup - 1 :].tolist()
        out[name] = stats(gaps)
    return out


def check_trl_batch(trainer, name: str, expected_NxT: np.ndarray) -> None:
    """Raise unless TRL's collated batch holds exactly rlft's rows (in any order), unpadded."""
    batch = next(iter(trainer.get_train_dataloader()))
    rows = sorted(map(tuple, batch["input_ids"].tolist()))
    if rows != sorted(map(tuple, expected_NxT.tolist())) or not bool(batch["attention_mask"].all()):
        raise RuntimeError(
            f"TRL {name}: the collated batch {tuple(batch['input_ids'].shape)} is not rlft's "
            f"{expected_NxT.shape} token rows unpadded"
        )


# ---------------------------------------------------------------- report


def run_record(started: float) -> dict:
    """When and on what code the run was made: UTC start, wall seconds, the rlft source hash
    (`code_version`) and the git commit of the checkout rlft was imported from (None outside
    one), so a record can be matched to the library it measured."""
    import subprocess

    import rlft

    try:
        from rlft.train.workdir import code_version
    except ImportError:  # an rlft from before code_version (a "before" run on PYTHONPATH)
        code_version = None  # noqa: N806

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(rlft.__file__)),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "utc_start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "rlft_code": code_version() if code_version else None,
        "rlft_git_commit": commit,
    }


def report(s: Shapes, rates: dict, sampling: dict, rlft: dict, trl: dict, n_lm: int, n_rm: int):
    """The JSON record: figures, ratios (peer / rlft medians) and fractions of the FLOP bound."""
    tokens = 2 * s.pairs * (s.prompt + s.response)
    head = s.width * s.vocab  # LM head weights (no bias)
    sample_flops = 2 * (n_lm - head) * s.batch * s.prompt + 2 * n_lm * s.batch * s.response
    step_flops = {
        "sft": 6 * n_lm * tokens,
        "reward": 6 * n_rm * tokens,
        "dpo": 8 * n_lm * tokens,
        "dpo_precomputed": 6 * n_lm * tokens,
    }
    decode_rate = rates["decode"]["best_gflops"] * 1e9
    train_rate = rates["train"]["best_gflops"] * 1e9

    def frac(flops, rate, seconds):
        return flops / rate / seconds

    samp = {
        name: {**v, "fraction_of_bound": frac(sample_flops, decode_rate, v["seconds"]["median"])}
        for name, v in sampling.items()
    }
    steps = {}
    for side, table in (("rlft", rlft), ("trl", trl)):
        for name, t in table.items():
            steps.setdefault(name, {})[side] = {
                "seconds": t,
                "fraction_of_bound": frac(step_flops[name], train_rate, t["median"]),
            }
    ratios = {
        "sampling_rlft_over_transformers_tokens_per_s": samp["rlft"]["new_tokens_per_s"]
        / samp["transformers"]["new_tokens_per_s"],
        **{f"{n}_trl_over_rlft_seconds": trl[n]["median"] / rlft[n]["median"] for n in trl},
        "dpo_trl_over_rlft_precomputed_seconds": trl["dpo"]["median"]
        / rlft["dpo_precomputed"]["median"],
    }
    return {
        "shapes": dataclasses.asdict(s),
        "params": {"lm_without_input_embedding": n_lm, "rm_without_input_embedding": n_rm},
        "tokens_per_train_step": tokens,
        "flops": {"sampling_call": sample_flops, "train_step": step_flops},
        "matmul_bound": rates,
        "sampling": samp,
        "train_steps": steps,
        "ratios": ratios,
        "machine": machine(),
    }


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's machine type."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.machine()


def machine() -> dict:
    import torch
    import transformers
    import trl

    return {
        "cpu": cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "jax_backend": jax.default_backend(),
        "jax_devices": jax.device_count(),
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
    }


def print_report(r: dict) -> None:
    """Human-readable lines: each figure, its fraction of the bound, each ratio."""
    for name, v in r["matmul_bound"].items():
        libs = " ".join(f"{k} {g:.1f}" for k, g in v["gflops"].items())
        best = v["best_gflops"]
        print(f"matmul bound {name:6s} N={v['rows']:5d}: {libs} GFLOP/s (best {best:.1f})")
    for name, v in r["sampling"].items():
        ms, frac = v["seconds"]["median"] * 1e3, v["fraction_of_bound"]
        rate = v["new_tokens_per_s"]
        print(
            f"sampling {name:12s} {rate:9.0f} new tokens/s ({ms:.1f} ms/call, {frac:.1%} of bound)"
        )
    for name, sides in r["train_steps"].items():
        for side, v in sides.items():
            med, best = v["seconds"]["median"] * 1e3, v["seconds"]["best"] * 1e3
            frac = v["fraction_of_bound"]
            print(
                f"step {name:15s} {side:4s} {med:9.1f} ms median {best:9.1f} ms best ({frac:.1%})"
            )
    for name, v in r["ratios"].items():
        print(f"ratio {name:45s} {v:6.2f}x")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, for tests")
    parser.add_argument("--json", default=None, help="write the JSON record to this file")
    args = parser.parse_args(argv)
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    if jax.device_count() != 1:
        parser.error(
            f"jax sees {jax.device_count()} devices; run without "
            "--xla_force_host_platform_device_count (XLA_FLAGS) so it sees one CPU device."
        )
    s = SMOKE if args.smoke else FULL
    started = time.time()
    hf_lm, hf_rm, cfg, lm, rm, n_lm, n_rm = build_models(s)
    d = make_data(s)
    batches = rlft_batches(s, d)
    same = weights_check(hf_lm, hf_rm, cfg, lm, rm, batches["sft"])
    tokens = 2 * s.pairs * (s.prompt + s.response)
    progress("matmul bound")
    rates = matmul_rates({"decode": s.batch, "train": tokens}, s.width, s.vocab, 2, s.reps + 1)
    progress("sampling")
    sampling = bench_sampling(s, hf_lm, cfg, lm, d["sample_prompt"])
    progress("rlft train steps")
    rlft = rlft_steps(s, cfg, lm, rm, batches)
    progress("TRL train steps")
    trl = trl_steps(s, hf_lm, hf_rm, build_tokenizer(s.vocab), d, batches)
    r = report(s, rates, sampling, rlft, trl, n_lm, n_rm) | {"same_weights": same}
    r["run"] = run_record(started)
    print_report(r)
    text = json.dumps(r, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return r


if __name__ == "__main__":
    main()
