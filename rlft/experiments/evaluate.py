"""`rlft eval`: a trained policy judged against a reference on held-out prompts.

The policy samples K responses per prompt (rlft.experiments.sample). The reference is either
another policy (`--reference=WORKDIR`, e.g. the SFT stage), sampled on the same prompts with the
same random keys, so a policy judged against itself draws the same responses; or fixed
responses (`--reference_responses=FILE`, one per prompt, paired with each of the K samples).

Judges (`--judge=KIND:ARG`), each small and looked up in JUDGES:

    reward:RM_WORKDIR  the reward model of a reward stage scores every response
    gold:TASK          a task's programmatic verifier scores every response; `synthetic` is the
                       tiny configs' default data task (rlft.data.synthetic), any other name one
                       of rlft.tasks.TASKS with its default knobs. Without --prompts, held-out
                       prompts come from the task.
    file:JUDGMENTS     pairwise judgments made elsewhere (rlft.data.judges' file format)

A scoring judge compares the two responses of an item by score: p_policy = 1 (policy higher),
0.5 (equal), 0. The win rate is the mean of p_policy over the N*K items (ties half), with the
95% Wilson score interval (`wilson_interval`). KL(pi || pi_ref) is the Monte Carlo mean over the
policy's samples of sum_t [log pi(y_t | ...) - log pi_ref(y_t | ...)] in nats per response.
"""

import dataclasses
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from rlft.data.arrays import pack_sequences
from rlft.data.jsonl import jsonl_rows
from rlft.data.judges import JudgmentsFileJudge
from rlft.data.synthetic import SyntheticConfig, gold_reward, make_datasets
from rlft.experiments.sample import InputError, Policy, responses, sample_policy
from rlft.rollout.scoring import load_reward_model, logprob_scores, reward_model_config, rm_scores
from rlft.tasks import TASKS, make_task

Z975 = 1.959964  # the standard normal's 0.975 quantile
HELD_OUT_SEED = 1_000_003  # synthetic prompts: data.seed + this + --seed, not the training draws


def wilson_interval(p_policy_N: np.ndarray) -> tuple[float, float, float]:
    """(win rate, lo, hi): the mean of p_policy [N] (ties 0.5) and its 95% Wilson score interval.

    Wilson (1927), "Probable inference, the law of succession, and statistical inference", JASA
    22: with p = mean, n = N, z = 1.959964,
        centre = (p + z^2 / 2n) / (1 + z^2 / n),
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2).
    A tie counts as half a win in p (its exact coverage is then approximate). Raises ValueError
    on no items or values outside [0, 1].
    """
    p_N = np.asarray(p_policy_N, np.float64)
    if p_N.size == 0 or not np.all((p_N >= 0) & (p_N <= 1)):
        raise ValueError(f"need one or more judgments in [0, 1]; got {p_N.size} items")
    n, p, z2 = p_N.size, float(p_N.mean()), Z975**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z975 / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return p, centre - half, centre + half


def p_policy_from_scores(policy_N: np.ndarray, reference_N: np.ndarray) -> np.ndarray:
    """1 where the policy's score is higher, 0.5 where equal, 0 where lower; [N] float64."""
    return (np.sign(np.asarray(policy_N) - np.asarray(reference_N)) + 1) / 2


# Judges ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScoreJudge:
    """A judge that scores each (prompt, response): (prompts, responses) -> scores [N]."""

    spec: str
    score: Callable[[list, list], np.ndarray]
    task_prompts: Callable[[int, int], list[list[int]]] | None = None  # (n, seed) -> prompts


@dataclasses.dataclass(frozen=True)
class FileJudge:
    """Pairwise judgments from a file, looked up by item id."""

    spec: str
    judgments: JudgmentsFileJudge


def _reward_judge(arg: str, policy: Policy) -> ScoreJudge:
    cfg = reward_model_config(arg)
    params, model_class = load_reward_model(arg, cfg, policy.mesh)

    def score(prompts, resps):
        p, r = max(map(len, prompts)), max(map(len, resps))
        seq = pack_sequences(prompts, resps, p, r, policy.pad_id)
        return rm_scores(cfg, params, seq, policy.mesh, model_class=model_class)

    return ScoreJudge(f"reward:{arg}", score)


def _synthetic_judge(policy: Policy) -> ScoreJudge:
    """The default data task's verifier (gold_reward: the share of the ideal response matched)."""
    if policy.data.get("source", "synthetic") != "synthetic":
        raise InputError(
            f"--judge=gold:synthetic: {policy.workdir} was trained on {policy.data['source']} "
            "data, not the synthetic task"
        )
    cfg = SyntheticConfig(**{k: v for k, v in policy.data.items() if k != "source"})

    def prompts(n: int, seed: int) -> list[list[int]]:
        held_out = dataclasses.replace(cfg, num_examples=n, seed=cfg.seed + HELD_OUT_SEED + seed)
        p = make_datasets(held_out)["prompts"]
        return [t[m].tolist() for t, m in zip(p["prompt_tokens"], p["prompt_mask"], strict=True)]

    def score(ps, rs):
        return np.array([gold_reward(p, r) for p, r in zip(ps, rs, strict=True)])

    return ScoreJudge("gold:synthetic", score, prompts)


