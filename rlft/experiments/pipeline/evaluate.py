"""What the pipeline does with a trained policy: sample it, score it, evaluate it on held-out
prompts. numpy in, numpy out; the heavy lifting is the jitted sampler and forward passes.

An evaluation (one frontier point) samples the policy twice on the held-out prompts: at T = 1
(`samples_per_prompt` each: the policy itself, for KL(pi || pi_sft), the win rate and gold at
T = 1) and near-greedily (T = `greedy_temperature`, one each: the paper's protocol). KL is the
Monte Carlo mean over the T = 1 samples of sum_t [log pi(y_t) - log pi_sft(y_t)], in nats per
response.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rlft.models import ModelConfig
from rlft.models.params_io import load_params
from rlft.parallel import shard_batch
from rlft.rollout.sampler import generate
from rlft.rollout.scoring import logprob_scores, rm_scores
from rlft.tasks import Task, split_sequences

# Device memory one generate call may give its KV cache and per-step logits, per device. The
# pipeline samples thousands of prompts (labels, K = 25 online samples, evaluation): in one call
# a Pythia-410m cache alone is 55 MB a row in bf16 (2 x 24 layers x 565 slots x 1024 x 2 B).
SAMPLE_BYTES_PER_DEVICE = 2 * 2**30


def prompts_per_call(cfg: ModelConfig, n_devices: int, num_samples: int, length: int) -> int:
    """Prompts per generate call: as many as keep each device's KV cache ([rows, S, D] keys and
    values for every layer, in the compute dtype) plus float32 logits [rows, V] within
    SAMPLE_BYTES_PER_DEVICE, with rows = prompts x num_samples / n_devices; a multiple of
    n_devices (shard_batch's requirement), at least n_devices."""
    itemsize = jnp.dtype(cfg.dtype).itemsize
    row_bytes = 2 * cfg.num_layers * length * cfg.d_model * itemsize + 4 * cfg.vocab_size
    rows = max(1, SAMPLE_BYTES_PER_DEVICE // row_bytes)  # per device
    return max(1, rows // num_samples) * n_devices


def sample(
    cfg: ModelConfig, params, prompts: dict, task: Task, rng, mesh, *, num_samples, temperature
) -> dict[str, np.ndarray]:
    """K responses per prompt (prompt-major rows): tokens, mask, loss_mask, logp [N*K, P+R].

    Prompts are drawn in calls of `prompts_per_call` prompts (the last one padded by repeating
    its last prompt, so every call has one shape and compiles once), call i with the key
    fold_in(rng, i); N prompts that fit one call use `rng` itself.
    """
    n = len(prompts["prompt_tokens"])
    length = prompts["prompt_tokens"].shape[1] + task.response_len
    chunk = prompts_per_call(cfg, mesh.size, num_samples, length)
    if n <= chunk:
        return _sample_call(cfg, params, prompts, task, rng, mesh, num_samples, temperature)
    parts = []
    for i, start in enumerate(range(0, n, chunk)):
        rows = np.minimum(np.arange(start, start + chunk), n - 1)  # pad with the last prompt
        part = {k: np.asarray(v)[rows] for k, v in prompts.items()}
        out = _sample_call(
            cfg, params, part, task, jax.random.fold_in(rng, i), mesh, num_samples, temperature
        )
        keep = min(chunk, n - start) * num_samples
        parts.append({k: v[:keep] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _sample_call(cfg, params, prompts, task, rng, mesh, num_samples, temperature) -> dict:
    p = shard_batch(prompts, mesh)
    with jax.set_mesh(mesh):  # traced under the mesh: rlft.parallel.constrain_batch
        out = generate(
            cfg,
            params,
            p["prompt_tokens"],
            p["prompt_mask"],
            rng,
            max_new_tokens=task.response_len,
            num_samples=num_samples,
            temperature=temperature,
            eos_id=task.eos_id,
            pad_id=task.pad_id,
        )
    out = jax.device_get(out)
    return {"tokens": out.tokens, "mask": out.mask, "loss_mask": out.loss_mask, "logp": out.logp}


def gold_parts(task: Task, arrays: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """The task's verifier on packed sequences: {'reward': [N], other parts ...}."""
    return task.gold_reward_parts(
        *split_sequences(arrays[prefix + "tokens"], arrays[prefix + "mask"], task.prompt_len)
    )


def matched_win_rate(gold_a: np.ndarray, gold_b: np.ndarray) -> float:
    """P(a beats b) on matched samples under the gold verifier, ties counting half."""
    return float(np.mean((gold_a > gold_b) + 0.5 * (gold_a == gold_b)))


def load_policy(workdir: str, cfg: ModelConfig, mesh):
    """The language model of a stage's workdir (role "policy")."""
    return load_params(workdir, "policy", "lm", cfg, mesh)


def rng_key(rng: np.random.Generator):
    """A JAX PRNG key drawn from a numpy generator (the pipeline's streams are numpy)."""
    return jax.random.PRNGKey(int(rng.integers(0, 2**31 - 1)))


@dataclasses.dataclass(frozen=True)
class RewardModel:
    """A trained reward model: params and its class (last | mean | sum | bilinear)."""

    params: object
    model_class: str

    def scores(self, cfg: ModelConfig, arrays: dict, mesh, prefix: str = "") -> np.ndarray:
        """r(x, y) [N] of `prefix`tokens/mask/loss_mask (normalised: reference mean 0)."""
        return rm_scores(cfg, self.params, arrays, mesh, prefix, self.model_class)


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """What every evaluation of one (task, seed) shares: prompts, the SFT reference, its gold."""

    task: Task
    cfg: ModelConfig
    mesh: object
    prompts: dict  # held-out prompts [N, P]
    ref_params: object  # the SFT policy: KL reference and win-rate baseline
    ref_gold: np.ndarray  # SFT gold of T=1 samples [N * samples_per_prompt], same row layout
    ref_gold_greedy: np.ndarray  # SFT gold of near-greedy samples [N]
    samples_per_prompt: int
    greedy_temperature: float
    seed: int


def _mean_parts(parts: dict) -> dict:
    return {k: float(np.mean(v)) for k, v in parts.items() if k != "reward"}


def evaluate(ev: EvalSet, params, rms: dict[str, RewardModel]) -> dict:
    """One frontier point of a policy (without step and selection): gold at T=1 and near-greedy,
    win rates against SFT on matched samples, KL to SFT, and the mean score of every reward
    model in `rms` ({class: score}: a budget's classes share the arms that do not use them)."""
    # The same draws for every policy of a seed: differences come from the policies.
    rng = np.random.default_rng([ev.seed, 0x6576])
    s = sample(
        ev.cfg,
        params,
        ev.prompts,
        ev.task,
        rng_key(rng),
        ev.mesh,
        num_samples=ev.samples_per_prompt,
        temperature=1.0,
    )
    g = sample(
        ev.cfg,
        params,
        ev.prompts,
        ev.task,
        rng_key(rng),
        ev.mesh,
        num_samples=1,
        temperature=ev.greedy_temperature,
    )
    parts, parts_g = gold_parts(ev.task, s), gold_parts(ev.task, g)
    logp_ref = logprob_scores(ev.cfg, ev.ref_params, s, ev.mesh)
    out = {
        "kl_to_ref": float(np.mean(np.sum(s["logp"], axis=-1) - logp_ref)),
        "gold_reward": float(np.mean(parts["reward"])),
        "gold_reward_greedy": float(np.mean(parts_g["reward"])),
        "win_rate_vs_sft": matched_win_rate(parts["reward"], ev.ref_gold),
        "win_rate_vs_sft_greedy": matched_win_rate(parts_g["reward"], ev.ref_gold_greedy),
        "rm_scores": {c: float(np.mean(rm.scores(ev.cfg, s, ev.mesh))) for c, rm in rms.items()},
        "rm_scores_greedy": {
            c: float(np.mean(rm.scores(ev.cfg, g, ev.mesh))) for c, rm in rms.items()
        },
        "gold_parts": _mean_parts(parts),
        "gold_parts_greedy": _mean_parts(parts_g),
    }
    return out
