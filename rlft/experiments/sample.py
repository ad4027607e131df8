"""`rlft sample`: completions of a trained policy, read from its `rlft train` workdir.

The policy is the newest checkpoint step of the workdir that restores (a step that does not is
reported on stderr and skipped, never moved or deleted: sampling only reads the workdir); its
model config is the one that checkpoint's meta records. EOS and PAD ids and the tokenizer come
from the data section the run recorded (`meta["resolved"]`, else `run_config.json`): the
synthetic task's ids, or the tokenizer's of a tldr or files source; `--tokenizer` overrides it.

Prompts file (JSONL, one object a line, blank lines skipped):

    {"prompt": "SUBREDDIT: r/cats ... TL;DR:"}      # text: needs a tokenizer
    {"id": "p7", "prompt_ids": [5, 9, 12, 2]}        # token ids, each in [0, vocab_size)

Exactly one of `prompt` / `prompt_ids` a line; `id` (a string) is optional and defaults to the
row number. Prompts are left-padded to the longest one, as `rollout.sampler.generate` requires.
Output rows (one per sample, prompt-major, K per prompt) are documented in docs/eval.md.
"""

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from rlft.data.arrays import pack_prompts
from rlft.data.jsonl import jsonl_rows
from rlft.data.synthetic import EOS, PAD
from rlft.errors import CheckpointError
from rlft.models import ModelConfig
from rlft.models.hf_files import load_tokenizer
from rlft.models.params_io import checkpoint_dir, load_params, read_meta, reading_manager
from rlft.parallel import make_mesh
from rlft.rollout.sampler import generate
from rlft.train.checkpoint import newest_good
from rlft.train.workdir import CONFIG_FILE

SAMPLE_BATCH = 64  # prompts per generate call; the last batch is padded to it (one compile)
PROMPT_EXAMPLE = '{"prompt": "TEXT"} or {"id": "p7", "prompt_ids": [5, 9, 12, 2]}'