def _gold_judge(arg: str, policy: Policy) -> ScoreJudge:
    if arg == "synthetic":
        return _synthetic_judge(policy)
    if arg not in TASKS:
        raise InputError(
            f"--judge=gold:{arg}: unknown task; choose synthetic or one of {list(TASKS)}"
        )
    try:
        task = make_task(arg)
    except (TypeError, ValueError) as e:
        raise InputError(
            f"--judge=gold:{arg}: the task does not build with its defaults ({e})"
        ) from e
    if task.vocab_size > policy.cfg.vocab_size:
        raise InputError(
            f"--judge=gold:{arg}: the task's vocabulary ({task.vocab_size}) exceeds the "
            f"policy's ({policy.cfg.vocab_size}); was the policy trained on this task?"
        )

    def prompts(n: int, seed: int) -> list[list[int]]:
        return task.sample_eval_prompts(n, np.random.default_rng(seed))

    return ScoreJudge(f"gold:{arg}", lambda ps, rs: task.score(ps, rs), prompts)


def _file_judge(arg: str, policy: Policy) -> FileJudge:
    if not os.path.isfile(arg):
        raise InputError(f"--judge=file:{arg}: no such file")
    try:
        return FileJudge(f"file:{arg}", JudgmentsFileJudge(arg))
    except ValueError as e:
        raise InputError(str(e)) from e


JUDGES = {"reward": _reward_judge, "gold": _gold_judge, "file": _file_judge}


def make_judge(spec: str, policy: Policy) -> ScoreJudge | FileJudge:
    """The judge `KIND:ARG` names (module docstring); raises InputError for a bad spec."""
    kind, _, arg = spec.partition(":")
    if kind not in JUDGES or not arg:
        raise InputError(f"--judge={spec}: expected reward:RM_WORKDIR, gold:TASK or file:JUDGMENTS")
    return JUDGES[kind](arg, policy)


def item_ids(prompt_ids: Sequence[str], k: int) -> list[str]:
    """The id of each judged item, prompt-major: the prompt's id, or `id:k` when K > 1."""
    return [p if k == 1 else f"{p}:{j}" for p in prompt_ids for j in range(k)]


# Reference responses ---------------------------------------------------------------------


def read_reference_responses(path: str, prompt_ids: Sequence[str], policy: Policy) -> list:
    """One reference response (token ids) per prompt, in the prompts' order, from JSONL rows
    with `response` (text; its EOS is appended) or `response_ids` (taken as they are, EOS
    included if the response has one) and optionally `id` (must match the prompt's). Raises
    InputError naming the file, row and field."""
    if not os.path.isfile(path):
        raise InputError(f"--reference_responses={path}: no such file")
    rows = list(jsonl_rows(path, '{"response": "TEXT"} or {"response_ids": [9, 4, 2]}', InputError))
    if len(rows) != len(prompt_ids):
        raise InputError(f"{path}: {len(rows)} responses for {len(prompt_ids)} prompts")
    out = []
    for (line_no, obj), pid in zip(rows, prompt_ids, strict=True):
        where = f"{path}:{line_no}"
        if ("response" in obj) == ("response_ids" in obj):
            raise InputError(f"{where}: expected an object with one of 'response', 'response_ids'")
        if "id" in obj and obj["id"] != pid:
            raise InputError(f"{where}: field 'id' is {obj['id']!r}; the prompt's is {pid!r}")
        if "response" in obj:
            if policy.tokenizer is None or not isinstance(obj["response"], str):
                raise InputError(f"{where}: field 'response' needs text and a tokenizer")
            out.append(policy.tokenizer.encode(obj["response"]) + [policy.eos_id])
            continue
        ids = obj["response_ids"]
        if not isinstance(ids, list) or not ids or not all(type(t) is int for t in ids):
            raise InputError(f"{where}: field 'response_ids' must be a non-empty list of integers")
        if not all(0 <= t < policy.cfg.vocab_size for t in ids):
            raise InputError(f"{where}: field 'response_ids' has a token outside the vocabulary")
        out.append(ids)
    return out


# The evaluation --------------------------------------------------------------------------


def _lengths(length_N: np.ndarray) -> dict:
    x = np.asarray(length_N, np.float64)
    return {"mean": float(x.mean()), "median": float(np.median(x)), "min": int(x.min()),
            "max": int(x.max())}  # fmt: skip


def _mean_stderr(x_N: np.ndarray) -> dict:
    x = np.asarray(x_N, np.float64)
    stderr = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return {"mean": float(x.mean()), "stderr": stderr}