class InputError(ValueError):
    """A bad input file or flag value: the message names the file, row and field (exit 2)."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """A trained language model and what decoding it needs."""

    workdir: str
    step: int  # the checkpoint step restored
    cfg: ModelConfig
    params: Any  # LanguageModel params on `mesh`
    eos_id: int
    pad_id: int
    tokenizer: Any  # rlft.data.tldr.format.TextTokenizer, or None (token ids only)
    mesh: Any
    data: dict  # the run's recorded (resolved) data section; {} if it recorded none


def one_device_mesh():
    """Sampling and scoring run on one device: any batch size fits it."""
    return make_mesh(1, 1, jax.devices()[:1])


def _manager(workdir: str) -> ocp.CheckpointManager:
    path = checkpoint_dir(workdir)
    if not epath.Path(path).exists():
        raise CheckpointError(
            f"no checkpoint under {path}: point --workdir at an `rlft train` workdir "
            "(e.g. rlft train --config=configs/sft.py:tiny --workdir=runs/sft_tiny)"
        )
    return reading_manager(workdir)


def _restore_step(workdir: str, step: int, role: str, mesh) -> tuple[int, ModelConfig, Any, dict]:
    """(step, cfg, params, meta) of one role at one step; raises whatever Orbax raises."""
    _, meta = read_meta(workdir, step)
    models = meta.get("models", {})
    if role not in models or models[role]["kind"] != "lm":
        raise CheckpointError(
            f"checkpoint step {step} holds models {sorted(models)}; no {role!r} language model "
            "(point --workdir at an sft, dpo or ppo workdir)"
        )
    cfg = ModelConfig(**models[role]["config"])
    return step, cfg, load_params(workdir, role, "lm", cfg, mesh, step, meta), meta


def restore_newest_good(
    workdir: str, mesh, role: str = "policy"
) -> tuple[int, ModelConfig, Any, dict]:
    """(step, cfg, params, meta) of `role` at the newest step that restores.

    Unreadable steps are reported on stderr and skipped (left in place: `newest_good` without
    set_aside). Raises CheckpointError if the workdir has no checkpoint, none restores, or the
    newest holds no `role` model.
    """
    manager = _manager(workdir)
    restore_step = functools.partial(_restore_step, workdir, role=role, mesh=mesh)
    out = newest_good(manager, workdir, restore_step, set_aside=False)
    if out is None:
        raise CheckpointError(f"no checkpoint steps under {checkpoint_dir(workdir)}")
    return out


def recorded_data(workdir: str, meta: dict) -> dict:
    """The run's resolved `data` section: the checkpoint meta's record, else run_config.json."""
    # `or {}`: a `rlft reproduce` unit passes its data as arrays and records `data: null`
    if "resolved" in meta:
        return meta["resolved"].get("data") or {}
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return {}  # a run from before configs were recorded: the synthetic task's defaults
    with open(path) as f:
        return json.load(f).get("resolved", {}).get("data") or {}


def text_tokenizer(path: str, vocab_size: int):
    """The TextTokenizer (encode, decode, PAD/EOS ids) of an HF tokenizer.json or its dir."""
    from rlft.data.tldr.format import TextTokenizer  # noqa: PLC0415 (text runs only)

    return TextTokenizer.from_hf(load_tokenizer(path, vocab_size=vocab_size))


def load_policy(workdir: str, tokenizer: str | None = None, role: str = "policy") -> Policy:
    """The policy of `workdir` (module docstring). Raises CheckpointError (no good checkpoint)
    or InputError (a tokenizer that does not load or fit the model)."""
    mesh = one_device_mesh()
    step, cfg, params, meta = restore_newest_good(workdir, mesh, role)
    data = recorded_data(workdir, meta)
    path = tokenizer or data.get("tokenizer")  # tldr and files sources record theirs
    tok, eos_id, pad_id = None, EOS, PAD
    if path:
        try:
            tok = text_tokenizer(path, cfg.vocab_size)
        except (OSError, ValueError) as e:
            raise InputError(f"tokenizer {path}: {' '.join(str(e).split())}") from e
        eos_id, pad_id = tok.eos_id, tok.pad_id
    return Policy(workdir, step, cfg, params, eos_id, pad_id, tok, mesh, data)


# Prompts ---------------------------------------------------------------------------------


def prompt_limit(policy: "Policy") -> int | None:
    """The prompt length P the run trained with (a files or TL;DR source records it), or None."""
    return policy.data.get("max_prompt_len") or policy.data.get("max_query_len") or None


def _cut_text(text: str, tok, max_len: int | None, where: str) -> list[int]:
    """`text` encoded; longer than max_len tokens, cut as the files source cuts a prompt
    (rlft.data.tldr.format.truncated_text: at its last newline, then space, then character)."""
    ids = tok.encode(text)
    if max_len is not None and len(ids) > max_len:
        from rlft.data.tldr.format import truncated_text  # noqa: PLC0415 (text runs only)

        ids = truncated_text(text, lambda cut: cut, tok, max_len)
        if not ids:
            raise InputError(f"{where}: field 'prompt' cannot be cut to {max_len} tokens")
    return ids


def _prompt_row(obj: dict, where: str, tok, vocab_size: int, max_len: int | None) -> list[int]:
    if ("prompt" in obj) == ("prompt_ids" in obj):
        raise InputError(f"{where}: expected exactly one of the fields 'prompt', 'prompt_ids'")
    if "id" in obj and not isinstance(obj["id"], str):
        raise InputError(f"{where}: field 'id' must be a string; got {obj['id']!r:.60}")
    if "prompt" in obj:
        if not isinstance(obj["prompt"], str) or not obj["prompt"]:
            raise InputError(f"{where}: field 'prompt' must be a non-empty string")
        if tok is None:
            raise InputError(
                f"{where}: field 'prompt' is text but no tokenizer is known (the workdir records "
                "none); pass --tokenizer=DIR or give 'prompt_ids'"
            )
        ids = _cut_text(obj["prompt"], tok, max_len, where)
        if not ids:
            raise InputError(f"{where}: field 'prompt' encodes to no tokens")
        return ids
    ids = obj["prompt_ids"]
    ok = isinstance(ids, list) and ids and all(type(t) is int for t in ids)
    if not ok:
        raise InputError(f"{where}: field 'prompt_ids' must be a non-empty list of integers")
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise InputError(
            f"{where}: field 'prompt_ids' has token {bad[0]} outside the model's vocabulary "
            f"[0, {vocab_size})"
        )
    return ids


def read_prompts(
    path: str, tok, vocab_size: int, max_len: int | None = None
) -> tuple[list[str], list[list[int]]]:
    """(ids, token lists) of a prompts JSONL (module docstring); text prompts longer than
    `max_len` tokens (the run's prompt length, `prompt_limit`) are cut as training cut them.
    Raises InputError naming the file, row (1-based line) and field of the first bad line, or
    an empty/missing file."""
    if not os.path.isfile(path):
        raise InputError(f"--prompts={path}: no such file")
    ids, prompts = [], []
    for line_no, obj in jsonl_rows(path, PROMPT_EXAMPLE, InputError):
        prompts.append(_prompt_row(obj, f"{path}:{line_no}", tok, vocab_size, max_len))
        ids.append(obj.get("id", str(len(ids))))
    if not prompts:
        raise InputError(f"{path}: no prompts (one JSON object a line)")
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: ids are not unique")
    return ids, prompts


# Sampling --------------------------------------------------------------------------------


def sample_policy(
    policy: Policy,
    prompts: list[list[int]],
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 16,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """K samples per prompt, prompt-major (row b*K + k), N = len(prompts) * K, P = longest
    prompt, L = max_new_tokens:

        tokens_NxT, mask_NxT, loss_mask_NxT  the sequence layout (T = P + L) that the scorers read
        logp_sum_N     sum of the response's token log-probs (nats) under softmax(logits / T)
                       over the full vocabulary (also with top_p < 1; T = 0 reports T = 1)
        length_N       response tokens, EOS included;   finished_N  the response has its EOS

    Raises InputError if a prompt plus L exceeds the model's max_len, or for bad settings.
    """
    p = max(len(x) for x in prompts)
    if p + max_new_tokens > policy.cfg.max_len:
        raise InputError(
            f"the longest prompt ({p} tokens) plus --max_new_tokens={max_new_tokens} exceeds "
            f"the model's max_len {policy.cfg.max_len}"
        )
    tokens_BxP, mask_BxP = pack_prompts(prompts, p, policy.pad_id)
    key, size, parts = jax.random.PRNGKey(seed), min(SAMPLE_BATCH, len(prompts)), []
    for i, start in enumerate(range(0, len(prompts), size)):
        idx = np.minimum(np.arange(start, start + size), len(prompts) - 1)  # pad: repeat last
        out = generate(
            policy.cfg,
            policy.params,
            tokens_BxP[idx],
            mask_BxP[idx],
            jax.random.fold_in(key, i),
            max_new_tokens=max_new_tokens,
            num_samples=num_samples,
            temperature=temperature,
            top_p=top_p,
            eos_id=policy.eos_id,
            pad_id=policy.pad_id,
        )
        keep = min(size, len(prompts) - start) * num_samples
        parts.append({k: np.asarray(v)[:keep] for k, v in jax.device_get(out)._asdict().items()})
    cat = {k: np.concatenate([x[k] for x in parts]) for k in parts[0]}
    return {
        "tokens": cat["tokens"],
        "mask": cat["mask"],
        "loss_mask": cat["loss_mask"],
        "logp_sum": cat["logp"].sum(axis=-1, dtype=np.float64),
        "length": cat["lengths"],
        "finished": cat["finished"],
    }


def responses(samples: dict) -> list[list[int]]:
    """Each row's response tokens (loss_mask: up to and including its EOS)."""
    return [t[m].tolist() for t, m in zip(samples["tokens"], samples["loss_mask"], strict=True)]


def decode(tok, ids: list[int], eos_id: int) -> str | None:
    """Text of a response without its EOS; None without a tokenizer."""
    if tok is None:
        return None
    return tok.decode(ids[:-1] if ids and ids[-1] == eos_id else ids)


def sample_rows(policy: Policy, ids: list[str], prompts: list[list[int]], samples: dict) -> list:
    """The output rows of `rlft sample` (docs/eval.md): one dict per sample, prompt-major."""
    k = len(samples["length"]) // len(prompts)
    rows = []
    for n, resp in enumerate(responses(samples)):
        b = n // k
        row = {"id": ids[b], "sample": n % k, "prompt_ids": prompts[b], "response_ids": resp}
        if policy.tokenizer is not None:
            row["prompt"] = policy.tokenizer.decode(prompts[b])
            row["response"] = decode(policy.tokenizer, resp, policy.eos_id)
        row["logp_sum"] = float(samples["logp_sum"][n])
        row["length"] = int(samples["length"][n])
        row["finished"] = bool(samples["finished"][n])
        rows.append(row)
    return rows


def write_jsonl(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