def _reference_side(reference, reference_responses, prompts, samples, settings, policy) -> dict:
    """Responses [N], lengths [N], finished [N] and, for a reference policy, KL per sample [N]."""
    k = settings["num_samples"]
    if reference is None:
        resp = [reference_responses[n // k] for n in range(len(prompts) * k)]
        length = np.array([len(r) for r in resp])
        finished = np.array([r[-1] == policy.eos_id for r in resp])
        return {"responses": resp, "length": length, "finished": finished, "kl": None}
    if reference.cfg.vocab_size != policy.cfg.vocab_size or reference.eos_id != policy.eos_id:
        raise InputError(
            f"--reference={reference.workdir}: its vocabulary or EOS differs from the policy's "
            f"({reference.cfg.vocab_size} vs {policy.cfg.vocab_size} tokens)"
        )
    r = sample_policy(reference, prompts, **settings)  # the same keys: the same draws
    seq = {key: samples[key] for key in ("tokens", "mask", "loss_mask")}
    temperature = settings["temperature"] or 1.0  # greedy samples report T = 1 log-probs
    ref_logp_N = logprob_scores(
        reference.cfg, reference.params, seq, reference.mesh, temperature=temperature
    )
    return {
        "responses": responses(r),
        "length": r["length"],
        "finished": r["finished"],
        "kl": samples["logp_sum"] - ref_logp_N,
    }


def evaluate(
    policy: Policy,
    judge: ScoreJudge | FileJudge,
    prompt_ids: list[str],
    prompts: list[list[int]],
    settings: dict,
    reference: Policy | None = None,
    reference_responses: list[list[int]] | None = None,
) -> dict:
    """The eval.json record (fields in docs/eval.md) of `policy` on `prompts` against exactly one
    of `reference` (a policy) and `reference_responses` (token ids, one per prompt). `settings`:
    sample_policy's keywords. Raises InputError for judgments missing an item or a reference
    that does not fit the policy."""
    if (reference is None) == (reference_responses is None):
        raise InputError("give exactly one of --reference and --reference_responses")
    k, scores = settings["num_samples"], None
    if isinstance(judge, FileJudge):  # before sampling: a missing judgment fails at once
        try:
            p_policy_N = judge.judgments(item_ids(prompt_ids, k))
        except KeyError as e:
            raise InputError(f"--judge={judge.spec}: {e.args[0]}") from None
    samples = sample_policy(policy, prompts, **settings)
    ref = _reference_side(reference, reference_responses, prompts, samples, settings, policy)
    pol_resp = responses(samples)
    if not isinstance(judge, FileJudge):
        prompts_N = [prompts[n // k] for n in range(len(prompts) * k)]
        scores = {
            "policy": judge.score(prompts_N, pol_resp),
            "reference": judge.score(prompts_N, ref["responses"]),
        }
        p_policy_N = p_policy_from_scores(scores["policy"], scores["reference"])
    rate, lo, hi = wilson_interval(p_policy_N)
    return {
        "policy": {"workdir": policy.workdir, "step": policy.step},
        "reference": (
            {"workdir": reference.workdir, "step": reference.step}
            if reference is not None
            else {"responses": "file"}
        ),
        "judge": judge.spec,
        "num_prompts": len(prompts),
        "settings": dict(settings),
        "win_rate": {
            "value": rate,
            "lo": lo,
            "hi": hi,
            "interval": "wilson_95",
            "n": int(p_policy_N.size),
            "wins": int((p_policy_N > 0.5).sum()),
            "ties": int((p_policy_N == 0.5).sum()),
            "losses": int((p_policy_N < 0.5).sum()),
        },  # fmt: skip
        "judge_score": None
        if scores is None
        else {side: _mean_stderr(s) for side, s in scores.items()},
        "kl_to_reference": None if ref["kl"] is None else _mean_stderr(ref["kl"]),
        "length": {"policy": _lengths(samples["length"]), "reference": _lengths(ref["length"])},
        "no_eos_share": {
            "policy": float(np.mean(~samples["finished"])),
            "reference": float(np.mean(~np.asarray(ref["finished"], bool))),
        },
    }


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def format_table(result: dict) -> str:
    """The eval record as a small text table (policy vs reference)."""
    w, s, kl = result["win_rate"], result["judge_score"], result["kl_to_reference"]
    sides = ("policy", "reference")
    rows = [
        ("win rate vs reference (ties half)", _fmt(w["value"]), ""),
        ("  95% Wilson interval", f"[{_fmt(w['lo'])}, {_fmt(w['hi'])}]", ""),
        ("  items (wins / ties / losses)", f"{w['n']} ({w['wins']}/{w['ties']}/{w['losses']})", ""),
        ("mean judge score", _fmt(s and s["policy"]["mean"]), _fmt(s and s["reference"]["mean"])),
        ("KL to reference (nats/response)", _fmt(kl and kl["mean"]), ""),
        ("mean length (tokens, incl. EOS)", *(_fmt(result["length"][k]["mean"]) for k in sides)),
        ("share without EOS", *(_fmt(result["no_eos_share"][k]) for k in sides)),
    ]  # fmt: skip
    rows.insert(
        0, (f"judge {result['judge']}, {result['num_prompts']} prompts", "policy", "reference")
    )
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>16}  {c:>10}" for a, b, c in rows)
